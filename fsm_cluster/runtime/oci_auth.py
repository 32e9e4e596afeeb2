"""OCI SDK clients for the runtime helpers (vault secrets, certificates, namespace look-up).

``auth`` is a dict in the shape ADS' ``default_signer()`` returns, so an ADS auth dict works as is:
``{"config": {...}, "signer": <signer>, "client_kwargs": {...}}``. Any other key (for example
``service_endpoint``, ``retry_strategy``, ``timeout``) is passed to the client constructor.
Without ``auth`` the node's own identity is used: OCI_IAM_TYPE (``resource_principal`` by default,
``api_key`` or ``instance_principal``), OCI_CONFIG_LOCATION and OCI_CONFIG_PROFILE.

The ``oci`` package is imported only here, inside the functions: the bootstrap stays fast.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..env import OCI_CONFIG_LOCATION, OCI_CONFIG_PROFILE, OCI_IAM_TYPE
from ..errors import SettingsError


def default_auth(environ: Mapping[str, str] | None = None) -> dict:
    """Auth dict for this node from OCI_IAM_TYPE / OCI_CONFIG_LOCATION / OCI_CONFIG_PROFILE."""
    import oci

    env = os.environ if environ is None else environ
    kind = (env.get(OCI_IAM_TYPE) or "resource_principal").strip().lower()
    if kind == "api_key":
        location = env.get(OCI_CONFIG_LOCATION) or oci.config.DEFAULT_LOCATION
        profile = env.get(OCI_CONFIG_PROFILE) or oci.config.DEFAULT_PROFILE
        try:
            return {"config": oci.config.from_file(os.path.expanduser(location), profile)}
        except oci.exceptions.ClientError as e:
            raise SettingsError(f"{OCI_IAM_TYPE}=api_key: cannot read OCI config {location!r} "
                                f"profile {profile!r} ({e})") from None
    if kind == "resource_principal":
        return {"config": {}, "signer": oci.auth.signers.get_resource_principals_signer()}
    if kind == "instance_principal":
        return {"config": {}, "signer": oci.auth.signers.InstancePrincipalsSecurityTokenSigner()}
    raise SettingsError(f"{OCI_IAM_TYPE}: unknown value {kind!r} "
                        "(expected api_key, resource_principal or instance_principal)")


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
