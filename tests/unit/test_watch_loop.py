"""The running watch (node.drive._watch): a restart raised into recover_from itself — MAIN's answer
arriving over the channel before the node's own failure report returned — is taken next, and a
failure recover_from gives up ends the node."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fsm_cluster.errors import CodeFailed, RestartRequested
from fsm_cluster.node import drive as runner
from fsm_cluster.wire.models import RestartRecord


class Node:
    def __init__(self, answer_early: bool):
        self.looks = 0
        self.taken: list[str] = []
        self.answer_early = answer_early
        # what the watch asks of recovery: its flag, what it gave up, what it took (issue 24, M5)
        self.recovery = SimpleNamespace(held=False, gave_up=None, took=lambda e: False)

    def recover_from(self, e):
        self.taken.append(type(e).__name__)
        if isinstance(e, CodeFailed):
            if self.answer_early:  # the channel thread's interrupt lands here
                raise RestartRequested(RestartRecord(count=1, node="WORKER_a", reason="x"))
            self.recovery.gave_up = e
            raise e  # not retryable: given up


def test_a_restart_raised_into_recover_from_is_taken_next(monkeypatch):
    node = Node(answer_early=True)

    def look(p):
        p.looks += 1
        if p.looks == 1:
            raise CodeFailed("entry script exited with code 137", "WORKER_a", 137)
        return True

    monkeypatch.setattr(runner, "_watch_once", look)
    runner._watch(node)
    assert node.taken == ["CodeFailed", "RestartRequested"]


def test_a_failure_recover_from_gives_up_ends_the_watch(monkeypatch):
    node = Node(answer_early=False)

    def look(p):
        raise CodeFailed("entry script exited with code 1", "WORKER_a", 1)

    monkeypatch.setattr(runner, "_watch_once", look)
    with pytest.raises(CodeFailed):
        runner._watch(node)
    assert node.taken == ["CodeFailed"]
