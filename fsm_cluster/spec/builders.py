"""Framework spec builders: what an engine adds to a spec on the laptop (never on a node).

:class:`AbstractFrameworkSpecBuilder` is the seed's (oracle-ads') base class; each engine module in
:mod:`fsm_cluster.frameworks` subclasses it, so this module imports neither the engines nor the
registry. :func:`update_env_vars` sets variables in the spec's runtime env; a builder's finding at
one YAML path is a :class:`SpecFieldError`. Which builder a cluster kind gets is
:mod:`fsm_cluster.spec.kinds`.
"""

from __future__ import annotations

from abc import ABCMeta
from typing import Mapping

from ..errors import SpecError
from .reading import Path, format_path, scalar_text


def update_env_vars(config: dict, env_vars: list[dict]) -> dict:
    """Set ``env_vars`` (``[{"name": "X", "value": ...}]``) in the spec's runtime env.

    ``config`` is the spec as a dict (``kind: distributed``); a name already present is replaced,
    others are appended. The runtime env goes into the job definition. Returns ``config``.
    """
    for item in env_vars:
        if not isinstance(item, Mapping) or "name" not in item:
            raise SpecError(f"update_env_vars: expected {{'name': ..., 'value': ...}}, got {item!r}")
    spec = config.setdefault("spec", {})
    runtime = spec.get("runtime") or {}
    spec["runtime"] = runtime
    rspec = runtime.get("spec") or {}
    runtime["spec"] = rspec
    env = list(rspec.get("env") or [])
    index = {e.get("name"): i for i, e in enumerate(env) if isinstance(e, Mapping)}
    for item in env_vars:
        entry = {"name": str(item["name"]), "value": scalar_text(item.get("value"))}
        if entry["name"] in index:
            env[index[entry["name"]]] = entry
        else:
            index[entry["name"]] = len(env)
            env.append(entry)
    rspec["env"] = env
    return config


class SpecFieldError(SpecError):
    """A spec builder's finding at one YAML path; the loader adds the file name and the line."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{format_path(path)}: {message}")
        self.path = tuple(path)
        self.message = message


class AbstractFrameworkSpecBuilder(metaclass=ABCMeta):
    """Adds a framework's environment variables to a spec (on the laptop, never on a node).

    ``config`` is the spec as a dict. Subclasses override ``_add_framework_envs(new_env_vars)``
    (the seed's hook) and return the list with their ``{"name", "value"}`` items added. Variables
    the user already set (runtime env or cluster ``config.env``) win over the builder's. A problem
    with one YAML path is a :class:`SpecFieldError` (``load_spec`` names the file and line).
    Set ``accepts_ps = True`` for a framework that uses parameter servers.
    """

    accepts_ps = False

    def __init__(self, config: dict):
        self.config = config
        self.changed = False

    def update(self) -> dict:
        added = self._add_framework_envs([])
        if not added:
            return self.config
        user = set(self._user_env_names())
        added = [e for e in added if e.get("name") not in user]
        self.changed = bool(added)
        return update_env_vars(self.config, added)

    def _add_framework_envs(self, new_env_vars: list) -> list:
        """Override: append the framework's variables to ``new_env_vars`` and return it."""
        return new_env_vars

    def _user_env_names(self):
        spec = self.config.get("spec") or {}
        cluster = ((spec.get("cluster") or {}).get("spec") or {})
        runtime = (spec.get("runtime") or {}).get("spec") or {}
        for items in ((cluster.get("config") or {}).get("env"), runtime.get("env")):
            for e in items or []:
                if isinstance(e, Mapping):
                    yield e.get("name")
