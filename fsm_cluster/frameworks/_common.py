"""What the engine modules share: the rules both sides check, and small node-side helpers.

* Rules: :class:`RuleError` and the validators an engine's node side (reading its environment)
  and its spec builder (reading the YAML, on the laptop) both call — ports, process counts.
* Helpers: ports, interfaces, reachability, start options, engine launchers.

Nothing here imports an engine. Ports: a cluster on the loopback address (``fsm-cluster local``,
tests) may share the host with other clusters, so an unset port there means "a free one, picked
now"; on a real network the engine's well-known default is used so security rules can name it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import socket
import sys
import sysconfig
from typing import Mapping

from ..errors import NodeFailure, SettingsError

log = logging.getLogger(__name__)


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def free_port(ip: str) -> int:
    """A TCP port free on ``ip`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, 0))
        return s.getsockname()[1]


class RuleError(SettingsError):
    """An engine rule broken. The message names the variable(s) and reads the same on a node
    (a SettingsError) and in a spec, where the loader puts it at the YAML path of the first of
    ``names`` the spec sets."""

    def __init__(self, message: str, *names: str):
        super().__init__(message)
        self.names = names


def validate_count(name: str, value: str | None, minimum: int = 1) -> int | None:
    """A whole number >= ``minimum`` in variable ``name``; None when unset (empty)."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = None
    if count is None or count < minimum:
        raise RuleError(f"{name}: must be a whole number >= {minimum} (got {raw!r})", name)
    return count


def validate_port(name: str, value: str | None) -> int | None:
    """The port in variable ``name``: None when unset (empty), 0 for "pick a free one" (``0`` /
    ``auto``), else 1-65535."""
    raw = (value or "").strip().lower()
    if not raw:
        return None
    try:
        port = 0 if raw == "auto" else int(raw)
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        raise RuleError(f"{name}: not a port number (1-65535, or 0/auto for a free one): {value!r}", name)
    return port


def port_setting(environ: Mapping[str, str], name: str, default: int, ip: str) -> int:
    """The port in variable ``name`` (:func:`validate_port`); unset → ``default``, or a free port
    on a loopback node; ``0`` / ``auto`` → a free port."""
    port = validate_port(name, environ.get(name))
    if port == 0 or (port is None and is_loopback(ip)):
        return free_port(ip)
    return default if port is None else port


def int_setting(environ: Mapping[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    """The count in variable ``name`` (:func:`validate_count`); unset → ``default``."""
    value = validate_count(name, environ.get(name), minimum)
    return default if value is None else value


def start_args(environ: Mapping[str, str], name: str = "OCI__START_ARGS") -> list[str]:
    """OCI__START_ARGS split like a shell would (a quoting error names the variable)."""
    try:
        return shlex.split(environ.get(name) or "")
    except ValueError as e:
        raise SettingsError(f"{name}: cannot split {environ.get(name)!r} ({e})") from None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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


def scripts_dirs() -> list[str]:
    """Where this Python's environment keeps its console scripts: the interpreter's scripts
    directory and the directory of ``sys.executable`` (the same for a venv; ``/usr/local/bin`` and
    ``/usr/bin`` for Debian's system Python). A venv need not be activated (on PATH) to be used."""
    dirs = []
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def module_available(module: str) -> bool:
    """Whether ``python -m module`` would find the module, found without importing anything (a
    dotted name's parent packages, torch say, are not imported: only their paths are searched)."""
    from importlib.machinery import PathFinder

    path = None
    for part in module.split("."):
        spec = PathFinder.find_spec(part, path)
        if spec is None:
            return False
        path = spec.submodule_search_locations
    return True


def engine_command(program: str, extra: str, module: str) -> list[str]:
    """The command that starts the engine launcher ``program`` from this node's own Python
    environment, activated or not: the console script in :func:`scripts_dirs`, else
    ``sys.executable -m module`` (the launcher's module), else ``program`` on PATH. An engine that is
    not installed is a NodeFailure naming the extra to install.

    PATH itself is left alone: dask, torchrun, ray and horovodrun start their own processes with
    ``sys.executable``, and the entry script is run with it too (a ``.py``)."""
    import shutil

    for d in scripts_dirs():
        path = os.path.join(d, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return [path]
    if module_available(module):
        return [sys.executable, "-m", module]
    path = shutil.which(program)
    if path is not None:
        return [path]
    raise NodeFailure(f"{program} not found (not in {os.pathsep.join(scripts_dirs())}, no module {module} "
                      f"for {sys.executable}, not on PATH): pip install 'fsm_cluster[{extra}]'")

