"""git code fetch against real repositories made by the tests (local path, file:// and ssh://
through a local ssh stand-in), with the SSH key read from a vault secret on a loopback server."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
import textwrap

import pytest

from fsm_cluster.errors import NodeFailure
from fsm_cluster.runtime.code import fetch_code, redact

from .conftest import git


def _read(path) -> str:
    with open(path) as f:
        return f.read()


def test_clone_default_branch_from_local_path(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare, OCI__CODE_DIR=code)
    assert fetch_code(s) == str(code)
    assert _read(code / "version.txt") == "v2\n"
    assert git("rev-parse", "HEAD", cwd=code) == git_repo.main


def test_clone_at_branch_over_file_uri(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=f"file://{git_repo.bare}",
                      OCI__RUNTIME_GIT_BRANCH="feature", OCI__CODE_DIR=code)
    fetch_code(s)
    assert _read(code / "version.txt") == "feature\n"
    assert git("rev-parse", "HEAD", cwd=code) == git_repo.feature


def test_clone_at_commit(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=f"file://{git_repo.bare}",
                      OCI__RUNTIME_GIT_COMMIT=git_repo.first, OCI__CODE_DIR=code)
    fetch_code(s)
    assert _read(code / "version.txt") == "v1\n"
    assert git("rev-parse", "HEAD", cwd=code) == git_repo.first


def test_clone_at_branch_and_commit(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare,
                      OCI__RUNTIME_GIT_BRANCH="feature", OCI__RUNTIME_GIT_COMMIT=git_repo.main,
                      OCI__CODE_DIR=code)
    fetch_code(s)
    assert git("rev-parse", "HEAD", cwd=code) == git_repo.main


def test_into_existing_empty_code_dir(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    fetch_code(make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare, OCI__CODE_DIR=code))
    assert (code / "pkg" / "__init__.py").is_file()


def test_unknown_branch_is_a_clear_failure_and_leaves_nothing(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare,
                      OCI__RUNTIME_GIT_BRANCH="nope", OCI__CODE_DIR=code)
    with pytest.raises(NodeFailure) as e:
        fetch_code(s)
    assert "branch 'nope'" in e.value.reason and "git clone" in e.value.reason
    assert not code.exists()


def test_unknown_commit_is_a_clear_failure(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare,
                      OCI__RUNTIME_GIT_COMMIT="0" * 40, OCI__CODE_DIR=code)
    with pytest.raises(NodeFailure, match="commit '0000000000000000000000000000000000000000' not found"):
        fetch_code(s)
    assert not code.exists()


def test_non_empty_code_dir_is_refused(make_settings, git_repo, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "keep.txt").write_text("mine")
    with pytest.raises(NodeFailure, match="not empty"):
        fetch_code(make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=git_repo.bare,
                                 OCI__CODE_DIR=code))
    assert (code / "keep.txt").read_text() == "mine"


def test_missing_uri_and_no_runtime(make_settings, tmp_path):
    with pytest.raises(NodeFailure, match="OCI__RUNTIME_URI is required"):
        fetch_code(make_settings(OCI__RUNTIME_TYPE="git", OCI__CODE_DIR=tmp_path / "c"))
    # No runtime type: nothing fetched, the code dir is only returned.
    assert fetch_code(make_settings(OCI__CODE_DIR=tmp_path / "c")) == str(tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_credentials_in_uri_are_not_shown():
    assert redact("https://user:s3cr3t@git.example.com/r.git") == "https://***@git.example.com/r.git"
    assert redact("/local/path") == "/local/path"


# -- SSH key from a vault secret ---------------------------------------------------------------------
SSH_STANDIN = textwrap.dedent("""\
    #!{python}
    # Stands in for ssh: records what git handed it, then runs the remote command locally.
    import hashlib, json, os, stat, sys
    args = sys.argv[1:]
    key = args[args.index("-i") + 1]
    st = os.stat(key)
    with open(key, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open({log!r}, "a") as out:
        out.write(json.dumps({{"key": key, "mode": stat.S_IMODE(st.st_mode), "sha256": digest,
                              "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode),
                              "args": args}}) + "\\n")
    os.execvp("sh", ["sh", "-c", args[-1]])
""")


@pytest.fixture
def ssh_standin(tmp_path, monkeypatch):
    log = tmp_path / "ssh_calls.jsonl"
    script = tmp_path / "ssh-standin"
    script.write_text(SSH_STANDIN.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    return log


def _ssh_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


def test_ssh_key_from_vault_secret(make_settings, git_repo, tmp_path, oci_server, oci_auth,
                                   ssh_standin, caplog):
    import hashlib

    key = _ssh_private_key().rstrip("\n")  # without the final newline: it must be added back
    secret_id = "ocid1.vaultsecret.oc1..gitkey"
    oci_server.routes[f"/20190301/secretbundles/{secret_id}"] = lambda path: (200, {
        "secretId": secret_id, "versionNumber": 1, "stages": ["CURRENT"],
        "secretBundleContent": {"contentType": "BASE64",
                                "content": base64.b64encode(key.encode()).decode()}})
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=f"ssh://git.example.invalid{git_repo.bare}",
                      OCI__RUNTIME_GIT_BRANCH="feature", OCI__RUNTIME_GIT_SECRET_ID=secret_id,
                      OCI__CODE_DIR=code)
    caplog.set_level(logging.DEBUG)
    fetch_code(s, auth=oci_auth)

    assert _read(code / "version.txt") == "feature\n"
    calls = [json.loads(line) for line in ssh_standin.read_text().splitlines()]
    assert calls, "git never called the ssh program"
    for call in calls:
        assert call["mode"] == 0o600 and call["dir_mode"] == 0o700
        assert call["sha256"] == hashlib.sha256((key + "\n").encode()).hexdigest()
        assert "IdentitiesOnly=yes" in call["args"]
        assert not os.path.exists(call["key"]) and not os.path.exists(os.path.dirname(call["key"]))
    # The request was really signed with the api_key identity, and the key never reached the logs.
    assert oci_server.bad_signatures == 0
    assert [r["path"] for r in oci_server.requests] == [f"/20190301/secretbundles/{secret_id}"]
    body = key.splitlines()[1]
    assert body not in caplog.text
    assert not any(body in line for line in (code / ".git" / "config").read_text().splitlines())


def test_vault_secret_error_is_a_clear_failure(make_settings, git_repo, tmp_path, oci_server,
                                               oci_auth, ssh_standin):
    code = tmp_path / "code"
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=f"ssh://git.example.invalid{git_repo.bare}",
                      OCI__RUNTIME_GIT_SECRET_ID="ocid1.vaultsecret.oc1..missing", OCI__CODE_DIR=code)
    with pytest.raises(NodeFailure) as e:
        fetch_code(s, auth=oci_auth)
    assert "ocid1.vaultsecret.oc1..missing" in e.value.reason and "404" in e.value.reason
    assert not ssh_standin.exists()  # no clone attempted
    assert not code.exists()


def test_vault_secret_rejected_signature(make_settings, git_repo, tmp_path, oci_server, oci_auth,
                                         ssh_standin):
    """A request signed by another key is refused by the server: proves signatures are checked."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = tmp_path / "other.pem"
    other.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    auth = {**oci_auth, "config": {**oci_auth["config"], "key_file": str(other)}}
    s = make_settings(OCI__RUNTIME_TYPE="git", OCI__RUNTIME_URI=f"ssh://h{git_repo.bare}",
                      OCI__RUNTIME_GIT_SECRET_ID="ocid1.vaultsecret.oc1..x", OCI__CODE_DIR=tmp_path / "c")
    with pytest.raises(NodeFailure, match="401 NotAuthenticated"):
        fetch_code(s, auth=auth)
    assert oci_server.bad_signatures == 1
    assert stat.S_ISREG(os.stat(other).st_mode)
