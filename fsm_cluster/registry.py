"""Cluster kind → class: the node's provider (:class:`ClusterProviderFactory`) and the spec
builder a spec of that kind gets on the laptop (:func:`spec_builder`) — both found the same way
(:func:`lookup`), and this module is the one place that decides either.

Built-in engines are named in ``BUILTIN`` / ``BUILTIN_SPEC_BUILDERS`` (each engine's module holds
both; imported only when asked for); third-party ones come from the entry-point groups
``fsm_cluster.providers`` / ``fsm_cluster.spec_builders`` (``DASK = "pkg.module:Class"``, read
by :func:`load_group`) or from ``register`` / :func:`register_spec_builder`. A provider key
``package.module:Class`` is imported directly. :func:`known_cluster_kinds` is every kind a spec may
name. (``fsm_cluster.jobspec.FrameworkSpecBuilderFactory`` is a name over the spec builder lookup.)
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Mapping

from .errors import SettingsError, SpecError

log = logging.getLogger(__name__)

PROVIDERS_GROUP = "fsm_cluster.providers"
SPEC_BUILDERS_GROUP = "fsm_cluster.spec_builders"

BUILTIN = {
    "COMMAND": "fsm_cluster.frameworks.command:CommandProvider",
    "DASK": "fsm_cluster.frameworks.dask:DaskProvider",
    "PYTORCH": "fsm_cluster.frameworks.pytorch:PyTorchProvider",
    "TENSORFLOW": "fsm_cluster.frameworks.tensorflow:TensorFlowProvider",
    "HOROVOD": "fsm_cluster.frameworks.horovod:HorovodProvider",
    "RAY": "fsm_cluster.frameworks.ray:RayProvider",
}
BUILTIN_SPEC_BUILDERS = {
    "DASK": "fsm_cluster.frameworks.dask:DaskSpecBuilder",
    "PYTORCH": "fsm_cluster.frameworks.pytorch:PyTorchSpecBuilder",
    "TENSORFLOW": "fsm_cluster.frameworks.tensorflow:TensorFlowSpecBuilder",
    "HOROVOD": "fsm_cluster.frameworks.horovod:HorovodSpecBuilder",
    "RAY": "fsm_cluster.frameworks.ray:RaySpecBuilder",
}


def builtin_provider(cls: type) -> bool:
    """Whether ``cls`` is one of fsm_cluster's own providers (an engine of ``BUILTIN``, the base),
    not a user's (an oracle-ads-style provider, an entry point's, ``module:Class``)."""
    return getattr(cls, "__module__", "").split(".")[0] == "fsm_cluster"


def load_group(group: str) -> dict[str, EntryPoint]:
    """The installed entry points of ``group`` by upper-case name (unreadable metadata: none,
    logged — it must not stop a node or a spec)."""
    try:
        return {ep.name.upper(): ep for ep in entry_points(group=group)}
    except Exception:  # pragma: no cover - broken metadata
        log.exception("reading entry points %s", group)
        return {}


def lookup(kind: str, builtin: Mapping[str, str], group: str) -> str | None:
    """``"module:Class"`` of cluster kind ``kind`` (upper case): built in, else the group's entry
    point; None when neither names it."""
    if kind in builtin:
        return builtin[kind]
    ep = load_group(group).get(kind)
    return None if ep is None else ep.value


def known_kinds(builtin: Mapping[str, str], group: str) -> set[str]:
    return set(builtin) | set(load_group(group))


def import_object(spec: str):
    """``"package.module:Class"`` → the object (parsed and imported as an entry point is)."""
    return EntryPoint(name=spec, value=spec, group="").load()


class ClusterProviderFactory:
    # oracle-ads' name: kinds registered (upper case) and built-ins loaded so far
    provider: dict[str, type] = {}

    @classmethod
    def register(cls, cluster_type: str, provider_class: type) -> None:
        cls.provider[cluster_type.upper()] = provider_class

    @classmethod
    def known(cls) -> list[str]:
        return sorted(set(cls.provider) | known_kinds(BUILTIN, PROVIDERS_GROUP))

    @classmethod
    def get_provider_class(cls, key: str) -> type:
        k = (key or "COMMAND").strip()
        if ":" in k:
            try:
                return import_object(k)
            except (ImportError, AttributeError, ValueError) as e:
                raise SettingsError(f"OCI__CLUSTER_TYPE: cannot import provider {k!r} ({e})") from None
        k = k.upper()
        if k in cls.provider:
            return cls.provider[k]
        spec = lookup(k, BUILTIN, PROVIDERS_GROUP)
        if spec is None:
            raise SettingsError(f"OCI__CLUSTER_TYPE: unknown cluster type {key!r} "
                                f"(known: {', '.join(cls.known())})")
        try:
            provider = import_object(spec)
        except ImportError as e:
            extra = k.lower()
            raise SettingsError(f"OCI__CLUSTER_TYPE={k}: its engine is not installed ({e}); "
                                f"pip install 'fsm_cluster[{extra}]'") from None
        cls.provider[k] = provider
        return provider

    @classmethod
    def get_provider(cls, key: str, *args, **kwargs):
        return cls.get_provider_class(key)(*args, **kwargs)


# Spec builders registered (upper case) and loaded so far (FrameworkSpecBuilderFactory.registry).
SPEC_BUILDERS: dict[str, type] = {}


def register_spec_builder(kind: str, builder: type) -> None:
    SPEC_BUILDERS[kind.strip().upper()] = builder


def spec_builder(kind: str) -> type | None:
    """The spec builder class of cluster kind ``kind`` (any case): registered, built in, else the
    entry point's; None when none is named (the kind's specs need no builder). One that cannot be
    imported → SpecError."""
    k = (kind or "").strip().upper()
    if k in SPEC_BUILDERS:
        return SPEC_BUILDERS[k]
    spec = lookup(k, BUILTIN_SPEC_BUILDERS, SPEC_BUILDERS_GROUP)
    if spec is None:
        return None
    try:
        builder = import_object(spec)
    except Exception as e:
        raise SpecError(f"spec builder for {k} ({spec}) cannot be loaded: {e}") from None
    SPEC_BUILDERS[k] = builder
    return builder


def spec_builder_kinds() -> list[str]:
    """The kinds that have a spec builder (registered, built in or an entry point)."""
    return sorted(set(SPEC_BUILDERS) | known_kinds(BUILTIN_SPEC_BUILDERS, SPEC_BUILDERS_GROUP))


def known_cluster_kinds() -> list[str]:
    """Every cluster kind a spec may name: those with a provider or a spec builder."""
    return sorted(set(ClusterProviderFactory.known()) | set(spec_builder_kinds()))
