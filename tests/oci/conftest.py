"""A loopback fake of the OCI Data Science and Virtual Network APIs, driven by the real ``oci`` SDK.

Every request must carry a valid api_key signature (verified with the test identity's public key)
and, with a body, a matching ``x-content-sha256``; anything else is answered 401. Requests are
recorded (method, path, headers, parsed body) for the tests to assert on.

No ``__init__.py`` here on purpose: as a package this folder would be importable as ``oci``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as pytest does for packages
from runtime.conftest import (  # noqa: E402,F401  (shared fixture and server helpers)
    _verify_signature, loopback_server, oci_identity, send_json)

DS = "/20190101"
VCN = "/20160918"


@dataclass
class FakeOci:
    """State of the fake services; tests tune ``fail_run`` / ``job_state`` / ``run_states``."""

    url: str = ""
    requests: list[dict] = field(default_factory=list)
    bad_requests: int = 0
    jobs: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    subnets: dict[str, dict] = field(default_factory=dict)
    fail_run: int | None = None  # 1-based index of the create-run call answered 400
    fail_cancel: set[str] = field(default_factory=set)
    cancel_status: int = 404  # answer to a cancel in fail_cancel (409 is retried by the SDK)
    job_state: str = "ACTIVE"
    run_states: dict[str, list[str]] = field(default_factory=dict)  # run name → states, one per GET
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def calls(self, method: str | None = None, prefix: str = "") -> list[dict]:
        return [r for r in self.requests
                if (method is None or r["method"] == method) and r["path"].startswith(prefix)]

    def new_id(self, kind: str) -> str:
        return f"ocid1.{kind}.oc1.iad.fake{next(self._ids):04d}"

    # -- the API -----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body):
        path = path.split("?", 1)[0]
        if method == "POST" and path == f"{DS}/jobs":
            job = {**body, "id": self.new_id("datasciencejob"), "lifecycleState": self.job_state,
                   "createdBy": "ocid1.user.oc1..aaaatest", "timeCreated": "2024-01-01T00:00:00Z"}
            self.jobs[job["id"]] = job
            return 200, job
        if method == "POST" and path.startswith(f"{DS}/jobs/") and path.endswith("/artifact"):
            job = self.jobs[path.split("/")[3]]
            job["lifecycleState"] = "ACTIVE"
            return 200, {}
        if method == "GET" and path.startswith(f"{DS}/jobs/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            return (200, job) if job else _not_found(path)
        if method == "POST" and path == f"{DS}/jobRuns":
            if self.fail_run is not None and len(self.calls("POST", f"{DS}/jobRuns")) == self.fail_run:
                return 400, {"code": "LimitExceeded", "message": "The limit for job runs is exceeded"}
            run = {**body, "id": self.new_id("datasciencejobrun"), "lifecycleState": "ACCEPTED",
                   "timeAccepted": "2024-01-01T00:00:00Z", "createdBy": "ocid1.user.oc1..aaaatest"}
            self.runs[run["id"]] = run
            return 200, run
        if method == "POST" and path.startswith(f"{DS}/jobRuns/") and path.endswith("/actions/cancelJobRun"):
            run_id = path.split("/")[3]
            if run_id in self.fail_cancel:
                code = {404: "NotAuthorizedOrNotFound", 409: "IncorrectState"}[self.cancel_status]
                return self.cancel_status, {"code": code, "message": "the run cannot be cancelled"}
            if run_id not in self.runs:
                return _not_found(path)
            self.runs[run_id]["lifecycleState"] = "CANCELING"
            return 202, None
        if method == "GET" and path.startswith(f"{DS}/jobRuns/"):
            run = self.runs.get(path.rsplit("/", 1)[1])
            if run is None:
                return _not_found(path)
            states = self.run_states.get(run["displayName"])
            if states:
                run["lifecycleState"] = states.pop(0) if len(states) > 1 else states[0]
            return 200, run
        if method == "GET" and path.startswith(f"{VCN}/subnets/"):
            subnet = self.subnets.get(path.rsplit("/", 1)[1])
            return (200, subnet) if subnet else _not_found(path)
        return _not_found(path)


def _not_found(path):
    return 404, {"code": "NotAuthorizedOrNotFound", "message": f"{path} not found"}


def _body_hash_ok(handler, raw: bytes) -> bool:
    """A body covered by the signature must match its x-content-sha256 (binary uploads such as job
    artifacts are signed without body headers, as the SDK does for them)."""
    sent = handler.headers.get("x-content-sha256")
    if sent is None:
        return "x-content-sha256" not in handler.headers.get("authorization", "")
    return sent == base64.b64encode(hashlib.sha256(raw).digest()).decode()


@pytest.fixture
def fake_oci(oci_identity):
    state = FakeOci()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _serve(self):
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw) if raw and self.headers.get_content_type() == "application/json" else raw
            except ValueError:
                body = raw
            signed = _verify_signature(self, oci_identity)
            if self.command in ("POST", "PUT") and not _body_hash_ok(self, raw):
                signed = False
            state.requests.append({"method": self.command, "path": self.path,
                                   "headers": dict(self.headers), "body": body, "signed": signed})
            if not signed:
                state.bad_requests += 1
                return self._send(401, {"code": "NotAuthenticated", "message": "bad signature"})
            self._send(*state.handle(self.command, self.path, body))

        do_GET = do_POST = do_PUT = _serve

        _send = send_json

    with loopback_server(Handler, state):
        yield state


@pytest.fixture
def oci_config_file(oci_identity, tmp_path) -> Path:
    """The identity's config file (written by the shared ``oci_identity`` fixture)."""
    path = tmp_path / "oci_config"
    assert path.is_file()
    return path
