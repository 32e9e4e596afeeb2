"""Which storage errors are retried. Classified from the exceptions' fields (status, error code),
never from their text: a URL in a message may contain "403" or "404" by chance (CI once failed a
node on an EndpointConnectionError whose URL held "...2734038aaf...")."""
from __future__ import annotations

import socket

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from fsm_cluster.errors import StorageError
from fsm_cluster.wire.stores import is_transient
from fsm_cluster.wire.workdir import WorkDir


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url="http://127.0.0.1:34763/b/wd/fault-2734038aaf/x_state.json"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1404/b/404/403"),
    ReadTimeoutError(endpoint_url="http://h/403"),
    _client_error("SlowDown", 503),
    _client_error("InternalError", 500),
    _client_error("ThrottlingException", 429),
    ConnectionRefusedError(111, "refused"),
    TimeoutError("timed out"),
], ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried_whatever_their_text_says(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    _client_error("AccessDenied", 403),
    _client_error("NoSuchBucket", 404),
    _client_error("InvalidAccessKeyId", 403),
    _client_error("SomethingNew", 400),
    PermissionError("denied"),
    FileNotFoundError("x"),
], ids=lambda e: f"{type(e).__name__}-{getattr(e, 'response', {}).get('Error', {}).get('Code', '')}")
def test_permanent_errors_are_not_retried(exc):
    assert not is_transient(exc)


def test_oci_service_errors_by_status():
    oci = pytest.importorskip("oci", reason="oci SDK not installed (the [oci] extra)")
    err = oci.exceptions.ServiceError(status=404, code="BucketNotFound", headers={}, message="gone 503")
    assert not is_transient(err)
    err = oci.exceptions.ServiceError(status=429, code="TooManyRequests", headers={}, message="/403/")
    assert is_transient(err)


def test_a_dead_s3_endpoint_whose_path_holds_403_is_retried_then_named(monkeypatch):
    pytest.importorskip("s3fs", reason="s3fs not installed (the [s3] extra)")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    wd = WorkDir("s3://bucket-403/wd", "c-2734038aaf", retry_budget=2,
                 storage_options={"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}})
    with pytest.raises(StorageError) as e:
        wd.write_bytes("MAIN_state.json", b"{}")
    assert "still failing after 2 s of retries" in str(e.value) and "MAIN_state.json" in str(e.value)
    assert wd.ops["pipe"] >= 2, "the write was retried"
