"""A node's address and network interface, and whether a peer's address can be reached.

* :func:`find_self_ip` — OCI__SELF_IP if set (per node); else OCI__CLUSTER_NETWORK, the cluster's
  choice (:func:`on_network`: a subnet in CIDR form → this node's address in it, an interface name
  → that interface's IPv4 address); inside a job run the address on the job's subnet
  (:func:`find_self_ip_in_job`: the subnet's CIDR from the SDK, this machine's interfaces from
  psutil, :func:`interfaces`, :func:`address_in`); else the address of the interface that carries
  the default route (:func:`default_address`, as Ray and Dask pick theirs), else the first
  non-loopback IPv4 address, else 127.0.0.1;
* :func:`interface_of` — the interface holding an address (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME);
* :func:`reachable` — whether a TCP connection to a peer is answered (a worker checks MAIN's
  published address with it before it registers, :mod:`fsm_cluster.node.formation`), and
  :func:`route_to`, the address and interface this machine would reach a peer from.

Auth and clients live in :mod:`fsm_cluster.runtime.oci_auth`, imported only by the functions that
use them (a node off OCI never loads it; ``get_oci_auth`` is still importable from here), as
``oci`` and ``psutil`` are.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from typing import Iterable, Iterator, Mapping

from ..env import OCI__CLUSTER_NETWORK, cluster_network
from ..errors import FsmClusterError, SettingsError

__all__ = ["OciError", "address_in", "default_address", "find_self_ip", "find_self_ip_in_job", "get_oci_auth",
           "interface_of", "interfaces", "is_loopback", "is_own", "local_ip", "on_network", "reachable",
           "route_source", "route_to"]
log = logging.getLogger(__name__)

# Where a UDP socket is "connected" to learn which source address the kernel's default route
# gives (no packet is sent: UDP's connect only picks the route). A public address, as Ray and
# Dask use: no subnet route of a cluster network covers it, only the default route does.
ROUTE_PROBE = "8.8.8.8"
REACH_TIMEOUT = 5.0  # s a worker waits for MAIN's published address to answer


def __getattr__(name: str):
    """``get_oci_auth`` (and the clients' helpers), named here as before, from runtime.oci_auth on first use."""
    if name in ("get_oci_auth", "describe_error", "make_client"):
        from ..runtime import oci_auth

        return getattr(oci_auth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OciError(FsmClusterError):
    """An OCI call needed by fsm_cluster failed (the message says which and why)."""


def interfaces(up: bool = True) -> Iterator[tuple[str, str]]:
    """(interface, address) of every IPv4/IPv6 address of the up interfaces (psutil; ``up=False``:
    of every interface, also one whose link is not running yet)."""
    import psutil

    stats = psutil.net_if_stats() if up else {}
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                yield name, a.address.split("%", 1)[0]


def _ip(address: str):
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def address_in(networks: list[str], ifaces: Iterable[tuple[str, str]] | None = None) -> tuple[str, str] | None:
    """(address, interface) of the first local address inside one of ``networks`` (CIDRs);
    ``ifaces``: (interface, address) pairs, this machine's (:func:`interfaces`) when None."""
    nets = [ipaddress.ip_network(n, strict=False) for n in networks if n]
    for name, addr in interfaces() if ifaces is None else ifaces:
        ip = _ip(addr)
        if ip is not None and any(ip.version == n.version and ip in n for n in nets):
            return addr, name
    return None


def describe_interfaces(ifaces: Iterable[tuple[str, str]]) -> str:
    """``eth0 10.0.0.5, fe80::1; lo 127.0.0.1`` (every up interface and its addresses)."""
    by_name: dict[str, list[str]] = {}
    for name, addr in ifaces:
        by_name.setdefault(name, []).append(addr)
    return "; ".join(f"{n} {', '.join(a)}" for n, a in by_name.items()) or "none"


def on_network(network: str, ifaces: Iterable[tuple[str, str]] | None = None) -> tuple[str, str]:
    """(address, interface) of this node on OCI__CLUSTER_NETWORK ``network``: a subnet in CIDR form
    (the node's address inside it) or an interface name (that interface's IPv4 address; its first
    address when it has no IPv4 one). None there → SettingsError listing every interface. This
    machine's interfaces when ``ifaces`` is None: the up ones, else one whose link is not running
    yet (a node started as its interface comes up)."""
    network = cluster_network(network)
    if ifaces is None:
        try:
            return on_network(network, list(interfaces()))
        except SettingsError:
            found = on_network(network, list(interfaces(up=False)))  # else the same error, every interface
            log.warning("%s=%s: %s on %s, whose link is not running (yet)", OCI__CLUSTER_NETWORK, network, *found)
            return found
    ifaces = list(ifaces)
    if "/" in network:
        found = address_in([network], ifaces)
        where = f"no address in subnet {network}"
    else:
        own = [a for n, a in ifaces if n == network]
        found = next(((a, network) for a in own if _ip(a) is not None and _ip(a).version == 4),
                     (own[0], network) if own else None)
        where = f"no interface {network} with an address"
    if found is None:
        raise SettingsError(f"{OCI__CLUSTER_NETWORK}={network}: this node has {where}; its interfaces: "
                            f"{describe_interfaces(ifaces)}. Set {OCI__CLUSTER_NETWORK} to a subnet or an "
                            "interface every node has an address on, or OCI__SELF_IP on this node")
    return found


def route_source(destination: str = ROUTE_PROBE) -> str | None:
    """The source address the kernel gives a packet to ``destination`` (a UDP socket's connect
    picks the route and sends nothing); None without a route (no default route: ENETUNREACH)."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((destination, 9))
            return s.getsockname()[0].split("%", 1)[0]
    except OSError:
        return None


def default_address(source: str | None, ifaces: Iterable[tuple[str, str]]) -> tuple[str, str | None]:
    """The node's address when nothing names one: ``source`` (the default route's source address,
    :func:`route_source`) with its interface; without a default route the first non-loopback IPv4
    address of ``ifaces``; else 127.0.0.1."""
    ifaces = list(ifaces)
    ip = _ip(source) if source else None
    if ip is not None and not ip.is_loopback and not ip.is_unspecified:
        return source, next((n for n, a in ifaces if a == source), None)
    for name, addr in ifaces:
        ip = _ip(addr)
        if ip is not None and ip.version == 4 and not ip.is_loopback:
            return addr, name
    return "127.0.0.1", next((n for n, a in ifaces if a == "127.0.0.1"), None)


def find_self_ip_in_job(auth: dict, job_ocid: str) -> tuple[str, str]:
    """(ip, interface) of this node on the subnet of job ``job_ocid``.

    The node gives its children GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for that interface
    (``ClusterProvider.socket_env``). A job on managed networking (no subnet) gets the address of
    the host's default route (:func:`default_address`). Failures → :class:`OciError` naming the job
    or subnet.
    """
    import oci

    from ..runtime.oci_auth import describe_error, make_client

    try:
        job = make_client(oci.data_science.DataScienceClient, auth).get_job(job_ocid).data
    except Exception as e:
        raise OciError(f"JOB_OCID {job_ocid}: cannot read the job ({describe_error(e)})") from None
    subnet_id = getattr(job.job_infrastructure_configuration_details, "subnet_id", None)
    if not subnet_id:
        found = default_address(route_source(), interfaces())
        if is_loopback(found[0]):
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


def _primary_ipv4() -> Iterator[tuple[str, str]]:
    """(interface, primary IPv4 address) of every interface that has one, from the kernel (Linux's
    SIOCGIFADDR; nothing elsewhere): one ioctl each, no psutil (every node asks at its start)."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address
            yield name, socket.inet_ntoa(packed[20:24])


def interface_of(ip: str) -> str | None:
    """The name of the network interface holding ``ip``, e.g. ``lo`` for 127.0.0.1: an interface's
    primary IPv4 address from the kernel, else any of its addresses (psutil: aliases too)."""
    try:
        found = next((name for name, addr in _primary_ipv4() if addr == ip), None)
    except OSError:
        found = None
    if found is not None:
        return found
    import psutil

    try:
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
                return name
    except (OSError, psutil.Error):
        pass
    return "lo" if is_loopback(ip) else None


def local_ip() -> str:
    """The address of the interface that carries the host's default route; without one the first
    up, non-loopback IPv4 address (psutil); else 127.0.0.1 (see :func:`default_address`)."""
    return default_address(route_source(), _interfaces_or_none())[0]


def _interfaces_or_none() -> list[tuple[str, str]]:
    import psutil

    try:
        return list(interfaces())
    except (OSError, psutil.Error):
        return []


def find_self_ip(self_ip: str, job_ocid: str, authinfo: dict, network: str = "") -> tuple[str, str | None]:
    """``(address, interface or None)``: OCI__SELF_IP if set (per node); else ``network``
    (OCI__CLUSTER_NETWORK: a subnet in CIDR form or an interface name, :func:`on_network`); inside
    a job run the address on the job's subnet; else the address of the default route's interface,
    the first non-loopback IPv4 address without one, 127.0.0.1 when there is none."""
    if self_ip:
        return self_ip, None
    if network:
        found = on_network(network)
        log.info("self address %s on %s (%s=%s)", *found, OCI__CLUSTER_NETWORK, network)
        return found
    if job_ocid.startswith("ocid1.") and authinfo:
        return find_self_ip_in_job(authinfo, job_ocid)
    return default_address(route_source(), _interfaces_or_none())


def auth_for(settings, protocol: str) -> dict:
    """The OCI signer, only when OCI is involved (OCI_IAM_TYPE set, an ``oci://`` work dir); else ``{}``."""
    if not (settings.oci_iam_type or protocol == "oci"):
        return {}
    from ..runtime.oci_auth import get_oci_auth

    return get_oci_auth(settings.oci_iam_type, settings.oci_config_profile, settings.oci_config_location)


def socket_env(interface: str) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for ``interface`` (none when unknown)."""
    return {k: interface for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} if interface else {}


def node_address(source, authinfo: dict) -> tuple[str, str | None]:
    """:func:`find_self_ip` from the node's Settings, or from a mapping (``os.environ``: oracle-ads
    calls ``ClusterProvider.find_self_ip`` on the class; OCI__CLUSTER_NETWORK checked as Settings
    checks it: a malformed value → SettingsError naming the variable)."""
    if isinstance(source, Mapping):
        try:
            network = cluster_network(source.get(OCI__CLUSTER_NETWORK, ""))
        except ValueError as e:
            raise SettingsError(f"environment variable {OCI__CLUSTER_NETWORK}: {e}") from None
        return find_self_ip(source.get("OCI__SELF_IP", ""), source.get("JOB_OCID", ""), authinfo, network)
    return find_self_ip(source.self_ip, source.job_ocid, authinfo, source.cluster_network)


# -- can a peer be reached ------------------------------------------------------------------------
def reachable(host: str, port: int, timeout: float = REACH_TIMEOUT) -> str | None:
    """None when a TCP connection to ``host:port`` is answered — accepted, or refused (the host is
    there, nothing listens); else why not (``no answer within 5 s``, ``No route to host``,
    ``Network is unreachable``, a name that does not resolve)."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:
        return f"cannot resolve {host!r} ({e})"
    why = "no address"
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout)
            try:
                s.connect(addr)
                return None
            except (ConnectionRefusedError, ConnectionResetError):
                return None
            except TimeoutError:
                why = f"no answer within {timeout:g} s"
            except OSError as e:
                why = os.strerror(e.errno) if e.errno else str(e)
                if e.errno not in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EACCES,
                                   errno.EPERM, errno.ETIMEDOUT):
                    return None  # the host answered somehow (an unusual error is not "unreachable")
    return why


def is_own(host: str) -> bool:
    """``host`` is this machine's (loopback, or an address of one of its interfaces): reaching it
    says nothing about the network (and a check would only knock on a local port)."""
    host = host.strip("[]")
    return is_loopback(host) or host in {a for _, a in _interfaces_or_none()}


def route_to(host: str) -> tuple[str, str | None] | None:
    """(source address, interface) this machine would reach ``host`` from; None without a route."""
    try:
        ip = socket.getaddrinfo(host.strip("[]"), None)[0][4][0]
    except (socket.gaierror, UnicodeError, IndexError):
        return None
    source = route_source(ip)
    if source is None:
        return None
    return source, next((n for n, a in _interfaces_or_none() if a == source), None)
