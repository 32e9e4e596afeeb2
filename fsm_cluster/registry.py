"""ClusterProviderFactory: cluster type → provider class.

Built-in providers are named in ``BUILTIN`` (imported only when asked for); third-party ones come
from the entry-point group ``fsm_cluster.providers`` (``DASK = "pkg.module:Class"``) or from
``register``. A key of the form ``package.module:Class`` is imported directly.
"""

from __future__ import annotations

import importlib
import logging

from .errors import SettingsError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fsm_cluster.providers"

BUILTIN = {
    "COMMAND": "fsm_cluster.frameworks.command:CommandProvider",
    "DASK": "fsm_cluster.frameworks.dask:DaskProvider",
    "PYTORCH": "fsm_cluster.frameworks.pytorch:PyTorchProvider",
    "TENSORFLOW": "fsm_cluster.frameworks.tensorflow:TensorFlowProvider",
    "HOROVOD": "fsm_cluster.frameworks.horovod:HorovodProvider",
    "RAY": "fsm_cluster.frameworks.ray:RayProvider",
}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class ClusterProviderFactory:
    provider_registry: dict[str, type] = {}

    @classmethod
    def register(cls, cluster_type: str, provider_class: type) -> None:
        cls.provider_registry[cluster_type.upper()] = provider_class

    @classmethod
    def known(cls) -> list[str]:
        names = set(cls.provider_registry) | set(BUILTIN)
        names |= {ep.name.upper() for ep in _entry_points()}
        return sorted(names)

    @classmethod
    def get_provider_class(cls, key: str) -> type:
        k = (key or "COMMAND").strip()
        if ":" in k:
            try:
                return _load(k)
            except (ImportError, AttributeError) as e:
                raise SettingsError(f"OCI__CLUSTER_TYPE: cannot import provider {k!r} ({e})") from None
        k = k.upper()
        if k in cls.provider_registry:
            return cls.provider_registry[k]
        spec = BUILTIN.get(k)
        if spec is None:
            for ep in _entry_points():
                if ep.name.upper() == k:
                    spec = ep.value
                    break
        if spec is None:
            raise SettingsError(f"OCI__CLUSTER_TYPE: unknown cluster type {key!r} "
                                f"(known: {', '.join(cls.known())})")
        try:
            provider = _load(spec)
        except ImportError as e:
            extra = k.lower()
            raise SettingsError(f"OCI__CLUSTER_TYPE={k}: its engine is not installed ({e}); "
                                f"pip install 'fsm_cluster[{extra}]'") from None
        cls.provider_registry[k] = provider
        return provider

    @classmethod
    def get_provider(cls, key: str, *args, **kwargs):
        return cls.get_provider_class(key)(*args, **kwargs)


def _entry_points():
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # pragma: no cover - broken metadata must not stop a node
        log.exception("reading entry points %s", ENTRY_POINT_GROUP)
        return []
