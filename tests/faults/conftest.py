"""Fixtures of the fault matrix: storage backends (a local dir, or a real S3-protocol server on
loopback), clusters that are always cleaned up, and the matrix of measured exit latencies.

The S3 server is moto's server mode run as a real process (``tests/faults/s3server.py`` →
``moto.server.main``), so a test can ``kill -9`` it and start it again. Nodes are processes too:
they reach it through the standard AWS variables (``AWS_ENDPOINT_URL`` and dummy credentials),
which botocore — hence s3fs — reads; no option of ours is needed for that.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .cluster import Cluster

HERE = Path(__file__).parent
MATRIX: list[dict] = []
CREDS = {"AWS_ACCESS_KEY_ID": "fault-tests", "AWS_SECRET_ACCESS_KEY": "fault-tests-secret",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server as a real process on 127.0.0.1 that can be killed and restarted."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.dir = workdir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, snapshot: dict | None = None, guard: float = 60.0) -> None:
        args = [sys.executable, str(HERE / "s3server.py"), str(self.port)]
        if snapshot is not None:
            path = self.dir / f"s3-snapshot-{self.starts}.json"
            path.write_text(json.dumps(snapshot))
            args.append(str(path))
        self.starts += 1
        log = open(self.dir / f"s3server-{self.starts}.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_FAULT")}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + guard
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"S3 server exited: {(self.dir / f's3server-{self.starts}.log').read_text()}")
            try:
                self.client().list_buckets()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise RuntimeError(f"S3 server not up after {guard} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def snapshot(self) -> dict:
        c = self.client()
        out = {}
        for b in c.list_buckets()["Buckets"]:
            objs = {}
            for page in c.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
                for o in page.get("Contents", []):
                    body = c.get_object(Bucket=b["Name"], Key=o["Key"])["Body"].read()
                    objs[o["Key"]] = base64.b64encode(body).decode()
            out[b["Name"]] = objs
        return out

    def env(self) -> dict[str, str]:
        return {**CREDS, "AWS_ENDPOINT_URL": self.endpoint}

    def storage_options(self) -> dict:
        return {"key": CREDS["AWS_ACCESS_KEY_ID"], "secret": CREDS["AWS_SECRET_ACCESS_KEY"],
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def new_bucket(self) -> str:
        name = f"fault-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def private_s3(tmp_path):
    """A server of this test's own (it may be killed)."""
    server = S3Server(tmp_path)
    server.start()
    yield server
    server.kill()


def make_storage(backend: str, tmp_path: Path, server: S3Server | None) -> dict:
    if backend == "file":
        return {"work_dir": str(tmp_path / "wd"), "env": {}, "storage_options": None}
    bucket = server.new_bucket()
    return {"work_dir": f"s3://{bucket}/wd", "env": server.env(), "storage_options": server.storage_options()}


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request):
    return request.param


@pytest.fixture
def clusters(request, tmp_path):
    """``clusters(backend, server=None, **kw)`` → a started-later Cluster, closed after the test."""
    made: list[Cluster] = []

    def make(backend: str = "file", server: S3Server | None = None, **kw) -> Cluster:
        if backend == "s3" and server is None:
            server = request.getfixturevalue("s3_server")
        storage = make_storage(backend, tmp_path, server)
        env = {**storage["env"], **kw.pop("env", {})}
        c = Cluster(tmp_path / f"c{len(made)}", storage["work_dir"], env=env,
                    storage_options=storage["storage_options"], **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def record():
    """Add a row to the fault matrix (printed at the end of the session)."""
    return MATRIX.append


def pytest_terminal_summary(terminalreporter):
    if not MATRIX:
        return
    out = os.environ.get("FSM_FAULT_MATRIX")
    if out:
        Path(out).write_text(json.dumps(MATRIX, indent=1))
    tr = terminalreporter
    tr.section("fault matrix: exit latency after the fault (s)")
    tr.write_line(f"{'scenario':34} {'backend':7} {'profile':10} {'max':>6} {'bound':>5}  per node / stop marker")
    for r in MATRIX:
        per = " ".join(f"{k.split('_')[-1]}={v}" for k, v in r["latency"].items())
        tr.write_line(f"{r['scenario']:34} {r['backend']:7} {r['profile']:10} {r['max_latency'] or '-':>6} "
                      f"{r['bound']:>5}  {per} | {r['marker']}")
