"""Fixtures for the runtime tests: settings, a loopback S3 (moto) server, a loopback OCI API server
that verifies real request signatures, an OCI api_key identity made in tmp, and git repositories."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from fsm_cluster.env import Settings


# -- settings --------------------------------------------------------------------------------------
@pytest.fixture
def make_settings(tmp_path):
    """``make_settings(OCI__RUNTIME_TYPE="git", ...)`` → Settings from exactly that environment."""

    def make(**env) -> Settings:
        base = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path / "work"),
                "JOB_OCID": "ocid1.datasciencejob.test", "JOB_RUN_OCID": "ocid1.datasciencejobrun.r1"}
        base.update({k: str(v) for k, v in env.items()})
        return Settings.from_env(base)

    return make


# -- S3 on loopback --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket on the loopback S3 server; the environment points s3fs / botocore at it."""
    import s3fs

    for k, v in {"AWS_ENDPOINT_URL": s3_server, "AWS_ENDPOINT_URL_S3": s3_server,
                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    yield fs, bucket
    s3fs.S3FileSystem.clear_instance_cache()


# -- OCI identity and loopback API server ----------------------------------------------------------
@dataclass
class OciIdentity:
    config: dict
    public_key: object
    key_id: str


@pytest.fixture
def oci_identity(tmp_path) -> OciIdentity:
    """A real api_key identity: RSA key + config file in tmp, read back by oci.config.from_file."""
    import oci
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "oci_api_key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der).hexdigest()
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    tenancy, user = "ocid1.tenancy.oc1..aaaatest", "ocid1.user.oc1..aaaatest"
    cfg = tmp_path / "oci_config"
    cfg.write_text(f"[DEFAULT]\nuser={user}\nfingerprint={fingerprint}\ntenancy={tenancy}\n"
                   f"region=us-ashburn-1\nkey_file={key_file}\n")
    config = oci.config.from_file(str(cfg), "DEFAULT")
    return OciIdentity(config=config, public_key=key.public_key(),
                       key_id=f"{tenancy}/{user}/{fingerprint}")


@dataclass
class OciServer:
    url: str
    routes: dict[str, Callable[[str], tuple[int, dict]]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    bad_signatures: int = 0


_SIG = re.compile(r'(\w+)="([^"]*)"')


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict | None) -> None:
    """Answer like an OCI service: JSON body, opc-request-id, content-length."""
    data = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("opc-request-id", uuid.uuid4().hex)
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextlib.contextmanager
def loopback_server(handler_cls, state):
    """Serve ``handler_cls`` on 127.0.0.1 (a free port) in a thread; ``state.url`` is its address."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _verify_signature(handler: BaseHTTPRequestHandler, identity: OciIdentity) -> bool:
    """Check the request's draft-cavage RSA-SHA256 signature with the identity's public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    auth = handler.headers.get("authorization", "")
    if not auth.startswith("Signature "):
        return False
    params = dict(_SIG.findall(auth))
    if params.get("keyId") != identity.key_id or params.get("algorithm") != "rsa-sha256":
        return False
    lines = []
    for h in params.get("headers", "").split():
        if h == "(request-target)":
            lines.append(f"(request-target): {handler.command.lower()} {handler.path}")
        else:
            lines.append(f"{h}: {handler.headers.get(h, '')}")
    try:
        identity.public_key.verify(base64.b64decode(params["signature"]), "\n".join(lines).encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False


@pytest.fixture
def oci_server(oci_identity):
    """A loopback HTTP server for OCI API paths: ``routes[path_prefix] = fn(path) -> (status, body)``.

    Every request must carry a valid signature from ``oci_identity`` (else 401 NotAuthenticated).
    """
    state = OciServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            state.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
            if not _verify_signature(self, oci_identity):
                state.bad_signatures += 1
                return self._send(401, {"code": "NotAuthenticated", "message": "bad signature"})
            for prefix, fn in state.routes.items():
                if self.path.startswith(prefix):
                    return self._send(*fn(self.path))
            self._send(404, {"code": "NotAuthorizedOrNotFound", "message": f"no route {self.path}"})

        _send = send_json

    with loopback_server(Handler, state):
        yield state


@pytest.fixture
def oci_auth(oci_identity, oci_server) -> dict:
    """ADS-style auth dict for the loopback server (no retries: errors come back at once)."""
    import oci

    return {"config": oci_identity.config, "service_endpoint": oci_server.url,
            "retry_strategy": oci.retry.NoneRetryStrategy()}


# -- git -------------------------------------------------------------------------------------------
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args, cwd=None) -> str:
    import os

    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class GitRepo:
    bare: str
    first: str  # commit on main: version.txt == "v1"
    main: str  # tip of main: version.txt == "v2"
    feature: str  # tip of branch feature: version.txt == "feature"


@pytest.fixture
def git_repo(tmp_path) -> GitRepo:
    """A bare repository with two commits on main and one on branch ``feature``."""
    work, bare = tmp_path / "src", tmp_path / "origin.git"
    git("init", "-q", "-b", "main", str(work))
    (work / "pkg").mkdir()
    (work / "pkg" / "__init__.py").write_text("NAME = 'pkg'\n")
    (work / "version.txt").write_text("v1\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    (work / "version.txt").write_text("v2\n")
    git("commit", "-qam", "two", cwd=work)
    main = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "version.txt").write_text("feature\n")
    git("commit", "-qam", "three", cwd=work)
    feature = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "main", cwd=work)  # the bare repo's HEAD (default branch) is main
    git("clone", "-q", "--bare", str(work), str(bare))
    return GitRepo(bare=str(bare), first=first, main=main, feature=feature)
