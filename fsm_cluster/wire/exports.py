"""What a node takes from a configuration file nobody vouches for (a cluster without a secret).

Unsigned, anyone who can write the work dir can write ``MAIN_config.json``; a denylist of names
(:func:`~fsm_cluster.wire.models.is_hijack_name`) is always one name short. :class:`UnsignedExports`
lets such a file's variables through by name (declared ones, this node's own, an address's) and
by the type of their value (MAIN's address, the roster's, a count, a number, a flag, a plain word),
never a name that loads code or names a path (README: "What an unsigned cluster trusts").
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from dataclasses import dataclass

# Names that load code or name a path never pass (a substring anywhere in the name, any case).
_CODE_OR_PATH_RE = re.compile(r"PATH|DIR|HOME|FILE|CONF|PRELOAD|PLUGIN|HOOK|LIB|MODULE|CMD|COMMAND|EXEC|SCRIPT|"
                              r"AGENT|OPT|ARGS|FLAGS|ENDPOINT|URL|URI|PROXY|INJECT|IFNAME|SOCK|PROFILE|CACHE|"
                              r"SHELL|TMP|TEMP|LOG|CERT|KEY|TOKEN|SECRET|PASSW|CRED", re.IGNORECASE)
ADDRESS_NAME_RE = re.compile(r"(?:^|_)(?:IP|ADDR|ADDRESS|HOST)$", re.IGNORECASE)  # SCHEDULER_IP, MASTER_ADDR…
_NUMBER_RE = re.compile(r"^-?\d{1,18}(?:\.\d{1,18})?$")
_BOOLS = frozenset({"true", "false", "True", "False", "TRUE", "FALSE"})
_WORD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,254}$")  # a name, an OCID, a version: no / , or space
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]{0,15}://(.+)$")  # scheme://host:port (no path)


@dataclass(frozen=True)
class UnsignedExports:
    """Which of an unsigned configuration's variables a node takes (see the README's trust section).

    By name: one ``declared`` (fnmatch patterns: fsm_cluster's BASE_EXPORTS, the engine's EXPORTS,
    OCI__EXPORTS), one this node's ``own`` provider put in its registration (oracle-ads' providers:
    ``nprocs``, ``OCI__WORKER_IP``…), or an address's (``…_IP``, ``…_ADDR``, ``…_ADDRESS``,
    ``…_HOST``: the names oracle-ads' MAIN alone writes, ``SCHEDULER_IP``, ``MASTER_ADDR``); never a
    name that loads code or names a path. By value: an address (an address name's always) is MAIN's
    published address (``main``) — bare, ``host:port`` or ``scheme://host:port``; a list of
    addresses or a JSON layout names the ``roster``'s nodes; anything else is a count, a number, a
    flag or a plain word (no ``/``, no spaces: never a path, a command or code)."""

    declared: tuple[str, ...]
    own: frozenset[str]
    main: str
    roster: frozenset[str]

    def refusal(self, name: str, value: str) -> str | None:
        """Why ``name=value`` is not taken (None: taken)."""
        if _CODE_OR_PATH_RE.search(name):
            return "a name that loads code or names a path"
        address = bool(ADDRESS_NAME_RE.search(name))
        if not (address or name in self.own or any(fnmatch.fnmatchcase(name, p) for p in self.declared)):
            return "a name neither this node's provider, fsm_cluster, the engine nor OCI__EXPORTS declares"
        if address:
            return None if self._at(value, {self.main}) else f"{_short(value)} is not MAIN's address ({self.main})"
        return self._value(value)

    def _value(self, v: str) -> str | None:
        if v == "" or _NUMBER_RE.match(v) or v in _BOOLS or self._at(v, {self.main}):
            return None
        if _addressy(v):
            return f"{_short(v)} is not MAIN's address ({self.main})"
        if v[:1] in "{[":
            try:
                leaves = list(_leaves(json.loads(v)))
            except (ValueError, RecursionError):
                return f"{_short(v)} is not JSON"
            bad = next((x for x in leaves if not (self._at(x, self.roster) or (_WORD_RE.match(x) and not _addressy(x)))),
                       None)
            return None if bad is None else f"{_short(bad)} in its JSON is not an address of the roster or a plain word"
        if "," in v:
            bad = next((x for x in v.split(",") if not (self._at(x.strip(), self.roster) or _NUMBER_RE.match(x))), None)
            return None if bad is None else f"{_short(bad)} in its list is not an address of the roster"
        if _WORD_RE.match(v):
            return None
        return f"{_short(v)} is not a count, a number, a flag, an address or a plain word"

    @staticmethod
    def _at(v: str, hosts: set | frozenset) -> bool:
        """``v`` is one of ``hosts``: bare, ``host:port`` or ``scheme://host:port``."""
        m = _URL_RE.match(v)
        if m:
            v = m.group(1)
            if "/" in v:
                return False
        if v in hosts:
            return not m
        host, sep, port = v.rpartition(":")
        return bool(sep) and port.isdigit() and 0 < int(port) < 65536 and host.strip("[]") in hosts


def _addressy(v: str) -> bool:
    """An IP address, ``host:port`` or a URL: what an address check must pass."""
    if _URL_RE.match(v):
        return True
    host, sep, port = v.rpartition(":")
    if sep and port.isdigit() and host:
        return True
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _leaves(doc):
    """Every string of a JSON document (keys included)."""
    if isinstance(doc, dict):
        for k, x in doc.items():
            yield str(k)
            yield from _leaves(x)
    elif isinstance(doc, list):
        for x in doc:
            yield from _leaves(x)
    elif isinstance(doc, str):
        yield doc


def _short(v: str) -> str:
    return repr(v if len(v) <= 60 else v[:57] + "...")
