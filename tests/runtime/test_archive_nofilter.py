"""Tar extraction on a Python without tarfile's ``data`` filter (before 3.11.4 / 3.10.12, e.g.
Debian's 3.11.2 that a fresh machine's python3 is): the same rules by hand."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from fsm_cluster.runtime.archive import UnsafeArchive, safe_extract


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data, mode, uid in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.uname = len(data), mode, uid, uid, "nobody"
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("has_filter", [True, False])
def test_owners_and_special_bits_never_come_from_the_archive(tmp_path, monkeypatch, has_filter):
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter (before 3.11.4)")
    archive = tmp_path / "code.tar.gz"
    _tar(archive, [("run.sh", b"#!/bin/sh\n", 0o6777, 4321), ("pkg/mod.py", b"x = 1\n", 0o666, 4321)])
    assert sorted(safe_extract(str(archive), str(tmp_path / "out"))) == ["pkg/mod.py", "run.sh"]
    for name in ("run.sh", "pkg/mod.py"):
        st = os.stat(tmp_path / "out" / name)
        assert st.st_uid == os.getuid()
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    assert (tmp_path / "out" / "run.sh").read_bytes() == b"#!/bin/sh\n"


def test_an_escaping_entry_is_refused_without_the_filter(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "evil.tar.gz"
    _tar(archive, [("../escape.txt", b"x", 0o644, 0)])
    with pytest.raises(UnsafeArchive):
        safe_extract(str(archive), str(tmp_path / "out"))
    assert not (tmp_path / "escape.txt").exists()
