"""Hosts on this machine: one Linux network namespace per "host", for ``fsm-cluster local --hosts``
and the multi-host tests.

:meth:`Hosts.create` makes, with iproute2 (``ip``) through subprocess and nothing in the root
namespace or on any real network:

* a *switch* namespace ``<run>-sw`` holding a bridge ``br0`` (the cluster network's gateway,
  ``.254`` of ``network``) with one port ``p<i>`` per host, and the far ends ``d<i>`` of the hosts'
  second interfaces, attached to nothing;
* per host a namespace ``<run>-h<i>`` with ``lo`` up, then **first** ``eth0`` on ``other_network``
  (it reaches nothing; being created first it is the first non-loopback interface psutil lists,
  as on a machine whose first interface is not the cluster network), then ``eth1`` on ``network``
  (the host's :attr:`Host.address`), and a default route through ``eth1``;
* per host a temporary folder (:attr:`Host.tmp`, for ``TMPDIR``): the hosts share this machine's
  filesystem, where programs that keep files and sockets in /tmp would meet;
* per host its own ``/etc/hosts`` and ``/etc/resolv.conf`` (``/etc/netns/<host>/``, which
  ``ip netns exec`` mounts over /etc's): this machine's names plus every host's address by its
  name, and no name server. This machine's name server is not reachable from the hosts, and a
  lookup of a peer's address (gloo and c10d name every connecting socket) waited for the resolver's
  timeout each time: PyTorch's 1+2 life took ~30 s longer on three hosts than on one.

Every name starts with ``<prefix>-<pid>-<random>`` (the run). :meth:`Hosts.close` kills what still
runs inside and deletes all it made (links go with the namespaces), also after an exception in
``create`` or a ``with`` block. The next :meth:`Hosts.create` with the same prefix deletes what a
crashed run left: namespaces older than it whose creating process is gone (:func:`stale`), and
their temporary folders. :func:`missing_rights` says what a user lacks (root or CAP_SYS_ADMIN +
CAP_NET_ADMIN, and ``ip``); :meth:`Hosts.create` raises it as one
:class:`~fsm_cluster.errors.FsmClusterError`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..errors import FsmClusterError

log = logging.getLogger(__name__)

NETWORK = "10.213.0.0/24"        # the cluster network (private; exists only inside the namespaces)
OTHER_NETWORK = "10.213.1.0/24"  # each host's second interface: reaches nothing
NETNS_DIR = "/run/netns"         # where iproute2 keeps named namespaces
ETC_NETNS = "/etc/netns"         # files `ip netns exec <name>` mounts over /etc's: /etc/netns/<name>/hosts…
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
CLUSTER_IF, OTHER_IF, BRIDGE = "eth1", "eth0", "br0"
IP_TIMEOUT = 30.0

Runner = Callable[[Sequence[str]], str]  # runs one ip command, returns its stdout; FsmClusterError


def ip(args: Sequence[str]) -> str:
    """Run ``ip *args``; its stdout, or FsmClusterError with the command and ip's own message."""
    cmd = ["ip", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        raise FsmClusterError(f"{' '.join(cmd)}: {e}") from None
    if r.returncode != 0:
        raise FsmClusterError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}")
    return r.stdout


def _effective_caps() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_rights(*, which: Callable[[str], str | None] | None = None,
                   caps: Callable[[], int] | None = None) -> str | None:
    """None when this process can make hosts; else what it needs, as one sentence for the user
    (``which`` and ``caps``: how ``ip`` and this process's effective capabilities are found)."""
    wanted = []
    try:
        have = (caps or _effective_caps)()
    except (OSError, ValueError):
        have = 0
    lacking = [n for n, bit in (("CAP_SYS_ADMIN", CAP_SYS_ADMIN), ("CAP_NET_ADMIN", CAP_NET_ADMIN))
               if not have >> bit & 1]
    if lacking:
        wanted.append("root, or the CAP_SYS_ADMIN and CAP_NET_ADMIN capabilities (this process lacks "
                      f"{' and '.join(lacking)})")
    if (which or shutil.which)("ip") is None:
        wanted.append("iproute2's `ip` command on PATH (apt-get install iproute2)")
    return "hosts (a network namespace each) need " + " and ".join(wanted) if wanted else None


@dataclass(frozen=True)
class Host:
    """One host: its namespace ``name``, its ``address`` on the cluster network (interface
    ``interface``), the address of its second, unreachable interface (``other``), and its own
    temporary folder ``tmp`` (:attr:`env`: ``TMPDIR``)."""

    index: int
    name: str
    address: str
    other: str
    interface: str = CLUSTER_IF
    tmp: str = ""

    @property
    def env(self) -> dict[str, str]:
        """What a process on this host should have in its environment."""
        return {"TMPDIR": self.tmp} if self.tmp else {}

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside this host (``ip netns exec`` execs it: same process id)."""
        return ["ip", "netns", "exec", self.name, *cmd]


def parse_name(name: str, prefix: str) -> tuple[int, str] | None:
    """``(creator pid, run)`` of a namespace made with ``prefix``, else None."""
    m = re.fullmatch(rf"({re.escape(prefix)}-(\d+)-[0-9a-f]{{6}})-(sw|h\d+)", name)
    return (int(m.group(2)), m.group(1)) if m else None


def listed(run: Runner = ip) -> list[str]:
    """The named network namespaces (``ip netns list``: ``name`` or ``name (id: N)`` a line)."""
    return [line.split()[0] for line in run(["netns", "list"]).splitlines() if line.strip()]


def _alive_since(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return 0.0  # there, but not ours to inspect: alive


def stale(names: Sequence[str], prefix: str, before: float, *, made_at: Callable[[str], float | None],
          alive_since: Callable[[int], float | None] = _alive_since) -> list[str]:
    """The namespaces of ``names`` with ``prefix`` made before ``before`` by a process that is
    gone (no such pid, or a pid reused by a process started after the namespace was made)."""
    out = []
    for name in names:
        parsed = parse_name(name, prefix)
        born = made_at(name) if parsed else None
        if born is None or born >= before:
            continue
        started = alive_since(parsed[0])
        if started is None or started > born:
            out.append(name)
    return out


def tmp_root_of(run: str) -> str:
    """The folder of run ``run``'s temporary folders: short (Ray's socket paths below a TMPDIR
    must fit in 107 bytes), named by the run's random part (a later run finds a crashed one's)."""
    return os.path.join(tempfile.gettempdir(), f"fsmh-{run.rsplit('-', 1)[-1]}")


def _made_at(name: str) -> float | None:
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_mtime
    except OSError:
        return None


class Hosts:
    """``n`` hosts (see the module's docstring), host ``i`` on port ``p<i>`` of the switch's bridge;
    a context manager that closes them."""

    def __init__(self, n: int, *, prefix: str = "fsmc", network: str = NETWORK,
                 other_network: str = OTHER_NETWORK, run: Runner = ip, run_id: str | None = None,
                 etc: str | None = None):
        self.net = ipaddress.ip_network(network)
        self.other_net = ipaddress.ip_network(other_network)
        room = min(self.net.num_addresses, self.other_net.num_addresses) - 3  # network, gateway, broadcast
        if not 1 <= n <= room:
            raise FsmClusterError(f"hosts: {n} host(s) do not fit on {network} and {other_network} "
                                  f"(1 to {room})")
        self.prefix = prefix
        self.run_id = run_id or f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self._ip = run
        self.switch = f"{self.run_id}-sw"
        self.gateway = str(self.net[-2])
        self.hosts = [Host(i, f"{self.run_id}-h{i}", str(self.net[i + 1]), str(self.other_net[i + 1]))
                      for i in range(n)]
        self.made: list[str] = []  # namespaces made, in order: close() deletes exactly these
        self.tmp_root: str | None = None  # the hosts' temporary folders are below it
        self.cut_off: set[int] = set()
        # where the hosts' /etc files go: /etc/netns with the real ip, nowhere with another runner
        self.etc = etc if etc is not None else (ETC_NETNS if run is ip else None)

    @classmethod
    def create(cls, n: int, *, prefix: str = "fsmc", clean_stale: bool = True, **kwargs) -> "Hosts":
        """Check the rights, delete a crashed run's leftovers (``clean_stale``), make ``n`` hosts.
        Anything made is deleted again when making the rest fails (or is interrupted)."""
        problem = missing_rights()
        if problem:
            raise FsmClusterError(problem)
        hosts = cls(n, prefix=prefix, **kwargs)
        if clean_stale:
            hosts.clean_stale()
        try:
            hosts.build()
        except BaseException:
            hosts.close()
            raise
        return hosts

    # -- making ------------------------------------------------------------------------------
    def _add_netns(self, name: str) -> None:
        self._ip(["netns", "add", name])
        self.made.append(name)
        self._ip(["-n", name, "link", "set", "lo", "up"])

    def build(self) -> None:
        """Make the hosts' temporary folders, the switch, then every host (the module's docstring)."""
        sw, root = self.switch, tmp_root_of(self.run_id)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            raise FsmClusterError(f"hosts: {root} exists already: try again") from None
        self.tmp_root = root
        self.hosts = [replace(h, tmp=os.path.join(root, f"h{h.index}")) for h in self.hosts]
        for h in self.hosts:
            os.mkdir(h.tmp, 0o700)
        self._add_netns(sw)
        for args in (["link", "add", BRIDGE, "type", "bridge"], ["link", "set", BRIDGE, "up"],
                     ["addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", BRIDGE]):
            self._ip(["-n", sw, *args])
        for h in self.hosts:
            self._add_netns(h.name)
            d, p, me = f"d{h.index}", f"p{h.index}", h.name
            for ns, *args in [  # the unreachable interface first: the first one a listing finds
                    (me, "link", "add", OTHER_IF, "type", "veth", "peer", "name", d, "netns", sw),
                    (sw, "link", "set", d, "up"),
                    (me, "addr", "add", f"{h.other}/{self.other_net.prefixlen}", "dev", OTHER_IF),
                    (me, "link", "set", OTHER_IF, "up"),
                    (me, "link", "add", h.interface, "type", "veth", "peer", "name", p, "netns", sw),
                    (sw, "link", "set", p, "master", BRIDGE), (sw, "link", "set", p, "up"),
                    (me, "addr", "add", f"{h.address}/{self.net.prefixlen}", "dev", h.interface),
                    (me, "link", "set", h.interface, "up"),
                    (me, "route", "add", "default", "via", self.gateway, "dev", h.interface)]:
                self._ip(["-n", ns, *args])
            self._write_etc(h)

    def _write_etc(self, host: Host) -> None:
        """Host ``host``'s /etc/hosts (this machine's, then every host by name) and an
        /etc/resolv.conf naming no server: a lookup is answered from the file or fails at once."""
        if not self.etc:
            return
        folder = os.path.join(self.etc, host.name)
        os.makedirs(folder, mode=0o755, exist_ok=True)
        try:
            with open("/etc/hosts", encoding="utf-8") as f:
                mine = f.read()
        except OSError:
            mine = "127.0.0.1 localhost\n"
        names = "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        with open(os.path.join(folder, "hosts"), "w", encoding="utf-8") as f:
            f.write(f"{mine.rstrip()}\n# fsm_cluster hosts {self.run_id}\n{names}")
        with open(os.path.join(folder, "resolv.conf"), "w", encoding="utf-8") as f:
            f.write(f"# fsm_cluster hosts {self.run_id}: no name server (names: /etc/hosts)\n"
                    "options timeout:1 attempts:1\n")

    # -- using -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, i: int) -> Host:  # and iteration
        return self.hosts[i]

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cut(self, i: int) -> None:
        """Host ``i`` loses the cluster network (its bridge port down); its processes live on."""
        self._ip(["-n", self.switch, "link", "set", f"p{i}", "down"])
        self.cut_off.add(i)

    def heal(self, i: int) -> None:
        """Host ``i`` is back on the cluster network."""
        self._ip(["-n", self.switch, "link", "set", f"p{i}", "up"])
        self.cut_off.discard(i)

    # -- ending ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Kill whatever still runs in the hosts (and the switch), keeping them: one cluster's
        leftovers gone before the next one runs on the same hosts."""
        for name in self.made:
            self._kill_inside(name)

    def close(self) -> list[str]:
        """Kill what still runs in the namespaces made, delete them (last made first) and the
        temporary folders; may be called again. The names it could not delete (also logged)."""
        failed = [name for name in reversed(self.made) if not self._delete(name)]
        self.made = [name for name in self.made if name in failed]
        if self.tmp_root:
            shutil.rmtree(self.tmp_root, ignore_errors=True)
            self.tmp_root = None
        return failed

    def clean_stale(self) -> list[str]:
        """Delete namespaces (and temporary folders) a crashed run with this prefix left (best
        effort; :func:`stale`)."""
        try:
            names = stale(listed(self._ip), self.prefix, time.time(), made_at=_made_at)
        except FsmClusterError as e:
            log.warning("hosts: could not look for stale namespaces: %s", e)
            return []
        for name in names:
            log.warning("hosts: deleting %s, left by a run that is gone", name)
        for run in {parse_name(name, self.prefix)[1] for name in names}:
            shutil.rmtree(tmp_root_of(run), ignore_errors=True)
        return [name for name in names if self._delete(name)]

    def _delete(self, name: str) -> bool:
        if self.etc:
            shutil.rmtree(os.path.join(self.etc, name), ignore_errors=True)
        try:
            self._kill_inside(name)
            self._ip(["netns", "delete", name])
            return True
        except FsmClusterError as e:
            try:
                if name not in listed(self._ip):
                    return True  # already gone
            except FsmClusterError:
                pass
            log.warning("hosts: could not delete network namespace %s: %s", name, e)
            return False

    def _kill_inside(self, name: str) -> None:
        """SIGKILL every process in namespace ``name`` until none is left (bounded: a process may
        fork while it is being killed)."""
        for _ in range(100):
            pids = [int(p) for p in self._ip(["netns", "pids", name]).split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
