"""Code fetch (node state ``configuring``): OCI__RUNTIME_TYPE ``git`` or ``remote`` into OCI__CODE_DIR.

- ``git``: ``git clone`` of OCI__RUNTIME_URI, then OCI__RUNTIME_GIT_BRANCH / OCI__RUNTIME_GIT_COMMIT.
  With OCI__RUNTIME_GIT_SECRET_ID the SSH private key is read from that OCI vault secret
  (base64 content), written 0600 in a private temporary directory, handed to git through
  GIT_SSH_COMMAND (an existing GIT_SSH_COMMAND is kept as the ssh program) and deleted after.
  The key is never logged; URIs are logged without their user-info (tokens).
- ``remote``: a folder, a single file, a ``.zip`` or a ``.tar(.gz)`` at any fsspec URI; archives
  are unpacked by ``archive.safe_extract`` (absolute paths, ``..`` and escaping links refused).
- ``""`` (and ``python`` / ``script``, whose code comes with the job artifact): nothing to fetch.

Every failure is a ``NodeFailure`` whose reason says what was fetched from where and why it failed.
"""

from __future__ import annotations

import base64
import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from typing import Mapping

from ..env import OCI__RUNTIME_GIT_SECRET_ID, OCI__RUNTIME_URI
from ..errors import NodeFailure

log = logging.getLogger(__name__)

GIT_TIMEOUT = float(os.environ.get("FSM_CLUSTER_GIT_TIMEOUT", "900"))
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


def redact(uri: str) -> str:
    """``https://user:token@host/r.git`` → ``https://***@host/r.git``."""
    return _USERINFO.sub("***@", uri)


def fetch_code(settings, auth: dict | None = None, *, storage_options: dict | None = None,
               fetchers: dict | None = None) -> str:
    """Fetch the user's code as the settings say; return the code dir (absolute). ``fetchers``
    (kind → callable(code_dir=…)) stand in for the built-in ones: a provider's ``_fetch_git`` /
    ``_fetch_remote``, which oracle-ads subclasses may override."""
    code_dir = os.path.abspath(os.path.expanduser(settings.code_dir or "/code"))
    kind = settings.runtime_type
    if kind in ("", "python", "script"):
        return code_dir
    if not settings.runtime_uri:
        raise NodeFailure(f"{OCI__RUNTIME_URI} is required when OCI__RUNTIME_TYPE={kind}")
    if fetchers and kind in fetchers:
        fetchers[kind](code_dir=code_dir)
    elif kind == "git":
        fetch_git(settings.runtime_uri, code_dir, branch=settings.runtime_git_branch,
                  commit=settings.runtime_git_commit, secret_id=settings.runtime_git_secret_id,
                  auth=auth)
    elif kind == "remote":
        from .oci_auth import storage_options as options_for

        fetch_remote(settings.runtime_uri, code_dir,
                     storage_options=options_for(settings.runtime_uri, auth, storage_options))
    else:  # pragma: no cover - Settings restricts the values
        raise NodeFailure(f"OCI__RUNTIME_TYPE={kind!r} is not supported (git or remote)")
    return code_dir


# -- git -------------------------------------------------------------------------------------------
def read_secret(secret_id: str, auth: dict | None = None) -> str:
    """The decoded text of an OCI vault secret (base64 content), through the oci SDK."""
    import oci

    from .oci_auth import describe_error, make_client

    try:
        client = make_client(oci.secrets.SecretsClient, auth)
        bundle = client.get_secret_bundle(secret_id).data
        content = bundle.secret_bundle_content
        if getattr(content, "content_type", "BASE64") != "BASE64":
            raise ValueError(f"unsupported secret content type {content.content_type!r}")
        return base64.b64decode(content.content, validate=True).decode("utf-8")
    except NodeFailure:
        raise
    except Exception as e:  # SDK, network, decoding: one reason, never the content
        raise NodeFailure(f"cannot read the git SSH key from vault secret {secret_id} "
                          f"({OCI__RUNTIME_GIT_SECRET_ID}): {describe_error(e)}") from None


class GitSSHKey:
    """Context manager: the secret's SSH key in a 0600 file, GIT_SSH_COMMAND for it; gone after."""

    def __init__(self, secret_id: str, auth: dict | None = None, environ: Mapping[str, str] | None = None):
        self.secret_id = secret_id
        self.auth = auth
        self.environ = dict(os.environ if environ is None else environ)
        self.tmpdir: str | None = None
        self.key_path: str | None = None

    def __enter__(self) -> dict:
        """Returns the extra environment for git (empty without a secret)."""
        if not self.secret_id:
            return {}
        key = read_secret(self.secret_id, self.auth)
        if not key.endswith("\n"):
            key += "\n"  # ssh rejects a key without the final newline as "invalid format"
        self.tmpdir = tempfile.mkdtemp(prefix="fsm-git-ssh-")  # 0700
        self.key_path = os.path.join(self.tmpdir, "id_git")
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key)
        del key
        ssh = self.environ.get("GIT_SSH_COMMAND") or "ssh"
        log.info("git: using the SSH key from vault secret %s", self.secret_id)
        return {"GIT_SSH_COMMAND": f"{ssh} -i {shlex.quote(self.key_path)} -o IdentitiesOnly=yes "
                                   "-o StrictHostKeyChecking=accept-new -o BatchMode=yes"}

    def __exit__(self, *exc) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = self.key_path = None


def _git(args: list[str], env: dict, cwd: str | None = None) -> str:
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise NodeFailure("git is not installed in this image (needed for OCI__RUNTIME_TYPE=git)") from None
    except subprocess.TimeoutExpired:
        raise NodeFailure(f"git {args[0]} took more than {GIT_TIMEOUT:g} s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        detail = redact(" / ".join(lines[-3:])) or f"exit code {p.returncode}"
        raise _GitError(detail)
    return p.stdout.strip()


class _GitError(Exception):
    pass


def fetch_git(uri: str, code_dir: str, *, branch: str = "", commit: str = "", secret_id: str = "",
              auth: dict | None = None) -> str:
    """Clone ``uri`` into ``code_dir`` (absent or empty) at ``branch`` / ``commit``; return HEAD."""
    shown = redact(uri)
    if os.path.isdir(code_dir) and os.listdir(code_dir):
        raise NodeFailure(f"cannot clone {shown} into {code_dir}: the directory is not empty")
    created = not os.path.exists(code_dir)
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password nobody will type
    try:
        with GitSSHKey(secret_id, auth, env) as extra:
            env.update(extra)
            args = ["clone", "--quiet"]
            if branch:
                args += ["--branch", branch]
            try:
                _git([*args, "--", uri, code_dir], env)
            except _GitError as e:
                where = f" branch {branch!r}" if branch else ""
                raise NodeFailure(f"git clone of {shown}{where} failed: {e}") from None
            if commit:
                try:
                    _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", commit], env, code_dir)
                except _GitError:
                    try:  # a commit no branch points at: ask the server for it
                        _git(["fetch", "--quiet", "origin", commit], env, code_dir)
                        _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"],
                             env, code_dir)
                    except _GitError as e:
                        raise NodeFailure(f"commit {commit!r} not found in {shown}: {e}") from None
            head = _git(["rev-parse", "HEAD"], env, code_dir)
    except NodeFailure:
        if created:
            shutil.rmtree(code_dir, ignore_errors=True)
        elif os.path.isdir(code_dir):
            _empty_dir(code_dir)
        raise
    log.info("git: fetched %s%s at %s into %s", shown, f" ({branch})" if branch else "", head, code_dir)
    return head


def _empty_dir(path: str) -> None:
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.unlink(p)


# -- remote ----------------------------------------------------------------------------------------
def fetch_remote(uri: str, code_dir: str, storage_options: dict | None = None) -> list[str]:
    """Copy a folder / file / archive at ``uri`` into ``code_dir``; return the names written."""
    import fsspec

    from .archive import UnsafeArchive, archive_kind  # (tarfile, zipfile: only a node that fetches code)

    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise NodeFailure(f"cannot open {redact(uri)} ({e})") from None
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            names = _copy_folder(fs, path, code_dir)
        elif archive_kind(path):
            names = _fetch_archive(fs, path, code_dir)
        else:
            os.makedirs(code_dir, exist_ok=True)
            name = posixpath.basename(path.rstrip("/"))
            fs.get_file(path, os.path.join(code_dir, name))
            names = [name]
    except FileNotFoundError:
        raise NodeFailure(f"code not found at {redact(uri)} (OCI__RUNTIME_URI)") from None
    except UnsafeArchive as e:
        raise NodeFailure(f"refusing to unpack {redact(uri)}: {e}; nothing was written") from None
    except NodeFailure:
        raise
    except Exception as e:
        raise NodeFailure(f"cannot fetch code from {redact(uri)}: {type(e).__name__}: {e}") from None
    log.info("remote: fetched %d entries from %s into %s", len(names), redact(uri), code_dir)
    return names


def _copy_folder(fs, path: str, code_dir: str) -> list[str]:
    from .archive import Entry, check_entries

    base = path.rstrip("/")
    rpaths = [p for p in fs.find(base, withdirs=False) if not p.rstrip("/").endswith("/")]
    names = [posixpath.relpath(p, base) for p in rpaths]
    check_entries([Entry(n, "file") for n in names])  # object keys may hold '..' or a leading '/'
    os.makedirs(code_dir, exist_ok=True)
    lpaths = [os.path.join(code_dir, *n.split("/")) for n in names]
    for d in sorted({os.path.dirname(p) for p in lpaths}):
        os.makedirs(d, exist_ok=True)
    if rpaths:
        fs.get(rpaths, lpaths)
    return names


def _fetch_archive(fs, path: str, code_dir: str) -> list[str]:
    from .archive import UnsafeArchive, safe_extract

    name = posixpath.basename(path)
    with tempfile.TemporaryDirectory(prefix="fsm-code-") as tmp:
        local = os.path.join(tmp, name)
        fs.get_file(path, local)
        try:
            return safe_extract(local, code_dir)
        except UnsafeArchive:
            raise
        except ValueError as e:
            raise NodeFailure(f"cannot unpack {name}: {e}") from None


# -- python path -----------------------------------------------------------------------------------
def python_path_entries(settings) -> list[str]:
    """OCI__RUNTIME_PYTHON_PATH entries (``:`` / os.pathsep separated) relative to the code dir."""
    raw = settings.runtime_python_path or ""
    code_dir = os.path.abspath(os.path.expanduser(settings.code_dir or "/code"))
    seps = {":", os.pathsep}
    for s in seps:
        raw = raw.replace(s, "\0")
    out: list[str] = []
    for entry in raw.split("\0"):
        entry = entry.strip()
        if not entry:
            continue
        full = os.path.normpath(os.path.join(code_dir, os.path.expanduser(entry)))
        if full not in out:
            out.append(full)
    return out


def entry_environment(settings, base_env: Mapping[str, str]) -> dict:
    """``base_env`` with the python path entries put in front of PYTHONPATH (a new dict)."""
    env = dict(base_env)
    entries = python_path_entries(settings)
    if entries:
        existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(entries + [p for p in existing if p not in entries])
    return env


def fetch_for(settings, auth: dict, *, git, remote) -> None:
    """A node's code (OCI__RUNTIME_TYPE git / remote, through ``git`` / ``remote``, the provider's
    oracle-ads hooks) and its certificates (OCI__CERTIFICATE_*)."""
    if settings.runtime_type in ("git", "remote"):
        fetch_code(settings, auth, fetchers={"git": git, "remote": remote})
    if settings.certificate_ocid and settings.certificate_authority_ocid:
        from .certs import download_certificates

        download_certificates(settings, auth)


def fetch_git_for(settings, code_dir: str, auth: dict) -> None:
    """Clone OCI__RUNTIME_URI (branch, commit, SSH key secret) into ``code_dir``."""
    fetch_git(settings.runtime_uri, code_dir, branch=settings.runtime_git_branch, commit=settings.runtime_git_commit,
              secret_id=settings.runtime_git_secret_id, auth=auth)


def fetch_remote_for(settings, code_dir: str, auth: dict) -> None:
    """Copy OCI__RUNTIME_URI (a folder, file or archive) into ``code_dir``."""
    from .oci_auth import storage_options

    fetch_remote(settings.runtime_uri, code_dir, storage_options=storage_options(settings.runtime_uri, auth))
