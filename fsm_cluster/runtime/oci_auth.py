"""OCI identity and SDK clients — the one home of OCI auth (``oci_support`` imports from here).

* :func:`get_oci_auth` — ``{"config": ..., "signer": ...}`` for an identity kind: api_key,
  resource_principal, instance_principal, security_token; empty means resource_principal inside a
  job run (the platform sets ``OCI_RESOURCE_PRINCIPAL_VERSION``) and api_key elsewhere.
  :func:`default_auth` is the node's own identity (OCI_IAM_TYPE, OCI_CONFIG_PROFILE else
  OCIFS_CONFIG_PROFILE as in oracle-ads, OCI_CONFIG_LOCATION).
* :func:`make_client` — an SDK client from an auth dict in the shape ADS' ``default_signer()``
  returns (``{"config", "signer", "client_kwargs"}``; any other key, for example
  ``service_endpoint``, ``retry_strategy`` or ``timeout``, goes to the client constructor).
* :func:`storage_options` — the one builder of fsspec options for a URI (ocifs gets the auth).
* :func:`describe_error` — an SDK failure in one line.

The ``oci`` package is imported only inside the functions: the bootstrap stays fast.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..env import OCI_CONFIG_LOCATION, OCI_IAM_TYPE, config_profile
from ..errors import SettingsError

IAM_TYPES = ("api_key", "resource_principal", "instance_principal", "security_token")
RESOURCE_PRINCIPAL_MARKER = "OCI_RESOURCE_PRINCIPAL_VERSION"


def default_iam_type(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return "resource_principal" if env.get(RESOURCE_PRINCIPAL_MARKER) else "api_key"


def get_oci_auth(iam_type: str = "", profile: str = "", config_location: str = "") -> dict:
    """``{"config": dict, "signer": signer}`` for ``iam_type`` (see the module doc)."""
    import oci

    kind = (iam_type or default_iam_type()).strip().lower()
    if kind not in IAM_TYPES:
        raise SettingsError(f"OCI_IAM_TYPE: unknown value {iam_type!r} (expected {', '.join(IAM_TYPES)})")
    if kind == "resource_principal":
        try:
            return {"config": {}, "signer": oci.auth.signers.get_resource_principals_signer()}
        except Exception as e:
            raise SettingsError(f"OCI_IAM_TYPE=resource_principal: no resource principal here ({e}); "
                                "outside a job run use api_key") from None
    if kind == "instance_principal":
        try:
            return {"config": {}, "signer": oci.auth.signers.InstancePrincipalsSecurityTokenSigner()}
        except Exception as e:
            raise SettingsError(f"OCI_IAM_TYPE=instance_principal: cannot get an instance principal "
                                f"token ({e})") from None
    location = os.path.expanduser(config_location or oci.config.DEFAULT_LOCATION)
    profile = profile or oci.config.DEFAULT_PROFILE
    what = f"OCI_IAM_TYPE={kind}: OCI config {location!r} profile {profile!r}"
    try:
        config = oci.config.from_file(location, profile)
        if kind == "api_key":
            oci.config.validate_config(config)
            return {"config": config, "signer": oci.signer.Signer(
                tenancy=config["tenancy"], user=config["user"], fingerprint=config["fingerprint"],
                private_key_file_location=config.get("key_file"),
                pass_phrase=config.get("pass_phrase"), private_key_content=config.get("key_content"))}
        token_file = os.path.expanduser(config.get("security_token_file") or "")
        if not token_file:
            raise SettingsError(f"{what}: no security_token_file (run `oci session authenticate`)")
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
        key = oci.signer.load_private_key_from_file(config["key_file"], config.get("pass_phrase"))
        return {"config": config, "signer": oci.auth.signers.SecurityTokenSigner(token, key)}
    except SettingsError:
        raise
    except (oci.exceptions.ClientError, OSError, KeyError, ValueError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise SettingsError(f"{what}: {detail}") from None


def default_auth(environ: Mapping[str, str] | None = None) -> dict:
    """Auth dict for this node: :func:`get_oci_auth` from OCI_IAM_TYPE, the profile
    (:func:`~fsm_cluster.env.config_profile`: OCI_CONFIG_PROFILE, else OCIFS_CONFIG_PROFILE, else
    DEFAULT) and OCI_CONFIG_LOCATION."""
    env = os.environ if environ is None else environ
    return get_oci_auth(env.get(OCI_IAM_TYPE, ""), config_profile(env), env.get(OCI_CONFIG_LOCATION, ""))


def storage_options(uri: str, auth: Mapping[str, Any] | None, given: Mapping | None = None) -> dict:
    """fsspec options for ``uri``: ``given`` when the caller has its own (a copy), else the auth's
    config and signer for ``oci://`` (ocifs), else none."""
    if given is not None:
        return dict(given)
    if uri.startswith("oci://") and auth:
        return {"config": auth.get("config") or {}, "signer": auth.get("signer")}
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
