"""OCI SDK clients for the runtime helpers (vault secrets, certificates, namespace look-up).

``auth`` is a dict in the shape ADS' ``default_signer()`` returns, so an ADS auth dict works as is:
``{"config": {...}, "signer": <signer>, "client_kwargs": {...}}``. Any other key (for example
``service_endpoint``, ``retry_strategy``, ``timeout``) is passed to the client constructor.
Without ``auth`` the node's own identity is used (``fsm_cluster.oci_support.get_oci_auth`` from
OCI_IAM_TYPE, OCI_CONFIG_PROFILE and OCI_CONFIG_LOCATION).

The ``oci`` package is imported only here, inside the functions: the bootstrap stays fast.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..env import OCI_CONFIG_LOCATION, OCI_CONFIG_PROFILE, OCI_IAM_TYPE


def default_auth(environ: Mapping[str, str] | None = None) -> dict:
    """Auth dict for this node: ``oci_support.get_oci_auth`` from OCI_IAM_TYPE,
    OCI_CONFIG_PROFILE and OCI_CONFIG_LOCATION."""
    from ..oci_support import get_oci_auth

    env = os.environ if environ is None else environ
    return get_oci_auth(env.get(OCI_IAM_TYPE, ""), env.get(OCI_CONFIG_PROFILE, ""),
                        env.get(OCI_CONFIG_LOCATION, ""))


def storage_options(uri: str, auth: Mapping[str, Any] | None) -> dict:
    """fsspec options for ``uri``: the auth's config / signer for ``oci://`` (ocifs), else none."""
    if uri.startswith("oci://") and auth:
        from ..oci_support import storage_options as oci_options

        return oci_options(auth)
    return {}


def make_client(client_cls: type, auth: Mapping[str, Any] | None = None):
    """``client_cls`` built from an ADS-style auth dict (or the node's default identity)."""
    kwargs = dict(default_auth() if auth is None else auth)
    config = kwargs.pop("config", None) or {}
    kwargs.update(kwargs.pop("client_kwargs", None) or {})
    return client_cls(config, **kwargs)


def describe_error(exc: BaseException) -> str:
    """A one-line description of an SDK failure (service errors: status, code and message)."""
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if status is not None and code is not None:
        return f"HTTP {status} {code}: {message}"
    return f"{type(exc).__name__}: {exc}"
