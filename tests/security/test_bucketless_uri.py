"""Issue 24, L5: ``fsm-cluster status|timeline|dump|stop s3://`` (no bucket) ended in a traceback
(``ValueError: not enough values to unpack``): now one line naming the URI.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fsm_cluster.errors import StorageError
from fsm_cluster.wire.stores import split_uri


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OCI__")}
    return subprocess.run([sys.executable, "-m", "fsm_cluster", *args], capture_output=True, text=True,
                          env={**environ, **env}, timeout=120)


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "oci://", "gs://", "file://"])
def test_a_uri_without_a_bucket_is_one_clear_error(uri):
    with pytest.raises(StorageError, match=f"work dir '{uri}': no (bucket|path) after"):
        split_uri(uri)


@pytest.mark.parametrize("command", ["status", "timeline", "dump", "stop"])
def test_commands_on_a_bucketless_uri_say_so_in_one_line(command):
    r = cli(command, "s3://")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "work dir 's3://': no bucket after 's3://' (give s3://<bucket>/<path>)" in r.stderr


def test_uris_that_name_a_place_are_taken_as_before(tmp_path):
    assert split_uri("s3://bucket/prefix/") == ("s3", "s3://bucket/prefix")
    assert split_uri("oci://bucket@ns/p") == ("oci", "oci://bucket@ns/p")
    assert split_uri("memory://wd") == ("memory", "memory://wd")
    assert split_uri(f"file://{tmp_path}") == ("file", f"file://{tmp_path}")
    assert split_uri(str(tmp_path)) == ("file", str(tmp_path))
