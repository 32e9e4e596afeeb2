"""remote code fetch: folder, .zip and .tar.gz from memory:// and from a loopback S3 server; a set
of malicious archives all refused with nothing written anywhere."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import uuid
import zipfile

import fsspec
import pytest

from fsm_cluster.errors import NodeFailure
from fsm_cluster.runtime.archive import Entry, UnsafeArchive, check_entries, safe_extract
from fsm_cluster.runtime.code import entry_environment, fetch_code, python_path_entries

FILES = {
    "main.py": b"import helper\nprint(helper.VALUE)\n",
    "lib/helper.py": b"VALUE = 'from lib'\n",
    "data/deep/x.bin": bytes(range(256)) * 40,
}


def make_zip(extra=None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
        run = zipfile.ZipInfo("run.sh")
        run.create_system = 3
        run.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(run, "#!/bin/sh\necho ok\n")
        for fn in extra or []:
            fn(zf)
    return buf.getvalue()


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes = b"", *, kind=tarfile.REGTYPE,
             link: str = "", mode: int = 0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    ti.mode = mode
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tgz(members=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        if members is None:
            for name, data in FILES.items():
                _tar_add(tf, name, data)
            _tar_add(tf, "run.sh", b"#!/bin/sh\necho ok\n", mode=0o755)
            _tar_add(tf, "lib/alias.py", kind=tarfile.SYMTYPE, link="helper.py")  # inside: fine
            _tar_add(tf, "lib/copy.py", kind=tarfile.LNKTYPE, link="lib/helper.py")
        else:
            for m in members:
                _tar_add(tf, *m[:2], **m[2]) if len(m) == 3 else _tar_add(tf, *m)
    return buf.getvalue()


def assert_code(code):
    for name, data in FILES.items():
        assert (code / name).read_bytes() == data, name
    assert os.access(code / "run.sh", os.X_OK)


def tree(root) -> dict:
    """Every path below ``root`` with its kind/content: the 'nothing written' witness."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = (os.path.islink(p), os.path.isdir(p),
                                             None if os.path.isdir(p) or os.path.islink(p)
                                             else open(p, "rb").read())
    return out


# -- memory:// -----------------------------------------------------------------------------------
@pytest.fixture
def mem():
    fs = fsspec.filesystem("memory")
    root = f"/code-src-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_folder_from_memory(make_settings, mem, tmp_path):
    fs, root = mem
    for name, data in FILES.items():
        fs.pipe_file(f"{root}/app/{name}", data)
    fs.pipe_file(f"{root}/app/run.sh", b"#!/bin/sh\n")
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/app", OCI__CODE_DIR=code)
    assert fetch_code(s) == str(code)
    for name, data in FILES.items():
        assert (code / name).read_bytes() == data
    assert sorted(p.name for p in code.iterdir()) == ["data", "lib", "main.py", "run.sh"]


def test_zip_from_memory(make_settings, mem, tmp_path):
    fs, root = mem
    fs.pipe_file(f"{root}/code.zip", make_zip())
    code = tmp_path / "code"
    fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/code.zip",
                             OCI__CODE_DIR=code))
    assert_code(code)


def test_tgz_from_memory_with_inside_links(make_settings, mem, tmp_path):
    fs, root = mem
    fs.pipe_file(f"{root}/code.tar.gz", make_tgz())
    code = tmp_path / "code"
    fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/code.tar.gz",
                             OCI__CODE_DIR=code))
    assert_code(code)
    assert os.readlink(code / "lib" / "alias.py") == "helper.py"
    assert (code / "lib" / "copy.py").stat().st_ino == (code / "lib" / "helper.py").stat().st_ino


def test_single_file_from_memory(make_settings, mem, tmp_path):
    fs, root = mem
    fs.pipe_file(f"{root}/train.py", b"print('hi')\n")
    code = tmp_path / "code"
    fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/train.py",
                             OCI__CODE_DIR=code))
    assert (code / "train.py").read_bytes() == b"print('hi')\n"


def test_missing_and_corrupt_sources(make_settings, mem, tmp_path):
    fs, root = mem
    with pytest.raises(NodeFailure, match="code not found at memory://"):
        fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/none.zip",
                                 OCI__CODE_DIR=tmp_path / "c"))
    fs.pipe_file(f"{root}/bad.zip", b"this is not a zip")
    with pytest.raises(NodeFailure, match="not a readable zip archive"):
        fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/bad.zip",
                                 OCI__CODE_DIR=tmp_path / "c"))
    with pytest.raises(NodeFailure, match="cannot open"):
        fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI="nosuchproto://x/y.zip",
                                 OCI__CODE_DIR=tmp_path / "c"))


# -- S3 on loopback ------------------------------------------------------------------------------
@pytest.mark.s3
@pytest.mark.parametrize("kind", ["folder", "zip", "tgz"])
def test_from_s3(make_settings, s3, tmp_path, kind):
    fs, bucket = s3
    if kind == "folder":
        for name, data in FILES.items():
            fs.pipe_file(f"{bucket}/app/{name}", data)
        fs.pipe_file(f"{bucket}/app/run.sh", b"#!/bin/sh\n")
        uri = f"s3://{bucket}/app"
    elif kind == "zip":
        fs.pipe_file(f"{bucket}/code.zip", make_zip())
        uri = f"s3://{bucket}/code.zip"
    else:
        fs.pipe_file(f"{bucket}/code.tar.gz", make_tgz())
        uri = f"s3://{bucket}/code.tar.gz"
    code = tmp_path / "code"
    fetch_code(make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=uri, OCI__CODE_DIR=code))
    for name, data in FILES.items():
        assert (code / name).read_bytes() == data
    if kind != "folder":
        assert_code(code)


# -- malicious archives --------------------------------------------------------------------------
def _zip_add(zf, kind, name, content=""):
    info = zipfile.ZipInfo(name)
    if kind == "sym":
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, content or "x")


SYM, HARD, DIR, FIFO = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE
# name: (format, members, words the refusal must contain); "{outside}" is a real directory.
EVIL = {
    "tar-absolute": ("tar.gz", [("/{outside}/evil.txt", b"pwned")], "absolute path"),
    "tar-dotdot": ("tar.gz", [("ok.txt", b"ok"), ("../outside/evil.txt", b"pwned")], "contains '..'"),
    "tar-dotdot-middle": ("tar.gz", [("a/../../outside/evil.txt", b"pwned")], "contains '..'"),
    "tar-symlink-escape": ("tar.gz", [("link", b"", {"kind": SYM, "link": "../outside"}),
                                      ("link/evil.txt", b"pwned")], "link pointing outside"),
    "tar-symlink-absolute": ("tar.gz", [("link", b"", {"kind": SYM, "link": "/{outside}"}),
                                        ("link/evil.txt", b"pwned")], "link to an absolute path"),
    "tar-symlink-chain": ("tar.gz", [("a", b"", {"kind": SYM, "link": "."}),
                                     ("b", b"", {"kind": SYM, "link": "a/.."}),
                                     ("b/outside/evil.txt", b"pwned")], "link pointing outside"),
    "tar-write-through-symlink": ("tar.gz", [("d", b"", {"kind": DIR}),
                                             ("d/up", b"", {"kind": SYM, "link": ".."}),
                                             ("d/up/up2", b"", {"kind": SYM, "link": ".."}),
                                             ("d/up/up2/outside/evil.txt", b"pwned")],
                                  "link pointing outside"),
    "tar-hardlink-escape": ("tar.gz", [("hl", b"", {"kind": HARD, "link": "../outside/secret.txt"})],
                            "contains '..'"),
    "tar-hardlink-absolute": ("tar.gz", [("hl", b"", {"kind": HARD, "link": "/{outside}/secret.txt"})],
                              "absolute path"),
    "tar-hardlink-through-symlink": ("tar.gz", [("up", b"", {"kind": SYM, "link": ".."}),
                                                ("hl", b"", {"kind": HARD, "link": "up/outside/secret.txt"})],
                                     "link pointing outside"),
    "tar-fifo": ("tar.gz", [("pipe", b"", {"kind": FIFO})], "device or FIFO"),
    "zip-absolute": ("zip", [("plain", "/{outside}/evil.txt")], "absolute path"),
    "zip-dotdot": ("zip", [("plain", "ok.txt"), ("plain", "../outside/evil.txt")], "contains '..'"),
    "zip-symlink-escape": ("zip", [("sym", "link", "../outside"), ("plain", "link/evil.txt")],
                           "link pointing outside"),
    "zip-symlink-absolute": ("zip", [("sym", "link", "/{outside}")], "link to an absolute path"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_malicious_archive_refused(make_settings, mem, tmp_path, case):
    ext, members, why = EVIL[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not touch")
    fmt = {"outside": str(outside).lstrip("/")}

    def fill(m):
        name = m[0].format(**fmt)
        opts = dict(m[2]) if len(m) == 3 else {}
        if "link" in opts:
            opts["link"] = opts["link"].format(**fmt)
        return (name, m[1], opts)

    if ext == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for m in members:
                _zip_add(zf, *(part.format(**fmt) for part in m))
        data = buf.getvalue()
    else:
        data = make_tgz([fill(m) for m in members])
    fs, root = mem
    fs.pipe_file(f"{root}/evil.{ext}", data)
    before = tree(tmp_path)
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/evil.{ext}",
                      OCI__CODE_DIR=code)
    with pytest.raises(NodeFailure) as e:
        fetch_code(s)
    assert "refusing to unpack" in e.value.reason and why in e.value.reason, e.value.reason
    assert "nothing was written" in e.value.reason
    assert tree(tmp_path) == before  # not in the code dir, not next to it, not in /outside
    assert not code.exists()


def test_link_retargeted_by_a_later_link_is_refused():
    """``b -> a/x`` is inside while ``a`` is a plain name; ``a -> ..`` added later makes it escape."""
    with pytest.raises(UnsafeArchive, match="link"):
        check_entries([Entry("b", "symlink", "a/x"), Entry("a", "symlink", "..")])
    with pytest.raises(UnsafeArchive, match="loop"):
        check_entries([Entry("a", "symlink", "b"), Entry("b", "symlink", "a"), Entry("a/f", "file")])
    check_entries([Entry("d", "dir"), Entry("d/f", "file"), Entry("l", "symlink", "d"),
                   Entry("l/g", "file"), Entry("m", "symlink", "d/../d/f"), Entry("h", "hardlink", "l/f")])


def test_folder_keys_with_dotdot_are_refused(tmp_path):
    """Object-store keys are free text: a key with '..' must not land outside the code dir."""
    from fsm_cluster.runtime.code import _copy_folder

    class Keys:  # the listing an object store could return
        def find(self, base, withdirs=False):
            return [f"{base}/ok.txt", f"{base}/../../evil.txt"]

        def get(self, rpaths, lpaths):  # pragma: no cover - must not be reached
            raise AssertionError("downloaded despite the bad key")

    with pytest.raises(UnsafeArchive, match="contains '..'"):
        _copy_folder(Keys(), "bucket/app", str(tmp_path / "code"))
    assert not (tmp_path / "code").exists()


def test_safe_extract_unknown_kind(tmp_path):
    p = tmp_path / "x.rar"
    p.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .zip, .tar or .tar.gz"):
        safe_extract(str(p), str(tmp_path / "out"))


# -- python path ---------------------------------------------------------------------------------
def test_python_path_entries_and_entry_environment(make_settings, mem, tmp_path):
    fs, root = mem
    fs.pipe_file(f"{root}/code.zip", make_zip())
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="remote", OCI__RUNTIME_URI=f"memory://{root}/code.zip",
                      OCI__CODE_DIR=code, OCI__RUNTIME_PYTHON_PATH="lib::data/deep:/abs/dir:lib")
    fetch_code(s)
    assert python_path_entries(s) == [str(code / "lib"), str(code / "data" / "deep"), "/abs/dir"]
    env = entry_environment(s, {"PATH": os.environ["PATH"], "PYTHONPATH": "/already"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(code / "lib"), str(code / "data/deep"),
                                                 "/abs/dir", "/already"])
    # The entry script really imports from the python path entry.
    out = subprocess.run([sys.executable, str(code / "main.py")], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "from lib"
    assert entry_environment(make_settings(), {"A": "1"}) == {"A": "1"}
