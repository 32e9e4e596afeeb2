"""TENSORFLOW: TF_CONFIG for every node, from a cluster layout MAIN writes once all registered.

* Every node publishes its TF server port in its configuration (``OCI__TF_PORT``; default 12345,
  a free port on a loopback cluster).
* MAIN, once every node registered, builds the layout (``OCI__TF_CLUSTER``, JSON, exported to every
  node, and ``tf_cluster.json`` in the work dir for people and tools):
  - no PS nodes → MultiWorkerMirroredStrategy: ``{"worker": [MAIN, WORKER…]}``; every node is a
    worker (index = rank) and runs the entry script (OCI__RUN_ON=all); the cluster completes when
    every node's script succeeded.
  - PS nodes → ParameterServerStrategy: ``{"chief": [MAIN], "worker": [WORKER…], "ps": [PS…]}``;
    MAIN is the chief and runs the entry script (the coordinator); WORKER and PS nodes run a
    standard ``tf.distribute.Server`` (started by the node, :mod:`._tf_server`) that idles until the
    chief's training ends, when the cluster tears down and those servers with it.
* ``TF_CONFIG`` (cluster + this node's task) is set for the entry script and the servers, so
  ``TFConfigClusterResolver()`` / the strategies need no arguments.
* MAIN's ``.py`` entry script of a MultiWorkerMirroredStrategy cluster runs under
  :mod:`._tf_entry`: its process serves TensorFlow's coordination service (task 0), and outlives
  the other tasks' processes, whose heartbeats to it would fail otherwise.
* The one engine with PS nodes (``supports_ps``). Where the code runs (:func:`code_runs_on`) and
  "PS needs a worker" (:func:`validate_ps_workers`) are rules the node and the spec builder
  (:class:`TensorFlowSpecBuilder`) share.
"""

from __future__ import annotations

import json
import logging
import sys

from ..env import OCI__PS_COUNT, OCI__WORKER_COUNT
from ..errors import NodeFailure
from ..wire.models import RosterEntry
from ._common import RuleError, port_setting
from ._engine import EngineProvider, EngineSpecBuilder

log = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
OCI__TF_PORT = "OCI__TF_PORT"
OCI__TF_CLUSTER = "OCI__TF_CLUSTER"
LAYOUT_FILE = "tf_cluster.json"
DEFAULT_TF_PORT = 12345


def code_runs_on(ps: int) -> str:
    """MultiWorkerMirroredStrategy (no PS): every worker runs the script; ParameterServerStrategy:
    only the chief (MAIN, the coordinator)."""
    return "main" if ps > 0 else "all"


def validate_ps_workers(workers: int, ps: int) -> None:
    """ParameterServerStrategy (PS nodes) needs at least one worker besides them."""
    if ps > 0 and workers < 1:
        raise RuleError(f"ParameterServerStrategy ({OCI__PS_COUNT}={ps}) needs at least one worker "
                        f"({OCI__WORKER_COUNT}={workers})", OCI__WORKER_COUNT, OCI__PS_COUNT)


def tf_layout(nodes: list[tuple[RosterEntry, int]]) -> dict[str, list[str]]:
    """The TF cluster spec from the roster (rank order) and each node's port."""
    addr = {e.node: f"{e.ip}:{port}" for e, port in nodes}
    main = [e.node for e, _ in nodes if e.mode == "MAIN"]
    workers = [e.node for e, _ in nodes if e.mode == "WORKER"]
    ps = [e.node for e, _ in nodes if e.mode == "PS"]
    validate_ps_workers(len(workers), len(ps))
    if not ps:
        return {"worker": [addr[n] for n in main + workers]}
    return {"chief": [addr[n] for n in main], "worker": [addr[n] for n in workers],
            "ps": [addr[n] for n in ps]}


def task_of(roster: list[RosterEntry], node: str, ps_cluster: bool) -> dict:
    """This node's ``{"type", "index"}`` in the layout."""
    me = next((e for e in roster if e.node == node), None)
    if me is None:
        raise NodeFailure(f"{node} is not in MAIN's roster")
    if not ps_cluster:
        return {"type": "worker", "index": [e.node for e in roster if e.mode in ("MAIN", "WORKER")].index(node)}
    kind = {"MAIN": "chief", "WORKER": "worker", "PS": "ps"}[me.mode]
    return {"type": kind, "index": [e.node for e in roster if e.mode == me.mode].index(node)}


def tf_config(cluster: dict, task: dict) -> str:
    return json.dumps({"cluster": cluster, "task": task}, sort_keys=True)


class TensorFlowProvider(EngineProvider):
    """TF_CONFIG everywhere; TF servers on WORKER/PS nodes of a parameter-server cluster."""
    KIND = "TENSORFLOW"
    supports_ps = True
    EXPORTS = (OCI__TF_CLUSTER,)

    def code_runs_on(self) -> str:
        return code_runs_on(self.expected_ps_count())

    @property
    def ps_cluster(self) -> bool:
        return self.expected_ps_count() > 0

    # -- configuration ---------------------------------------------------------------------------
    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        conf[OCI__TF_PORT] = str(port_setting(self.settings.variables, OCI__TF_PORT, DEFAULT_TF_PORT, self.ip))
        return conf

    def setup_extra_configs(self, conf: dict) -> dict:
        roster = self.build_roster()
        configs = self.fetch_all_worker_info()
        nodes = []
        for e in roster:
            if e.node == self.node_id:
                port = int(conf[OCI__TF_PORT])
            else:
                raw = configs[e.node].env.get(OCI__TF_PORT, "")
                if not raw.isdigit():
                    raise NodeFailure(f"{e.node} registered without a valid {OCI__TF_PORT} ({raw!r})")
                port = int(raw)
            nodes.append((e, port))
        layout = tf_layout(nodes)
        self.workdir.write_bytes(LAYOUT_FILE, json.dumps(layout, indent=2).encode())
        log.info("%s: TensorFlow cluster %s", self.node_id, layout)
        return {OCI__TF_CLUSTER: json.dumps(layout, sort_keys=True)}

    def node_tf_config(self) -> str:
        try:
            cluster = json.loads(self.exported[OCI__TF_CLUSTER])
        except (KeyError, ValueError):
            raise NodeFailure(f"{OCI__TF_CLUSTER} missing or invalid in MAIN's configuration") from None
        return tf_config(cluster, task_of(self.roster, self.node_id, "ps" in cluster))

    # -- engine ----------------------------------------------------------------------------------
    def _start_server(self, name: str) -> None:
        env = self.child_env()
        env[TF_CONFIG] = self.node_tf_config()
        self.spawn(name, [sys.executable, "-m", "fsm_cluster.frameworks._tf_server"], env=env)

    def start_worker(self) -> None:
        if self.ps_cluster:
            self._start_server("tf worker server")

    def start_ps(self) -> None:
        if not self.ps_cluster:  # pragma: no cover - a PS node means ps_count > 0
            raise NodeFailure("PS node in a cluster without OCI__PS_COUNT")
        self._start_server("tf ps server")

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        """MAIN of a MultiWorkerMirroredStrategy cluster: ``python -m …_tf_entry script.py args``
        (a script that is no ``.py`` runs as it is)."""
        if self.mode == "MAIN" and not self.ps_cluster and cmd[:1] == [sys.executable] and len(cmd) > 1 \
                and cmd[1].endswith(".py"):
            return [sys.executable, "-m", "fsm_cluster.frameworks._tf_entry", *cmd[1:]]
        return cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[TF_CONFIG] = self.node_tf_config()
        return env


class TensorFlowSpecBuilder(EngineSpecBuilder):
    PROVIDER = TensorFlowProvider
    PORTS = (OCI__TF_PORT,)

    def run_on(self) -> str:
        return code_runs_on(self._replicas("ps"))

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        validate_ps_workers(self._replicas("worker"), self._replicas("ps"))
