"""A node's address and network interface.

* :func:`find_self_ip` — OCI__SELF_IP if set; inside a job run the address on the job's subnet
  (:func:`find_self_ip_in_job`: the subnet's CIDR from the SDK, this machine's interfaces from
  psutil, :func:`interfaces`, :func:`address_in`); else :func:`local_ip`;
* :func:`interface_of` — the interface holding an address (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME).

Auth and clients live in :mod:`fsm_cluster.runtime.oci_auth`; this module imports from it (and
names ``get_oci_auth`` again for the provider). ``oci`` is imported inside the functions only.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Iterator, Mapping

from ..errors import FsmClusterError
from ..runtime.oci_auth import describe_error, get_oci_auth, make_client

__all__ = ["OciError", "address_in", "find_self_ip", "find_self_ip_in_job", "get_oci_auth", "interface_of", "interfaces",
           "is_loopback", "local_ip"]
log = logging.getLogger(__name__)



class OciError(FsmClusterError):
    """An OCI call needed by fsm_cluster failed (the message says which and why)."""


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

    The node gives its children GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for that interface
    (``ClusterProvider.socket_env``). A job on managed networking (no subnet) gets the host's first
    non-loopback IPv4 address. Failures → :class:`OciError` naming the job or subnet.
    """
    import oci

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
        return found
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
    return found


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def interface_of(ip: str) -> str | None:
    """The name of the network interface holding ``ip`` (psutil), e.g. ``lo`` for 127.0.0.1."""
    import psutil

    try:
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
                return name
    except (OSError, psutil.Error):
        pass
    return "lo" if is_loopback(ip) else None


def local_ip() -> str:
    """The host's first up, non-loopback IPv4 address (psutil), else 127.0.0.1."""
    import psutil

    try:
        stats = psutil.net_if_stats()
        for name, addrs in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            for a in addrs:
                if a.family == socket.AF_INET and not a.address.startswith("127."):
                    return a.address
    except (OSError, psutil.Error):
        pass
    return "127.0.0.1"


def find_self_ip(self_ip: str, job_ocid: str, authinfo: dict) -> tuple[str, str | None]:
    """``(address, interface or None)``: OCI__SELF_IP if set; inside a job run the address on the
    job's subnet; else the host's first non-loopback IPv4 address (127.0.0.1 when there is none)."""
    if self_ip:
        return self_ip, None
    if job_ocid.startswith("ocid1.") and authinfo:
        return find_self_ip_in_job(authinfo, job_ocid)
    return local_ip(), None


def auth_for(settings, protocol: str) -> dict:
    """The OCI signer, only when OCI is involved (OCI_IAM_TYPE set, an ``oci://`` work dir); else ``{}``."""
    if not (settings.oci_iam_type or protocol == "oci"):
        return {}
    return get_oci_auth(settings.oci_iam_type, settings.oci_config_profile, settings.oci_config_location)


def socket_env(interface: str) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for ``interface`` (none when unknown)."""
    return {k: interface for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} if interface else {}


def node_address(source, authinfo: dict) -> tuple[str, str | None]:
    """:func:`find_self_ip` from the node's Settings, or from a mapping (``os.environ``: oracle-ads
    calls ``ClusterProvider.find_self_ip`` on the class)."""
    if isinstance(source, Mapping):
        return find_self_ip(source.get("OCI__SELF_IP", ""), source.get("JOB_OCID", ""), authinfo)
    return find_self_ip(source.self_ip, source.job_ocid, authinfo)
