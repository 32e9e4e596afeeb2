"""TLS material for Dask: the CA bundle, certificate and private key from OCI Certificates.

With OCI__CERTIFICATE_AUTHORITY_OCID and OCI__CERTIFICATE_OCID set, the CA's certificate (and
chain), the certificate (with its chain) and its private key are downloaded through the oci SDK
(``CertificatesClient.get_certificate_authority_bundle`` / ``get_certificate_bundle`` with
``CERTIFICATE_CONTENT_WITH_PRIVATE_KEY``) to OCI__CA_DOWNLOAD_LOCATION,
OCI__CERTIFICATE_DOWNLOAD_LOCATION and OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION (defaults: ADS'
``dask-tls-ca-cert.pem``, ``dask-tls-cert.pem`` and ``dask-tls-key.pem`` in the code dir). Each file
is written atomically; the key is created 0600 and never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Mapping

from ..env import (
    OCI__CA_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_AUTHORITY_OCID,
    OCI__CERTIFICATE_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_OCID,
    OCI__CODE_DIR,
)
from ..errors import NodeFailure, SettingsError

log = logging.getLogger(__name__)

DEFAULT_NAMES = {
    OCI__CA_DOWNLOAD_LOCATION: "dask-tls-ca-cert.pem",
    OCI__CERTIFICATE_DOWNLOAD_LOCATION: "dask-tls-cert.pem",
    OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION: "dask-tls-key.pem",
}


def _environment(settings_or_env) -> tuple[Mapping[str, str], str]:
    if isinstance(settings_or_env, Mapping):
        return settings_or_env, settings_or_env.get(OCI__CODE_DIR) or "/code"
    # Settings has no certificate fields: those come from the process environment.
    return os.environ, getattr(settings_or_env, "code_dir", "") or os.environ.get(OCI__CODE_DIR) or "/code"


def certificate_locations(settings_or_env) -> dict[str, str]:
    """Where each file goes, keyed by the OCI__*_DOWNLOAD_LOCATION variable names."""
    env, code_dir = _environment(settings_or_env)
    return {var: os.path.abspath(os.path.expanduser(env.get(var) or os.path.join(code_dir, name)))
            for var, name in DEFAULT_NAMES.items()}


def _write(path: str, text: str, mode: int) -> None:
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _pem(*parts: str | None) -> str:
    return "\n".join(p.strip() for p in parts if p and p.strip()) + "\n"


def download_certificates(settings_or_env, auth: dict | None = None) -> dict[str, str]:
    """Download CA, certificate and key; return ``{OCI__*_DOWNLOAD_LOCATION: path}``.

    Returns ``{}`` when neither OCID is set; SettingsError when only one is; NodeFailure (naming the
    OCID and the service's answer) when a download fails.
    """
    env, _ = _environment(settings_or_env)
    ca_id = (env.get(OCI__CERTIFICATE_AUTHORITY_OCID) or "").strip()
    cert_id = (env.get(OCI__CERTIFICATE_OCID) or "").strip()
    if not ca_id and not cert_id:
        return {}
    if not ca_id or not cert_id:
        missing = OCI__CERTIFICATE_AUTHORITY_OCID if not ca_id else OCI__CERTIFICATE_OCID
        given = OCI__CERTIFICATE_OCID if not ca_id else OCI__CERTIFICATE_AUTHORITY_OCID
        raise SettingsError(f"{missing} is required when {given} is set (Dask TLS needs both)")
    paths = certificate_locations(settings_or_env)

    import oci

    from .oci_auth import describe_error, make_client

    client = make_client(oci.certificates.CertificatesClient, auth)
    try:
        ca = client.get_certificate_authority_bundle(ca_id).data
    except Exception as e:
        raise NodeFailure(f"cannot download the CA bundle {ca_id} ({OCI__CERTIFICATE_AUTHORITY_OCID}): "
                          f"{describe_error(e)}") from None
    try:
        cert = client.get_certificate_bundle(
            cert_id, certificate_bundle_type="CERTIFICATE_CONTENT_WITH_PRIVATE_KEY").data
    except Exception as e:
        raise NodeFailure(f"cannot download the certificate {cert_id} ({OCI__CERTIFICATE_OCID}): "
                          f"{describe_error(e)}") from None
    key = getattr(cert, "private_key_pem", None)
    if not key:
        raise NodeFailure(f"certificate {cert_id} came without a private key (only certificates "
                          "issued by an OCI CA carry one)")
    if not ca.certificate_pem or not cert.certificate_pem:
        raise NodeFailure(f"certificate bundle {cert_id if ca.certificate_pem else ca_id} has no PEM content")
    if getattr(cert, "private_key_pem_passphrase", None):
        log.warning("certificate %s: the private key is passphrase-protected; Dask cannot use it "
                    "without the passphrase", cert_id)
    _write(paths[OCI__CA_DOWNLOAD_LOCATION], _pem(ca.certificate_pem, ca.cert_chain_pem), 0o644)
    _write(paths[OCI__CERTIFICATE_DOWNLOAD_LOCATION], _pem(cert.certificate_pem, cert.cert_chain_pem), 0o644)
    _write(paths[OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION], _pem(key), 0o600)
    del key
    log.info("certificates: CA %s and certificate %s downloaded to %s, %s (key %s)", ca_id, cert_id,
             paths[OCI__CA_DOWNLOAD_LOCATION], paths[OCI__CERTIFICATE_DOWNLOAD_LOCATION],
             paths[OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION])
    return paths
