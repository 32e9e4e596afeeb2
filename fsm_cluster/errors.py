"""Exceptions a user can cause end in one clear message; these types carry it."""

from __future__ import annotations


class FsmClusterError(Exception):
    """Base class: the message is meant for the user as is (no traceback needed)."""

    exit_code = 2


class SettingsError(FsmClusterError):
    """A missing or malformed environment variable (the message names it)."""


class ProtocolError(FsmClusterError):
    """A shared file in the work dir is missing a field, corrupt or of an unknown schema."""


class SignatureError(ProtocolError):
    """A shared file is unsigned or badly signed while the cluster has a secret: it was not
    written by a node of this cluster (forged, or left by another launch) and is refused."""


class StorageError(FsmClusterError):
    """The work dir could not be reached (after retries), or access was refused."""


class SpecError(FsmClusterError):
    """A cluster spec (YAML) is invalid; the message names the path and line."""


class NodeFailure(Exception):
    """Raised inside a node's life to move it to ``failed`` with ``reason``."""

    def __init__(self, reason: str, exit_code: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


class NodeLost(NodeFailure):
    """A peer's process died or froze (``node``): under a restart policy MAIN may replace it."""

    def __init__(self, reason: str, node: str):
        super().__init__(reason)
        self.node = node


class CodeFailed(NodeFailure):
    """An entry script exited non-zero (``node``'s; ``code``): under a restart policy the cluster's
    code may restart. ``after``: how many restarts the failed code ran after (None: not known) — a
    failure of code that a later restart already ended is no news."""

    def __init__(self, reason: str, node: str, code: int | None, after: int | None = None):
        super().__init__(reason)
        self.node, self.code, self.after = node, code, after


class RestartRequested(Exception):
    """MAIN restarts the cluster's code (``record``: a RestartRecord)."""

    def __init__(self, record):
        super().__init__(f"restart {record.count}: {record.reason}")
        self.record = record


class StopRequested(Exception):
    """Raised inside a node's life when the stop marker (or a signal, or the TTL) ends it."""

    def __init__(self, reason: str, exit_code: int = 0, outcome: str = "stopped", node: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code
        self.outcome = outcome
        self.node = node


class WaitTimeout(Exception):
    """``wait_until`` gave up."""
