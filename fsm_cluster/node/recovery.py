"""Recovery: whether a failure restarts the cluster's code instead of ending the cluster.

Kubeflow's run policy, per cluster: ``restartPolicy`` (per role) decides whether a failure is
retryable — ``Never`` (fsm_cluster's and oracle-ads' behaviour: any failure ends the cluster),
``OnFailure`` (any), ``ExitCode`` (exit codes 128+ and signals — preemption, OOM kills, kill -9 —
are retryable; 1–127 are the program's own verdict, permanent); ``backoffLimit`` bounds the
restarts of the whole cluster; ``activeDeadlineSeconds`` its whole life. MAIN alone decides (one
budget), records every restart in its state file (``restarts``: when, which node, why) and tells
every node; launchers (``fsm-cluster local``, ``fsm-cluster submit --watch``) replace a lost node
with a new one carrying ``OCI__REPLACES``.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("Never", "OnFailure", "ExitCode")
PERMANENT_BELOW = 128  # ExitCode policy: 1..127 are permanent


def retryable(policy: str, exit_code: int | None) -> bool:
    """Whether a failure with ``exit_code`` may be retried under ``policy``. ``None``: the node
    itself was lost (its process died or froze) — a signal from outside, retryable unless Never.
    A negative code is Popen's "killed by signal N"."""
    if policy == "OnFailure":
        return True
    if policy == "ExitCode":
        return exit_code is None or exit_code < 0 or exit_code >= PERMANENT_BELOW
    return False


@dataclass(frozen=True)
class Budget:
    """The cluster's restart budget: ``limit`` restarts (backoffLimit), a ``deadline`` in seconds
    of the life (activeDeadlineSeconds; 0: none)."""

    limit: int
    deadline: float = 0.0

    def refusal(self, restarts_so_far: int, life_seconds: float) -> str | None:
        """Why one more restart is refused (None: allowed)."""
        if self.deadline and life_seconds >= self.deadline:
            return f"activeDeadlineSeconds {self.deadline:g} exceeded"
        if restarts_so_far >= self.limit:
            return f"backoffLimit {self.limit} exceeded"
        return None

    def past_deadline(self, life_seconds: float) -> bool:
        return bool(self.deadline) and life_seconds >= self.deadline
