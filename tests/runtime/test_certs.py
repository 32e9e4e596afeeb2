"""Certificates for Dask TLS, downloaded with the real oci SDK from a loopback Certificates API that
checks every request's signature; the files are then used for a real TLS handshake."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading

import pytest

from fsm_cluster.errors import NodeFailure, SettingsError
from fsm_cluster.runtime.certs import certificate_locations, download_certificates
from integration.pki import make_pki

CA_ID = "ocid1.certificateauthority.oc1..ca"
CERT_ID = "ocid1.certificate.oc1..leaf"


VALIDITY = {"timeOfValidityNotBefore": "2026-01-01T00:00:00Z", "timeOfValidityNotAfter": "2027-01-01T00:00:00Z"}


@pytest.fixture
def cert_api(oci_server):
    ca_pem, leaf_pem, key_pem = make_pki()
    oci_server.routes[f"/20210224/certificateAuthorityBundles/{CA_ID}"] = lambda path: (200, {
        "certificateAuthorityId": CA_ID, "certificateAuthorityName": "ca", "serialNumber": "01",
        "certificatePem": ca_pem, "certChainPem": None, "versionNumber": 1, "stages": ["CURRENT"],
        "timeCreated": "2026-01-01T00:00:00Z", "validity": VALIDITY})

    def leaf(path):
        if "certificateBundleType=CERTIFICATE_CONTENT_WITH_PRIVATE_KEY" not in path:
            return 400, {"code": "InvalidParameter", "message": "public only asked"}
        return 200, {"certificateBundleType": "CERTIFICATE_CONTENT_WITH_PRIVATE_KEY",
                     "certificateId": CERT_ID, "certificateName": "leaf", "versionNumber": 1,
                     "serialNumber": "02", "certificatePem": leaf_pem, "certChainPem": ca_pem,
                     "privateKeyPem": key_pem, "timeCreated": "2026-01-01T00:00:00Z",
                     "validity": VALIDITY, "stages": ["CURRENT"]}

    oci_server.routes[f"/20210224/certificateBundles/{CERT_ID}"] = leaf
    return ca_pem, leaf_pem, key_pem


def _env(tmp_path, **extra):
    env = {"OCI__CERTIFICATE_AUTHORITY_OCID": CA_ID, "OCI__CERTIFICATE_OCID": CERT_ID,
           "OCI__CA_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "ca.pem"),
           "OCI__CERTIFICATE_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "cert.pem"),
           "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "key.pem")}
    env.update(extra)
    return env


def test_download_and_use_for_tls(tmp_path, oci_server, oci_auth, cert_api, caplog):
    ca_pem, leaf_pem, key_pem = cert_api
    paths = download_certificates(_env(tmp_path), oci_auth)
    assert paths == {"OCI__CA_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "ca.pem"),
                     "OCI__CERTIFICATE_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "cert.pem"),
                     "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": str(tmp_path / "tls" / "key.pem")}
    key_path = paths["OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION"]
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert open(key_path).read().strip() == key_pem.strip()
    assert open(paths["OCI__CERTIFICATE_DOWNLOAD_LOCATION"]).read().startswith(leaf_pem.strip())
    assert oci_server.bad_signatures == 0 and len(oci_server.requests) == 2
    assert key_pem.splitlines()[1] not in caplog.text
    assert sorted(os.listdir(tmp_path / "tls")) == ["ca.pem", "cert.pem", "key.pem"]  # no temp files

    # The three files make a working mutual-TLS pair, as Dask would use them.
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                            cafile=paths["OCI__CA_DOWNLOAD_LOCATION"])
    server_ctx.load_cert_chain(paths["OCI__CERTIFICATE_DOWNLOAD_LOCATION"], key_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=paths["OCI__CA_DOWNLOAD_LOCATION"])
    client_ctx.load_cert_chain(paths["OCI__CERTIFICATE_DOWNLOAD_LOCATION"], key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got = {}

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            got["peer"] = tls.getpeercert()["subject"]
            tls.sendall(b"hello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(5) == b"hello"
    t.join(5)
    listener.close()
    assert got["peer"] == ((("commonName", "localhost"),),)


def test_defaults_follow_the_code_dir(make_settings, tmp_path, monkeypatch, oci_server, oci_auth, cert_api):
    for k in ("OCI__CA_DOWNLOAD_LOCATION", "OCI__CERTIFICATE_DOWNLOAD_LOCATION",
              "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OCI__CERTIFICATE_AUTHORITY_OCID", CA_ID)
    monkeypatch.setenv("OCI__CERTIFICATE_OCID", CERT_ID)
    s = make_settings(OCI__CODE_DIR=tmp_path / "code")
    paths = download_certificates(s, oci_auth)
    assert paths == certificate_locations(s)
    assert sorted(os.listdir(tmp_path / "code")) == ["dask-tls-ca-cert.pem", "dask-tls-cert.pem",
                                                      "dask-tls-key.pem"]


def test_not_configured_and_half_configured(tmp_path):
    assert download_certificates({}, None) == {}
    with pytest.raises(SettingsError, match="OCI__CERTIFICATE_OCID is required when "
                                            "OCI__CERTIFICATE_AUTHORITY_OCID is set"):
        download_certificates({"OCI__CERTIFICATE_AUTHORITY_OCID": CA_ID}, None)


def test_service_error_names_the_ocid(tmp_path, oci_server, oci_auth, cert_api):
    env = _env(tmp_path, OCI__CERTIFICATE_OCID="ocid1.certificate.oc1..gone")
    with pytest.raises(NodeFailure) as e:
        download_certificates(env, oci_auth)
    assert "ocid1.certificate.oc1..gone" in e.value.reason and "404" in e.value.reason
    assert not (tmp_path / "tls").exists()  # nothing half written


def test_node_identity_from_the_environment(tmp_path, monkeypatch, oci_identity, oci_server, cert_api):
    """Without an auth dict the node's api_key identity (OCI_IAM_TYPE, OCI_CONFIG_LOCATION) signs."""
    import oci

    from fsm_cluster.runtime.oci_auth import default_auth

    monkeypatch.setenv("OCI_IAM_TYPE", "api_key")
    monkeypatch.setenv("OCI_CONFIG_LOCATION", str(tmp_path / "oci_config"))
    monkeypatch.delenv("OCI_CONFIG_PROFILE", raising=False)
    auth = default_auth()
    assert auth["config"]["user"] == oci_identity.config["user"]
    auth.update(service_endpoint=oci_server.url, retry_strategy=oci.retry.NoneRetryStrategy())
    assert download_certificates(_env(tmp_path), auth)
    assert oci_server.bad_signatures == 0 and len(oci_server.requests) == 2
