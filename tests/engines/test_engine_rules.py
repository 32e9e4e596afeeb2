"""Each engine rule is one validator that both sides call: the spec loader (laptop) refuses a bad
value at the YAML path and line that set it; the node refuses the same value naming the variable,
with the same words. Also: one declared fact for PS support, the launcher wrapped inside the
profiler prefix, Horovod's discovery files independent of call order, one entry-point table."""

from __future__ import annotations

import sys
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest

from fsm_cluster.errors import NodeFailure, SettingsError, SpecError
from fsm_cluster.frameworks import _common, _engine, horovod, pytorch, tensorflow
from fsm_cluster.frameworks.dask import DaskProvider
from fsm_cluster.frameworks.horovod import HorovodProvider
from fsm_cluster.frameworks.pytorch import PyTorchProvider
from fsm_cluster.frameworks.ray import RayProvider
from fsm_cluster.frameworks.tensorflow import TensorFlowProvider
from fsm_cluster.jobspec import FrameworkSpecBuilderFactory, load_spec_text, node_environments
from fsm_cluster.wire.models import RosterEntry
from fsm_cluster.registry import (BUILTIN, BUILTIN_SPEC_BUILDERS, PROVIDERS_GROUP, SPEC_BUILDERS_GROUP,
                                  ClusterProviderFactory)

from .specs import line_of, spec

ROOT = Path(__file__).resolve().parents[2]


def spec_error(text: str) -> str:
    with pytest.raises(SpecError) as e:
        load_spec_text(text, environ={})
    return str(e.value)


def node(cls, tmp_path, mode: str = "MAIN", exported: dict | None = None, **env):
    """A provider of ``cls``; ``exported``: MAIN's variables as if the node had taken them."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    environ = {"OCI__SELF_IP": "127.0.0.1", "OCI__WORKER_COUNT": "2", "OCI__ENTRY_SCRIPT": str(tmp_path / "train.py"),
               **env}
    p = cls(mode, work_dir=str(tmp_path / "wd"), environ=environ)
    p.exported = MappingProxyType(dict(exported or {}))
    return p


@pytest.fixture(autouse=True)
def launchers(monkeypatch):
    """torchrun / horovodrun by name: the commands are built, never run (engines need not be installed)."""
    for module in (pytorch, horovod):
        monkeypatch.setattr(module, "engine_command", lambda program, extra, mod: [program])


@pytest.fixture
def calls(monkeypatch):
    """Every call of the shared validators, by name (they still run), wherever they are imported."""
    seen: list[str] = []

    def spy(name, owner, *users):
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            seen.append(name)
            return real(*args, **kwargs)

        for module in (owner, *users):
            monkeypatch.setattr(module, name, wrapper)

    spy("validate_port", _common, _engine)
    spy("validate_count", _common, _engine)
    spy("validate_horovod_np", horovod)
    spy("validate_ps_workers", tensorflow)
    return seen


# -- ports ---------------------------------------------------------------------------------------
PORTS = [(DaskProvider, "DASK", "OCI__DASK_SCHEDULER_PORT", lambda p: p.configuration()),
         (DaskProvider, "DASK", "OCI__DASK_DASHBOARD_PORT", lambda p: p.start_main()),
         (PyTorchProvider, "PYTORCH", "MASTER_PORT", lambda p: p.configuration()),
         (TensorFlowProvider, "TENSORFLOW", "OCI__TF_PORT", lambda p: p.configuration()),
         (RayProvider, "RAY", "OCI__RAY_PORT", lambda p: p.configuration())]


@pytest.mark.parametrize("cls,kind,name,use", PORTS, ids=[p[2] for p in PORTS])
@pytest.mark.parametrize("bad", ["http", "70000", "-1"])
def test_a_bad_port_is_the_same_error_on_both_sides(tmp_path, calls, cls, kind, name, use, bad):
    message = f"{name}: not a port number (1-65535, or 0/auto for a free one): {bad!r}"
    text = spec(kind, env={"A": "1", name: bad})
    line = line_of(text, f'value: "{bad}"')
    assert spec_error(text) == f"<spec>: spec.cluster.spec.config.env[1].value: {message}, line {line}"
    assert calls == ["validate_port"] * (FrameworkSpecBuilderFactory.get(kind).PORTS.index(name) + 1)

    calls.clear()
    p = node(cls, tmp_path, exported={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786"}, **{name: bad})
    with pytest.raises(SettingsError) as e:
        use(p)
    assert str(e.value) == message
    assert "validate_port" in calls


def test_good_ports_pass_both_sides(tmp_path):
    load_spec_text(spec("RAY", env={"OCI__RAY_PORT": "auto"}), environ={})
    assert node(RayProvider, tmp_path, OCI__RAY_PORT="auto").configuration()["OCI__RAY_PORT"].isdigit()
    load_spec_text(spec("RAY", env={"OCI__RAY_PORT": "6380"}), environ={})
    p = node(RayProvider, tmp_path, OCI__RAY_PORT="6380", OCI__SELF_IP="10.0.0.1")
    assert p.configuration()["OCI__RAY_PORT"] == "6380"


# -- process counts ------------------------------------------------------------------------------
def test_a_bad_process_count_is_the_same_error_on_both_sides(tmp_path, calls):
    message = "OCI__PYTORCH_NPROC_PER_NODE: must be a whole number >= 1 (got '0')"
    text = spec("PYTORCH", workers=1, env={"OCI__PYTORCH_NPROC_PER_NODE": "0"})
    line = line_of(text, 'value: "0"')
    assert spec_error(text) == f"<spec>: spec.cluster.spec.config.env[0].value: {message}, line {line}"
    assert calls == ["validate_port", "validate_count"]  # MASTER_PORT (unset), then the count

    calls.clear()
    with pytest.raises(SettingsError) as e:
        node(PyTorchProvider, tmp_path, OCI__PYTORCH_NPROC_PER_NODE="0").nproc_per_node()
    assert str(e.value) == message and calls == ["validate_count"]


@pytest.mark.parametrize("bad,rule", [("0", "must be a whole number >= 1 (got '0')"),
                                      ("4", "must be at most the cluster's 3 nodes (MAIN and the WORKERs; got 4)")])
def test_a_bad_pytorch_min_nodes_is_the_same_error_on_both_sides(tmp_path, bad, rule):
    message = f"OCI__PYTORCH_MIN_NODES: {rule}"
    text = spec("PYTORCH", workers=2, env={"OCI__PYTORCH_MIN_NODES": bad})
    line = line_of(text, f'value: "{bad}"')
    assert spec_error(text) == f"<spec>: spec.cluster.spec.config.env[0].value: {message}, line {line}"
    p = node(PyTorchProvider, tmp_path, exported={"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"},
             OCI__PYTORCH_MIN_NODES=bad)
    with pytest.raises(SettingsError) as e:
        p.entry_command()
    assert str(e.value) == message


def test_pytorch_min_nodes_makes_the_node_an_elastic_torchrun_agent(tmp_path):
    exported = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
    load_spec_text(spec("PYTORCH", workers=2, env={"OCI__PYTORCH_MIN_NODES": "3"}), environ={})
    for mode, host in (("MAIN", "1"), ("WORKER", "0")):
        p = node(PyTorchProvider, tmp_path, mode=mode, exported=exported, OCI__PYTORCH_MIN_NODES="2",
                 OCI__BACKOFF_LIMIT="4", OCI__PYTORCH_NPROC_PER_NODE="1", OCI__SELF_IP="10.0.0.7",
                 OCI__RESTART_POLICY="OnFailure")
        assert p.ELASTIC is True
        cmd = p.entry_command()
        assert cmd[:10] == ["torchrun", "--nnodes=2:3", "--nproc-per-node=1", "--rdzv-backend=c10d",
                            "--rdzv-endpoint=10.0.0.1:29400", f"--rdzv-id={p.settings.cluster_id}",
                            f"--rdzv-conf=is_host={host},last_call_timeout=2", "--local-addr=10.0.0.7",
                            "--max-restarts=4", str(tmp_path / "train.py")]
        assert p.entry_env()["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    never = node(PyTorchProvider, tmp_path, exported=exported, OCI__PYTORCH_MIN_NODES="2", OCI__RESTART_POLICY="Never")
    assert "--max-restarts=0" in never.entry_command()  # torchrun retries no worker the policy would not
    rigid = node(PyTorchProvider, tmp_path, exported=exported, OCI__PYTORCH_NPROC_PER_NODE="1")
    assert rigid.ELASTIC is False and "--node-rank=0" in rigid.entry_command()
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in rigid.entry_env()


def test_the_same_bad_horovod_np_is_refused_by_the_spec_and_by_the_node(tmp_path, calls):
    message = ("Horovod needs 1 <= OCI__HOROVOD_MIN_NP <= OCI__HOROVOD_NP <= OCI__HOROVOD_MAX_NP "
               "(got 4, 3, 3)")
    env = {"OCI__HOROVOD_NP": "3", "OCI__HOROVOD_MIN_NP": "4"}
    text = spec("HOROVOD", env=env)
    # the first of the rule's variables the spec sets: MIN_NP, the second env entry
    line = line_of(text, 'value: "4"')
    assert spec_error(text) == f"<spec>: spec.cluster.spec.config.env[1].value: {message}, line {line}"
    assert calls.count("validate_horovod_np") == 1

    calls.clear()
    p = node(HorovodProvider, tmp_path, **env)
    with pytest.raises(SettingsError) as e:
        p.entry_command()
    assert str(e.value) == message and calls.count("validate_horovod_np") == 1
    assert p._scratch is None  # refused before any file was written


def test_horovod_defaults_agree_on_both_sides(tmp_path):
    """np = nodes × slots, min-np = np, max-np = max(np, nodes × slots): a spec the builder accepts
    gives the node the same counts."""
    env = {"OCI__HOROVOD_SLOTS": "2", "OCI__HOROVOD_MAX_NP": "8"}
    nodes = node_environments(load_spec_text(spec("HOROVOD", env=env), environ={}))
    assert horovod.horovod_process_counts(nodes[0].env, len(nodes)) == (2, 6, 6, 8)
    p = node(HorovodProvider, tmp_path, **env)
    cmd = p.wrap_entry([sys.executable, "train.py"])
    assert cmd[cmd.index("-np"):cmd.index("-np") + 8] == ["-np", "6", "--min-np", "6", "--max-np", "8",
                                                          "--slots-per-host", "2"]
    p.stop()


# -- parameter servers ---------------------------------------------------------------------------
def roster(workers: int, ps: int) -> list[tuple[RosterEntry, int]]:
    modes = ["MAIN"] + ["WORKER"] * workers + ["PS"] * ps
    return [(RosterEntry(node="MAIN" if m == "MAIN" else f"{m}_r{r}", mode=m, run_id=f"r{r}", rank=r,
                         ip="10.0.0.1"), 2000 + r)
            for r, m in enumerate(modes)]


def test_ps_without_a_worker_is_the_same_error_on_both_sides(calls):
    message = "ParameterServerStrategy (OCI__PS_COUNT=1) needs at least one worker (OCI__WORKER_COUNT=0)"
    text = spec("TENSORFLOW", workers=0, ps=1)
    line = line_of(text, "replicas: 0")
    assert spec_error(text) == f"<spec>: spec.cluster.spec.worker.replicas: {message}, line {line}"
    assert calls.count("validate_ps_workers") == 1

    calls.clear()
    with pytest.raises(SettingsError) as e:
        tensorflow.tf_layout(roster(0, 1))
    assert str(e.value) == message and calls == ["validate_ps_workers"]


def test_where_tensorflow_code_runs_is_one_rule(tmp_path):
    for workers, ps, where in [(2, 0, "all"), (1, 1, "main")]:
        nodes = node_environments(load_spec_text(spec("TENSORFLOW", workers, ps), environ={}))
        assert {n.env["OCI__RUN_ON"] for n in nodes} == {where}
        p = node(TensorFlowProvider, tmp_path, OCI__WORKER_COUNT=str(workers), OCI__PS_COUNT=str(ps))
        assert p.code_runs_on() == where


def test_a_group_without_replicas_counts_as_one_node_on_the_spec_side():
    """``ps:`` with no replicas is one PS node (the converter's count), so the chief runs the code."""
    text = spec("TENSORFLOW", workers=1).replace("  runtime:", "      ps:\n        name: ps\n  runtime:")
    nodes = node_environments(load_spec_text(text, environ={}))
    assert [n.mode for n in nodes] == ["MAIN", "WORKER", "PS"]
    assert {n.env["OCI__RUN_ON"] for n in nodes} == {"main"}


@pytest.mark.parametrize("kind", sorted(BUILTIN_SPEC_BUILDERS))
def test_ps_support_is_one_fact_per_engine(kind, tmp_path):
    provider = ClusterProviderFactory.get_provider_class(kind)
    assert FrameworkSpecBuilderFactory.accepts_ps(kind) is provider.supports_ps is (kind == "TENSORFLOW")
    text = spec(kind, workers=1, ps=1)
    if provider.supports_ps:
        assert [n.mode for n in node_environments(load_spec_text(text, environ={}))][-1] == "PS"
        return
    assert spec_error(text) == (f"<spec>: spec.cluster.spec.ps: parameter servers are a TENSORFLOW feature, "
                                f"not {kind}, line {line_of(text, 'ps:')}")
    with pytest.raises(NodeFailure, match=f"^{kind} clusters have no PS nodes \\(set OCI__PS_COUNT=0\\)$"):
        node(provider, tmp_path, mode="PS").start_ps()


# -- the entry command ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls,launcher,policy", [(PyTorchProvider, "--master-port=29400", "Never"),
                                                 (HorovodProvider, "-H", "Never"),
                                                 (HorovodProvider, "--host-discovery-script", "OnFailure")])
def test_the_launcher_comes_inside_the_profiler_prefix(tmp_path, cls, launcher, policy):
    p = node(cls, tmp_path, exported={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400"}, PROFILE="1",
             PROFILE_CMD="py-spy record -o /tmp/p.svg --", OCI__PYTORCH_NPROC_PER_NODE="1",
             OCI__RESTART_POLICY=policy)
    cmd = p.entry_command()
    assert cmd[:6] == ["py-spy", "record", "-o", "/tmp/p.svg", "--", cls.LAUNCHER]
    assert cmd.count("py-spy") == 1 and launcher in cmd
    assert cmd[-1] == str(tmp_path / "train.py")
    p.stop()


@pytest.mark.parametrize("cls", [PyTorchProvider, HorovodProvider])
def test_a_launcher_needs_an_entry_script(tmp_path, cls):
    p = node(cls, tmp_path, OCI__ENTRY_SCRIPT="")
    with pytest.raises(NodeFailure, match=f"{cls.KIND} clusters need an entry script .*for {cls.LAUNCHER}"):
        p.run_code()


def test_horovod_discovery_files_do_not_depend_on_call_order(tmp_path):
    """Elastic discovery (a restart policy lets the hosts change) writes its files once, in one dir."""
    p = node(HorovodProvider, tmp_path, OCI__RESTART_POLICY="OnFailure")
    env = p.entry_env()  # before the command is built
    cache, roster = env["OCI__HOROVOD_DISCOVERY_CACHE"], env["OCI__HOROVOD_DISCOVERY_ROSTER"]
    assert Path(roster).is_file() and '"roster"' in Path(roster).read_text()
    cmd = p.entry_command()
    script = cmd[cmd.index("--host-discovery-script") + 1]
    assert Path(script).parent == Path(cache).parent == Path(roster).parent and Path(script).is_file()
    assert p.entry_env()["OCI__HOROVOD_DISCOVERY_CACHE"] == cache  # one scratch dir, written once
    p.stop()
    assert not Path(cache).parent.exists()


# -- one table of built-in kinds -----------------------------------------------------------------
def test_pyproject_entry_points_name_the_builtin_classes():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert points[PROVIDERS_GROUP] == BUILTIN
    assert points[SPEC_BUILDERS_GROUP] == BUILTIN_SPEC_BUILDERS
    for kind in BUILTIN_SPEC_BUILDERS:  # a kind's provider and spec builder live in one module
        assert BUILTIN[kind].split(":")[0] == BUILTIN_SPEC_BUILDERS[kind].split(":")[0]
        builder = FrameworkSpecBuilderFactory.get(kind)
        assert builder.PROVIDER is ClusterProviderFactory.get_provider_class(kind) and builder.KIND == kind


# -- Ray: a worker waits for the head to be alive in its GCS --------------------------------------
def test_the_gcs_probe_waits_for_the_head_or_says_it_cannot_ask(monkeypatch):
    from fsm_cluster.frameworks import _ray_nodes

    monkeypatch.setattr(_ray_nodes.time, "sleep", lambda s: None)
    answers = iter([0, 0, 1])
    monkeypatch.setattr(_ray_nodes, "alive_in_gcs", lambda address: lambda: next(answers))
    assert _ray_nodes.main(["--gcs", "127.0.0.1:6379", "1"]) == 0
    assert next(answers, "asked until alive") == "asked until alive"
    monkeypatch.setattr(_ray_nodes, "alive_in_gcs", lambda address: None)  # a Ray without that client
    assert _ray_nodes.main(["--gcs", "127.0.0.1:6379", "1"]) == _ray_nodes.NO_GCS_CLIENT


def test_ray_start_runs_in_one_process_behind_the_nodes_waits(tmp_path, monkeypatch):
    """A WORKER's `ray start` waits in its own process (Ray imported once) until the head is alive;
    MAIN's head reports every node alive in a file; the agents' ports are Ray's own to bind."""
    from fsm_cluster.frameworks import _ray_start

    clock = [0.0]  # a fake clock: each pause moves it on
    monkeypatch.setattr(_ray_start, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                            sleep=lambda s: clock.__setitem__(0, clock[0] + s)))
    opts, args = _ray_start.parse(["--after", "10.0.0.1:6379", "30", "--own-ports", "127.0.0.1", "--",
                                   "start", "--address", "10.0.0.1:6379"])
    assert opts == {"--after": ["10.0.0.1:6379", "30"], "--own-ports": ["127.0.0.1"]}
    assert args == ["start", "--address", "10.0.0.1:6379"]
    answers = iter([0, 0, 1])
    monkeypatch.setattr(_ray_start, "gcs_counter", lambda address, deadline: lambda: next(answers))
    assert _ray_start.wait_for_head("10.0.0.1:6379", 30)
    assert next(answers, "asked until alive") == "asked until alive"
    monkeypatch.setattr(_ray_start, "gcs_counter", lambda address, deadline: lambda: 0)
    assert not _ray_start.wait_for_head("10.0.0.1:6379", 30)  # never alive: the node fails
    monkeypatch.setattr(_ray_start, "gcs_counter", lambda address, deadline: None)  # no GCS client: go on
    assert _ray_start.wait_for_head("10.0.0.1:6379", 30)
    report = tmp_path / "alive"
    counts = iter([1, 2, 3])
    monkeypatch.setattr(_ray_start, "gcs_counter", lambda address, deadline: lambda: next(counts))
    _ray_start.report_alive("10.0.0.1:6379", 3, str(report))
    assert report.read_text() == "3" and next(counts, "asked until 3") == "asked until 3"
    monkeypatch.setattr(_ray_start, "gcs_counter", lambda address, deadline: None)
    _ray_start.report_alive("10.0.0.1:6379", 3, str(report))
    assert report.read_text() == "no-gcs"


def test_ray_nodes_start_ray_through_the_waiting_start(tmp_path, monkeypatch):
    """The head reports the roster's nodes alive, a WORKER waits for the head (OCI__TIMEOUT) in the
    process that runs `ray start`; on loopback the agents' ports are left to Ray (--own-ports)."""
    spawned = {}
    monkeypatch.setattr(RayProvider, "spawn", lambda self, name, cmd, **kw: spawned.setdefault(name, cmd))
    exported = {"RAY_ADDRESS": "127.0.0.1:6379"}
    main = node(RayProvider, tmp_path, exported=exported, OCI__TIMEOUT="90")
    main.start_main()
    head = spawned["ray head"]
    cut = head.index("--")
    assert head[:3] == [sys.executable, "-m", "fsm_cluster.frameworks._ray_start"]
    assert head[3:cut] == ["--report", "127.0.0.1:6379", "3", main.alive_file, "--own-ports", "127.0.0.1"]
    assert head[cut + 1:cut + 5] == ["start", "--head", "--port", "6379"]
    assert "--dashboard-agent-listen-port" not in head and "--dashboard-port" in head
    worker = node(RayProvider, tmp_path, mode="WORKER", exported=exported, OCI__TIMEOUT="90")
    worker.start_worker()
    cmd = spawned["ray worker"]
    cut = cmd.index("--")
    assert cmd[3:cut] == ["--after", "127.0.0.1:6379", "90", "--own-ports", "127.0.0.1"]
    assert cmd[cut + 1:cut + 4] == ["start", "--address", "127.0.0.1:6379"]
    assert "--dashboard-port" not in cmd
    # MAIN's entry script waits for what the head's process reported, once
    Path(main.alive_file).write_text("3")
    monkeypatch.setattr(RayProvider, "roster", [object()] * 3, raising=False)
    monkeypatch.setattr(RayProvider, "check_engine", lambda self: None)
    asked = []
    monkeypatch.setattr(RayProvider, "_ask_ray", lambda self, args, what: asked.append(args) or 0)
    alive_dir = Path(main.alive_file).parent
    main.engine_ready()
    assert asked == [] and not alive_dir.exists()  # the report is used once, then removed
    main.engine_ready()  # a later start of the code asks the GCS again
    assert asked == [["--gcs", "127.0.0.1:6379", "3"]]
