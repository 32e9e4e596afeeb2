"""The messages of the control channel: one pydantic model per ``type``, strict (``extra`` is
forbidden), validated straight from the frame's JSON bytes.

A node sends :data:`ClientMessage` (``register`` first, then ``ping``/``outcome``/``bye``); MAIN
sends :data:`ServerMessage` (``roster``, ``pong``, ``outcome``, ``bye``). A message of the wrong
direction is invalid like any other. Field types are the shared files' (:mod:`fsm_cluster.wire.models`):
a node name over the channel obeys the same rules as in the work dir.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, model_validator

from ..models import ConfigName, Identifier, NodeName, Outcome, RosterEntry, StopMarker

_Text = Annotated[str, Field(max_length=4096)]
_Life = Annotated[str, Field(max_length=64)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Register(_Message):
    """A WORKER/PS says who it is; the first message on every connection, and only then."""

    type: Literal["register"] = "register"
    node: NodeName
    mode: Literal["WORKER", "PS"]
    run_id: Identifier
    rank: int | None = Field(default=None, ge=0)
    ip: Annotated[str, Field(max_length=255)]
    host: Annotated[str, Field(max_length=255)] = ""
    life: _Life = ""  # the MAIN life the node joins ("" = not known yet)

    @model_validator(mode="after")
    def _name_matches(self) -> "Register":
        if self.node != f"{self.mode}_{self.run_id}":
            raise ValueError(f"node {self.node!r} is not {self.mode}_<run_id> for run_id {self.run_id!r}")
        return self


class Roster(_Message):
    """MAIN's roster (every node in rank order) once all expected nodes registered; ``env`` may
    carry MAIN's exported variables (what ``MAIN_config.json`` holds) so a node needs no read."""

    type: Literal["roster"] = "roster"
    life: _Life = ""
    entries: list[RosterEntry]
    env: dict[ConfigName, JsonValue] = Field(default_factory=dict)


class Ping(_Message):
    type: Literal["ping"] = "ping"
    seq: int = Field(ge=0)


class Pong(_Message):
    type: Literal["pong"] = "pong"
    seq: int = Field(ge=0)


class OutcomeMsg(_Message):
    """The cluster's outcome as the sender knows it: from MAIN the decided outcome (the stop
    marker's), from a node its own end (``node`` must be the sender's registered name)."""

    type: Literal["outcome"] = "outcome"
    outcome: Outcome
    node: Identifier
    reason: _Text = ""
    exit_code: int = 0
    life: _Life = ""

    @classmethod
    def from_marker(cls, marker: StopMarker) -> "OutcomeMsg":
        return cls(outcome=marker.outcome, node=marker.node, reason=marker.reason[:4096],
                   exit_code=marker.exit_code, life=marker.life)

    def to_marker(self) -> StopMarker:
        return StopMarker(outcome=self.outcome, node=self.node, reason=self.reason, exit_code=self.exit_code,
                          life=self.life)


class FailureMsg(_Message):
    """A node's own code failed under a restart policy that allows a retry: MAIN decides whether
    the cluster restarts its code (``node`` must be the sender's registered name)."""

    type: Literal["failure"] = "failure"
    node: Identifier
    exit_code: int | None = None
    reason: _Text = ""
    after: int | None = Field(None, ge=0)  # the restarts the failed code ran after (a late one is no news)


class RestartMsg(_Message):
    """MAIN restarts the cluster's code (restart ``count``), caused by ``node``; ``waiting_for``:
    a lost node MAIN waits to see replaced before the code runs again ("" = at once)."""

    type: Literal["restart"] = "restart"
    count: int = Field(ge=1)
    node: Identifier
    reason: _Text = ""
    exit_code: int | None = None
    waiting_for: Annotated[str, Field(max_length=255)] = ""
    life: _Life = ""


class QuietMsg(_Message):
    """A node's stall watchdog (OCI__STALL_TIMEOUT): its code has been quiet since ``since`` (wall
    time) for the timeout, or ended (``ended``); ``since`` None: active again."""

    type: Literal["quiet"] = "quiet"
    node: Identifier
    since: float | None = Field(default=None, allow_inf_nan=False)
    ended: bool = False


class DoneMsg(_Message):
    """A node's code completed (its ``<node>_done`` file says the same, for the record)."""

    type: Literal["done"] = "done"
    node: Identifier
    life: _Life = ""


class DumpMsg(_Message):
    """MAIN asks every node for the stacks of its running code (``fsm-cluster dump``)."""

    type: Literal["dump"] = "dump"
    id: Annotated[str, Field(max_length=64)]


class Bye(_Message):
    """The sender ends the connection on purpose (``reason`` says why); no loss is reported."""

    type: Literal["bye"] = "bye"
    reason: _Text = ""
    # MAIN to a node it declared lost (no ping within the timeout: frozen, or unreachable): a node
    # that reads it later (thawed) fails as the lost node, not as if MAIN had died.
    lost: bool = False


ClientMessage = Annotated[Union[Register, Ping, OutcomeMsg, FailureMsg, QuietMsg, DoneMsg, Bye],
                          Field(discriminator="type")]
ServerMessage = Annotated[Union[Roster, Pong, OutcomeMsg, RestartMsg, DumpMsg, Bye], Field(discriminator="type")]
Message = Union[Register, Roster, Ping, Pong, OutcomeMsg, FailureMsg, QuietMsg, DoneMsg, RestartMsg, DumpMsg, Bye]

CLIENT_MESSAGE: TypeAdapter = TypeAdapter(ClientMessage)
SERVER_MESSAGE: TypeAdapter = TypeAdapter(ServerMessage)


def encode(msg: _Message) -> bytes:
    """The JSON body of one frame (``type`` included)."""
    return msg.__pydantic_serializer__.to_json(msg)
