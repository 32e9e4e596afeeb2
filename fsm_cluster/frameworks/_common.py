"""What the engine modules share: the rules both sides check, and small node-side helpers.

* Rules: :class:`RuleError` and the validators an engine's node side (reading its environment)
  and its spec builder (reading the YAML, on the laptop) both call — ports, process counts.
* Helpers: ports, interfaces, reachability, start options, engine launchers.

Nothing here imports an engine. Ports: a cluster on the loopback address (``fsm-cluster local``,
tests) may share the host with other clusters, so an unset port there means "a free one, picked
now"; on a real network the engine's well-known default is used so security rules can name it.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
from typing import Mapping

from ..errors import NodeFailure, SettingsError
from ..node.identity import interface_of, is_loopback  # noqa: F401 - the engines name them here
from ..runtime.process import scripts_dirs  # noqa: F401

log = logging.getLogger(__name__)


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


def setting(environ: Mapping[str, str], name: str, aliases: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(variable, value)`` of the variable that sets ``name``: ``name`` itself when it is set
    (not empty), else its oracle-ads alias (``aliases[name]``, the name oracle-ads and its images
    read) when that is set, else ``(name, "")``. The fsm name wins when both are set; the variable
    returned is the one a rule names when the value is bad."""
    for n in (name, (aliases or {}).get(name)):
        if n and (environ.get(n) or "").strip():
            return n, environ[n]
    return name, ""


def _checked(name: str, value: str | None, parse, expected: str | None = None):
    """``parse(value stripped)``, None when unset (empty). A ValueError from ``parse`` is a
    RuleError naming the variable: ``<name>: <expected>`` (``{raw}`` / ``{value}`` in it are the
    stripped / given value), or the ValueError's own words."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        return parse(raw)
    except ValueError as e:
        raise RuleError(f"{name}: {expected.format(raw=raw, value=value) if expected else e}", name) from None


def _at_least(minimum: int, parse=int):
    def check(raw: str):
        v = parse(raw)
        if not v >= minimum:
            raise ValueError(raw)
        return v
    return check


def validate_count(name: str, value: str | None, minimum: int = 1) -> int | None:
    """A whole number >= ``minimum`` in variable ``name``; None when unset (empty)."""
    return _checked(name, value, _at_least(minimum), f"must be a whole number >= {minimum} (got {{raw!r}})")


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port < 65536:
        raise ValueError(raw)
    return port


def validate_port(name: str, value: str | None) -> int | None:
    """The port in variable ``name``: None when unset (empty), 0 for "pick a free one" (``0`` /
    ``auto``), else 1-65535."""
    return _checked(name, value, lambda raw: 0 if raw.lower() == "auto" else _port(raw),
                    "not a port number (1-65535, or 0/auto for a free one): {value!r}")


def _port_range(raw: str) -> str:
    ports = [_port(p) for p in raw.split(":")]
    if len(ports) > 2 or 0 in ports or ports != sorted(ports):
        raise ValueError(raw)
    return ":".join(map(str, ports))


def validate_port_range(name: str, value: str | None) -> str | None:
    """A port (1-65535) or a range ``low:high`` of them in variable ``name`` (Dask's
    ``--worker-port`` / ``--nanny-port`` syntax, what oracle-ads' specs set), normalised; None when
    unset (empty)."""
    return _checked(name, value, _port_range, "not a port (1-65535) or a port range low:high: {value!r}")


def validate_seconds(name: str, value: str | None) -> float | None:
    """A duration in variable ``name`` (seconds, or ``45s`` / ``30m`` / ``2h``), finite and >= 0,
    as seconds; None when unset (empty)."""
    import math

    from ..clock import parse_duration

    def finite(raw: str) -> float:
        seconds = parse_duration(raw)
        if not math.isfinite(seconds):
            raise ValueError(raw)
        return seconds

    return _checked(name, value, _at_least(0, finite), "not a duration (seconds, or e.g. 45s, 30m, 2h): {value!r}")


def validate_flag(name: str, value: str | None) -> bool | None:
    """On/off in variable ``name`` (1/0, true/false, yes/no, on/off: ``env.parse_bool``); None
    when unset (empty)."""
    from ..env import parse_bool

    return _checked(name, value, parse_bool)


def port_setting(environ: Mapping[str, str], name: str, default: int, ip: str) -> int:
    """The port in variable ``name`` (:func:`validate_port`); unset → ``default``, or a free port
    on a loopback node; ``0`` / ``auto`` → a free port."""
    port = validate_port(name, environ.get(name))
    if port == 0 or (port is None and is_loopback(ip)):
        return free_port(ip)
    return default if port is None else port


def int_setting(environ: Mapping[str, str], name: str, default: int | None, minimum: int = 1,
                aliases: Mapping[str, str] | None = None) -> int | None:
    """The count in variable ``name`` or its alias (:func:`setting`, :func:`validate_count`);
    unset → ``default``."""
    value = validate_count(*setting(environ, name, aliases), minimum)
    return default if value is None else value


def start_args(environ: Mapping[str, str], name: str = "OCI__START_ARGS",
               aliases: Mapping[str, str] | None = None) -> list[str]:
    """OCI__START_ARGS (or its alias, :func:`setting`) split like a shell would (a quoting error
    names the variable)."""
    used, value = setting(environ, name, aliases)
    try:
        return shlex.split(value)
    except ValueError as e:
        raise RuleError(f"{used}: cannot split {value!r} ({e})", used) from None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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

