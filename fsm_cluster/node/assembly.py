"""The one place that sees a provider whole: it builds the node's parts and wires each to the few
values and callables it needs (the provider's hooks among them, so a subclass's override is the
one called). No part holds the provider.

Built in this order (each from those before it): the process group, the work dir, rendezvous,
the watch, the restart ledger, the machine's model (:class:`~.lifecycle.Life`), the dispatcher,
the control channel, the code process, stacks dumps, the record, the ending, recovery, the pulse,
the formation and the adoption of an oracle-ads-shaped runner.
"""

from __future__ import annotations

from ..wire.control import Control
from ..wire.events import Event, Kind, Source
from ..wire.models import RosterEntry, StopMarker
from ..wire.rendezvous import Rendezvous
from ..wire.watch import ClusterWatch
from ..wire.workdir import WorkDir
from .adoption import Adoption
from .code import CodeProcess
from .decisions import CodeState, Situation
from .dispatch import Dispatcher
from .ending import EndOfLife
from .formation import Formation
from .lifecycle import Life
from .pulse import Pulse
from .record import StateRecord
from .recovery import Recovery, RestartLedger


def assemble(p, fs) -> None:
    """Give provider ``p`` its parts (attributes of the same names)."""
    s, clock, main = p.settings, p.clock, p.mode == "MAIN"
    simulated = getattr(clock, "simulated", True) is not False
    me = RosterEntry(node=p.node_id, mode=p.mode, run_id=p.run_id, rank=0 if main else (s.rank or 0),
                     ip=p.ip, host=p.host)
    options = None
    if s.work_dir.startswith("oci://"):  # ocifs wants the node's OCI auth (nothing else does)
        from ..runtime.oci_auth import storage_options

        options = storage_options(s.work_dir, p.authinfo)
    p.workdir = WorkDir(s.work_dir, s.cluster_id, fs=fs, storage_options=options, clock=clock,
                        retry_budget=s.storage_retry_budget, secret=s.cluster_secret or None)
    p.rendezvous = rv = Rendezvous(p.workdir, p.node_id, p.mode)
    p.ledger = ledger = RestartLedger(known=lambda: _known_restarts(rv))
    p.watch = watch = ClusterWatch(node_id=p.node_id, mode=p.mode, workdir=p.workdir, clock=clock,
                                   interval=s.heartbeat_interval, timeout=s.heartbeat_timeout, rendezvous=rv,
                                   pace=lambda: p.control.pace(), restarts_seen=lambda: ledger.seen)
    p.lifecycle = life = Life(p, p.node_id, on_event=lambda e: p.end_of_life.take_carried(e),
                              on_enter=lambda e: _entered(p, e),
                              on_exception=lambda e: p.end_of_life.hook_failed(e), skip=lambda h: p.adoption.skip(h))
    stall: dict = {}  # the stall watchdog, once made
    code = p.code = CodeProcess(s, p.children, lambda make=True: _watchdog(p, make, stall))

    def situation() -> Situation:
        state = life.state
        now = CodeState.RUNNING if code.running(state, life.running_hook) else CodeState.FAILED if code.failed() \
            else CodeState.DONE if p.code_execution_complete else CodeState.NONE
        return Situation(state, ended=p.end_of_life.ending is not None, code=now, runs_code=p.runs_code(),
                         restarts_seen=ledger.seen, members=_Members(rv), beating=_Beating(watch), main=main)

    p.dispatcher = dispatcher = Dispatcher(
        p.node_id, clock, situation=situation, learn_marker=watch.learn, saw_restart=ledger.saw,
        dump=lambda request: p.dumps.dump(request), answered=lambda request: p.dumps.mark(request),
        end_children=lambda: p.children.terminate_all(s.teardown_grace),
        interruptible=lambda: not p.adoption.by_runner, ended=lambda: p.end_of_life.ending is not None,
        timeout=s.heartbeat_timeout)
    p.control = control = Control(me, s, clock, p.workdir, rv, dispatch=dispatcher.from_afar,
                                  wake=lambda: p.pulse.wake(), look=lambda listing: p.observe(listing), listing=lambda: watch.listing,
                                  quiet=lambda node, since, ended: _note_quiet(p, node, since, ended, stall))
    from ..runtime.stacks import Dumps

    p.dumps = Dumps(p.node_id, p.workdir, code=lambda: code.process, faulthandler_dir=code.faulthandler_dir,
                    broadcast=control.broadcast_dump, changed=watch.changed)
    p.record = StateRecord(p.node_id, clock, simulated=simulated, interval=s.heartbeat_interval,
                           fields=lambda: _state_fields(p), flush=lambda: p.flush_state(), changed=watch.changed,
                           ending=lambda: p.end_of_life.ending)
    p.end_of_life = EndOfLife(p.node_id, main, life, watch, announce=control.announce, flush=lambda: p.flush_state(),
                              end_children=lambda: p.children.terminate_all(s.teardown_grace),
                              marker=lambda outcome, reason, code_: StopMarker(
                                  outcome=outcome, node=p.node_id, reason=reason, exit_code=code_, wall=clock.wall(),
                                  life=p.life, restarts=list(ledger.records)),
                              closers=[control.close, code.close])
    p.recovery = Recovery(node_id=p.node_id, main=main, elastic=type(p).ELASTIC, clock=clock, settings=s, ledger=ledger,
                          life=life, rendezvous=rv, watch=watch, control=control, flush_state=lambda: p.flush_state(),
                          members_changed=lambda: p.members_changed(),
                          wait_until=lambda *a, **k: p.wait_until(*a, **k),
                          look=lambda: p.observe(p.workdir.listing()), taken=dispatcher.taken)
    p.pulse = Pulse(node_id=p.node_id, main=main, clock=clock, settings=s, watch=watch, dispatcher=dispatcher,
                    control=control, recovery=p.recovery, dumps=p.dumps, rendezvous=rv, state=lambda: life.state,
                    flush=lambda: p.flush_state(), check_engine=lambda: p.check_engine(), code_popen=lambda: code.popen(life.state),
                    next_tick=lambda: p.seconds_to_next_tick())
    p.formation = Formation(me, s, clock, rv, watch, control, environ=p.environ, restarts=lambda: ledger.count,
                            joined=ledger.joined_at)

    def form() -> None:
        from .drive import form as form_life

        form_life(p)

    p.adoption = Adoption(p.node_id, main, p.ephemeral, life=life, pulse=p.pulse, dispatcher=dispatcher,
                          end=p.end_of_life, form=form, failed=lambda: p.execution_failure)


class _Members:
    """The roster's nodes for :class:`Situation`, asked one at a time (``node in members``, as
    :func:`~.decisions.decide` does) when an event needs it: no set of N nodes made per event."""

    def __init__(self, rendezvous):
        self._rv = rendezvous

    def __contains__(self, node) -> bool:
        return any(r.node == node for r in self._rv.roster)


class _Beating:
    """The peers whose heart beats (see :meth:`ClusterWatch.beating`), asked one at a time."""

    def __init__(self, watch):
        self._watch = watch

    def __contains__(self, node) -> bool:
        return self._watch.is_beating(node)


def _entered(p, event) -> None:
    """After every state change: the record (log line, history, state file), then the provider's hook."""
    life = p.lifecycle
    p.record.on_enter(event, life.state, life.previous, p.end_of_life.reason)
    p.state_changed(life.state)


def _known_restarts(rv) -> int:
    known = (rv.main_config.extra or {}).get("restarts", 0) if rv.main_config is not None else 0
    return known if isinstance(known, int) else 0


def _state_fields(p) -> dict:
    """What the state file says that the record does not keep itself."""
    main = p.mode == "MAIN"
    dog = p.code.watchdog(make=False)
    return dict(node=p.node_id, mode=p.mode, run_id=p.run_id, state=p.state, reason=p.reason,
                heartbeat=p.watch.heartbeat, host=p.host, ip=p.ip, exit_code=p.exit_code, stop=p.watch.stop_marker,
                life=p.life, control=p.formation.control_address or "", restarts=list(p.ledger.records) if main else [],
                dump=p.dumps.request if main else "", quiet_since=dog.quiet_since() if dog is not None else None)


def _watchdog(p, make: bool, stall: dict):
    """The stall watchdog (OCI__STALL_TIMEOUT) of a node that runs code on the real clock, else None."""
    dog = stall.get("dog")
    if dog is None and make and p.settings.stall_timeout > 0 and not p.clock_simulated and p.runs_code():
        from ..runtime.stall import Watchdog

        main = p.mode == "MAIN"
        dog = stall["dog"] = Watchdog(
            p.node_id, main, p.settings.stall_timeout, p.settings.heartbeat_interval, p.workdir,
            state=lambda: p.lifecycle.state, code=lambda: p.code.process, ended=p.dispatcher.ended,
            peers=lambda: [r.node for r in p.roster if r.node != p.node_id] if p.code_runs_on() == "all" else [],
            on_channel=lambda: p.control.registered if p.control.server is not None else set(),
            send_quiet=p.control.send_quiet, write_state_now=p.pulse.write_now,
            ask_stacks=lambda request: p.dumps.ask_everyone(request, wait=True),
            stalled=lambda exc: p.dispatcher.from_afar(Event(Kind.STALLED, Source.WATCHDOG, exc)))
    return dog


def _note_quiet(p, node: str, since, ended: bool, stall: dict) -> None:
    dog = _watchdog(p, True, stall)
    if dog is not None:
        dog.note(node, since, ended)

