"""Which spec builder a cluster kind gets, and whether the kind may have parameter servers.

The decision is :func:`fsm_cluster.registry.spec_builder` (one lookup for the whole package:
registered, built in, entry point); :class:`FrameworkSpecBuilderFactory` is the name the spec
loader and older code use over it, falling back to the no-op :class:`AbstractFrameworkSpecBuilder`.
The registry imports an engine only when its kind is asked for.
"""

from __future__ import annotations

from .. import registry as _registry
from ..errors import SpecError
from .builders import AbstractFrameworkSpecBuilder


class FrameworkSpecBuilderFactory:
    """Cluster kind → spec builder class: ``register``, the built-in engines' builders, the
    entry-point group ``fsm_cluster.spec_builders`` (``DASK = "pkg.module:Builder"``), else the
    no-op base builder (all decided by :func:`fsm_cluster.registry.spec_builder`)."""

    registry: dict[str, type] = _registry.SPEC_BUILDERS  # the registry's own dict, not a copy

    @classmethod
    def register(cls, kind: str, builder: type) -> None:
        _registry.register_spec_builder(kind, builder)

    @classmethod
    def get(cls, kind: str) -> type:
        return _registry.spec_builder(kind) or AbstractFrameworkSpecBuilder

    @classmethod
    def known(cls) -> list[str]:
        return _registry.spec_builder_kinds()

    @classmethod
    def accepts_ps(cls, kind: str) -> bool:
        return bool(getattr(cls.get(kind), "accepts_ps", False))

    @classmethod
    def kinds_with_ps(cls) -> list[str]:
        """The known kinds whose builder accepts parameter servers (one that cannot be loaded: not)."""
        out = []
        for kind in cls.known():
            try:
                if cls.accepts_ps(kind):
                    out.append(kind)
            except SpecError:
                continue
        return out
