"""One node to start (:class:`NodePlan`): what a spec's converter and the local launcher's flags
both produce, and what the local launcher starts. Kept apart from the spec's models so that a
launch from flags never loads them."""

from __future__ import annotations

from dataclasses import dataclass

from ..env import JOB_RUN_OCID


@dataclass(frozen=True)
class NodePlan:
    """One node to start: its name (a spec's run name; once ``fsm-cluster local`` has finalized
    the plan, the display name, log name and run id: ``worker-1``), mode, rank and environment."""

    name: str
    mode: str
    rank: int
    env: dict[str, str]

    @property
    def node_id(self) -> str:
        """ADS file-name stem: ``MAIN`` or ``<mode>_<JOB_RUN_OCID>`` (set when finalized)."""
        return "MAIN" if self.mode == "MAIN" else f"{self.mode}_{self.env[JOB_RUN_OCID]}"
