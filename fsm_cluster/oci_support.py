"""OCI identity and addresses for a node (and for ``fsm-cluster submit`` on a laptop).

* :func:`get_oci_auth` — ``{"config": ..., "signer": ...}``, usable as ``oci.<Client>(**auth)`` and
  as fsspec/ocifs storage options (``OCIFileSystem(**auth)``). ``iam_type`` is one of api_key,
  resource_principal, instance_principal, security_token; empty means resource_principal inside a
  job run (the platform sets ``OCI_RESOURCE_PRINCIPAL_VERSION``) and api_key elsewhere.
* :func:`find_self_ip_in_job` — inside a job run, the address of this container on the job's subnet:
  the subnet's CIDR from the SDK, this machine's interfaces from psutil.

``oci`` is imported inside the functions only: the node bootstrap stays fast.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Iterator, Mapping

from .errors import FsmClusterError, SettingsError

log = logging.getLogger(__name__)

IAM_TYPES = ("api_key", "resource_principal", "instance_principal", "security_token")
RESOURCE_PRINCIPAL_MARKER = "OCI_RESOURCE_PRINCIPAL_VERSION"
GLOO_SOCKET_IFNAME = "GLOO_SOCKET_IFNAME"
NCCL_SOCKET_IFNAME = "NCCL_SOCKET_IFNAME"


class OciError(FsmClusterError):
    """An OCI call needed by fsm_cluster failed (the message says which and why)."""


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


def storage_options(auth: Mapping) -> dict:
    """fsspec / ocifs storage options from an auth dict."""
    return {"config": auth.get("config") or {}, "signer": auth.get("signer")}


def interfaces() -> Iterator[tuple[str, str]]:
    """(interface, address) of every IPv4/IPv6 address of the up interfaces (psutil)."""
    import psutil

    stats = psutil.net_if_stats()
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                yield name, a.address.split("%", 1)[0]


def address_in(networks: list[str]) -> tuple[str, str] | None:
    """(address, interface) of the first local address inside one of ``networks`` (CIDRs)."""
    nets = [ipaddress.ip_network(n, strict=False) for n in networks if n]
    for name, addr in interfaces():
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if any(ip.version == n.version and ip in n for n in nets):
            return addr, name
    return None


def find_self_ip_in_job(auth: dict, job_ocid: str) -> tuple[str, str]:
    """(ip, interface) of this node on the subnet of job ``job_ocid``.

    Sets GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME to that interface (unless already set), so that
    torch / NCCL bind to it. A job on managed networking (no subnet) gets the host's first
    non-loopback IPv4 address. Failures → :class:`OciError` naming the job or subnet.
    """
    import oci

    from .runtime.oci_auth import describe_error, make_client

    try:
        job = make_client(oci.data_science.DataScienceClient, auth).get_job(job_ocid).data
    except Exception as e:
        raise OciError(f"JOB_OCID {job_ocid}: cannot read the job ({describe_error(e)})") from None
    subnet_id = getattr(job.job_infrastructure_configuration_details, "subnet_id", None)
    if not subnet_id:
        found = next(((a, n) for n, a in interfaces()
                      if "." in a and not ipaddress.ip_address(a).is_loopback), None)
        if found is None:
            raise OciError(f"job {job_ocid} has no subnet and this machine no non-loopback IPv4 address")
        log.info("job %s uses managed networking: self address %s on %s", job_ocid, *found)
        return _export(*found)
    try:
        subnet = make_client(oci.core.VirtualNetworkClient, auth).get_subnet(subnet_id).data
    except Exception as e:
        raise OciError(f"subnet {subnet_id} of job {job_ocid}: cannot read it ({describe_error(e)})") from None
    cidrs = [subnet.cidr_block, *(getattr(subnet, "ipv6_cidr_blocks", None) or []),
             getattr(subnet, "ipv6_cidr_block", None)]
    found = address_in([c for c in cidrs if c])
    if found is None:
        local = ", ".join(f"{n}={a}" for n, a in interfaces()) or "none"
        raise OciError(f"no local address in subnet {subnet_id} ({subnet.cidr_block}); "
                       f"interfaces: {local}")
    log.info("self address %s on %s (subnet %s)", *found, subnet.cidr_block)
    return _export(*found)


def _export(ip: str, iface: str) -> tuple[str, str]:
    os.environ.setdefault(GLOO_SOCKET_IFNAME, iface)
    os.environ.setdefault(NCCL_SOCKET_IFNAME, iface)
    return ip, iface
