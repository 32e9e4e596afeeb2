"""The variables oracle-ads and its images read, honoured by Settings and the built-in engines:
each oracle-ads name reaches the setting (or the engine's command line) it means, the fsm name wins
when both are set, and a bad value is refused naming the variable that was set."""

from __future__ import annotations

import sys
from types import MappingProxyType

import pytest

from fsm_cluster.env import Settings
from fsm_cluster.errors import SettingsError, SpecError
from fsm_cluster.frameworks import dask, horovod
from fsm_cluster.frameworks.dask import DaskProvider
from fsm_cluster.frameworks.horovod import HorovodProvider
from fsm_cluster.jobspec import load_spec_text

BASE = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/wd"}


def settings(**env) -> Settings:
    return Settings.from_env({**BASE, **env})


# -- Settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env,profile", [
    ({}, "DEFAULT"),
    ({"OCIFS_CONFIG_PROFILE": "fs"}, "fs"),
    ({"OCI_CONFIG_PROFILE": "", "OCIFS_CONFIG_PROFILE": "fs"}, "fs"),
    ({"OCI_CONFIG_PROFILE": "mine", "OCIFS_CONFIG_PROFILE": "fs"}, "mine"),
])
def test_the_oci_profile_is_picked_as_oracle_ads_picks_it(env, profile, monkeypatch):
    """OCI_CONFIG_PROFILE or OCIFS_CONFIG_PROFILE or "DEFAULT", in Settings and in the node's
    default identity alike."""
    assert settings(**env).oci_config_profile == profile
    from fsm_cluster.runtime import oci_auth

    seen = []
    monkeypatch.setattr(oci_auth, "get_oci_auth", lambda kind, prof, loc: seen.append(prof) or {})
    oci_auth.default_auth(env)
    assert seen == [profile]


def test_post_processing_wait_is_zero_unless_set():
    assert settings().post_processing_wait == 0
    assert settings(POST_PROCESSING_WAIT="").post_processing_wait == 0
    assert settings(POST_PROCESSING_WAIT="7.5").post_processing_wait == 7.5
    assert settings(POST_PROCESSING_WAIT="60").post_processing_wait == 60


@pytest.mark.parametrize("bad", ["soon", "-1", "inf", "nan"])
def test_a_bad_post_processing_wait_names_the_variable(bad):
    with pytest.raises(SettingsError, match=r"^environment variable POST_PROCESSING_WAIT: "):
        settings(POST_PROCESSING_WAIT=bad)


def test_an_unset_worker_count_is_one_worker_as_in_oracle_ads():
    """oracle-ads' expected_worker_count(): int(os.environ.get("OCI__WORKER_COUNT", 1))."""
    assert settings().worker_count == 1
    assert settings(OCI__WORKER_COUNT="").worker_count == 1
    assert settings(OCI__WORKER_COUNT="0").worker_count == 0


@pytest.mark.parametrize("fsm_name,alias", sorted({**dask.ALIASES, **horovod.ALIASES}.items()))
def test_every_alias_and_its_fsm_name_reach_the_engines(fsm_name, alias):
    """The engines read Settings.variables: a name missing there would be silently ignored."""
    v = settings(**{fsm_name: "1", alias: "2"}).variables
    assert (v[fsm_name], v[alias]) == ("1", "2")


# -- Dask: OCI__WORKER_PORT, OCI__NANNY_PORT, OCI__WORKER_TIMEOUT ---------------------------------
def dask_worker_command(tmp_path, monkeypatch, **env) -> list[str]:
    monkeypatch.setattr(dask, "dask_cli", lambda: ["dask"])
    p = DaskProvider("WORKER", work_dir=str(tmp_path / "wd"),
                     environ={"OCI__SELF_IP": "10.0.0.2", "OCI__WORKER_COUNT": "1", "JOB_RUN_OCID": "w1", **env})
    p.exported = MappingProxyType({"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786"})
    spawned = []
    monkeypatch.setattr(p, "spawn", lambda name, cmd, **kw: spawned.append(cmd))
    p.start_worker()
    return spawned[0]


DASK = [("OCI__DASK_WORKER_PORT", "OCI__WORKER_PORT", "--worker-port", "8700:8800", "8700:8800", "9001"),
        ("OCI__DASK_NANNY_PORT", "OCI__NANNY_PORT", "--nanny-port", "3000", "3000", "3001:3002"),
        ("OCI__DASK_DEATH_TIMEOUT", "OCI__WORKER_TIMEOUT", "--death-timeout", "2m", "120", "45")]


@pytest.mark.parametrize("fsm_name,alias,flag,value,passed,other", DASK, ids=[d[1] for d in DASK])
def test_dask_worker_reads_the_oracle_ads_name(tmp_path, monkeypatch, fsm_name, alias, flag, value, passed,
                                                other):
    cmd = dask_worker_command(tmp_path, monkeypatch, **{alias: value})
    assert cmd[cmd.index(flag) + 1] == passed and cmd.count(flag) == 1
    # the fsm name wins over the alias
    cmd = dask_worker_command(tmp_path, monkeypatch, **{alias: value, fsm_name: other})
    assert cmd[cmd.index(flag) + 1] == other and cmd.count(flag) == 1
    # unset: Dask's own default (the flag is not passed)
    assert flag not in dask_worker_command(tmp_path, monkeypatch)


@pytest.mark.parametrize("fsm_name,alias,flag,value,passed,other", DASK, ids=[d[1] for d in DASK])
@pytest.mark.parametrize("use_alias", [True, False], ids=["alias", "fsm"])
def test_a_bad_dask_worker_value_names_the_variable_set(tmp_path, monkeypatch, fsm_name, alias, flag, value, passed,
                                                        other, use_alias):
    name = alias if use_alias else fsm_name
    with pytest.raises(SettingsError, match=f"^{name}: not a "):
        dask_worker_command(tmp_path, monkeypatch, **{name: "9000:80"})


def test_start_args_come_last_so_they_win(tmp_path, monkeypatch):
    cmd = dask_worker_command(tmp_path, monkeypatch, OCI__WORKER_PORT="9000", OCI__START_ARGS="--worker-port 9100")
    assert cmd[-2:] == ["--worker-port", "9100"] and cmd.index("9000") < cmd.index("9100")


def test_the_spec_refuses_a_bad_dask_alias_at_its_line():
    from engines.specs import line_of, spec

    text = spec("DASK", env={"OCI__WORKER_PORT": "8800:8700"})
    line = line_of(text, 'value: "8800:8700"')
    with pytest.raises(SpecError) as e:
        load_spec_text(text, environ={})
    assert str(e.value) == ("<spec>: spec.cluster.spec.config.env[0].value: OCI__WORKER_PORT: not a port (1-65535) "
                            f"or a port range low:high: '8800:8700', line {line}")


# -- Horovod: HOROVOD_ARGS, MIN_NP, MAX_NP, NP, SLOTS, START_TIMEOUT, WORKER_PORT, ENABLE_TIMELINE ---
def horovodrun(tmp_path, monkeypatch, **env) -> list[str]:
    """MAIN's horovodrun command for a 3-node cluster (configuration published, then taken)."""
    monkeypatch.setattr(horovod, "engine_command", lambda program, extra, module: [program])
    (tmp_path / "train.py").write_text("print('hi')\n")
    p = HorovodProvider("MAIN", work_dir=str(tmp_path / "wd"),
                        environ={"OCI__SELF_IP": "127.0.0.1", "OCI__WORKER_COUNT": "2", "CUDA_VISIBLE_DEVICES": "",
                                 "OCI__ENTRY_SCRIPT": str(tmp_path / "train.py"), **env})
    p.exported = MappingProxyType(p.configuration())
    try:
        return p.wrap_entry([sys.executable, str(tmp_path / "train.py")])
    finally:
        p.stop()


def arg(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


HOROVOD = [  # alias, value, fsm name, its value, {flag: with the alias, ...}, {flag: with both, ...}
    ("SLOTS", "2", "OCI__HOROVOD_SLOTS", "3", {"--slots-per-host": "2", "-np": "6"},
     {"--slots-per-host": "3", "-np": "9"}),
    ("NP", "2", "OCI__HOROVOD_NP", "3", {"-np": "2", "--min-np": "2", "--max-np": "3"}, {"-np": "3"}),
    ("MIN_NP", "1", "OCI__HOROVOD_MIN_NP", "2", {"--min-np": "1", "-np": "3"}, {"--min-np": "2"}),
    ("MAX_NP", "5", "OCI__HOROVOD_MAX_NP", "4", {"--max-np": "5"}, {"--max-np": "4"}),
    ("START_TIMEOUT", "600", "OCI__HOROVOD_START_TIMEOUT", "900", {"--start-timeout": "600"},
     {"--start-timeout": "900"}),
    ("WORKER_PORT", "12345", "OCI__HOROVOD_SSH_PORT", "2222", {"-p": "12345"}, {"-p": "2222"}),
    ("HOROVOD_ARGS", "--verbose --log-level INFO", "OCI__START_ARGS", "--log-level DEBUG",
     {"--log-level": "INFO"}, {"--log-level": "DEBUG"}),
]


@pytest.mark.parametrize("alias,value,fsm_name,fsm_value,with_alias,with_both", HOROVOD, ids=[h[0] for h in HOROVOD])
def test_horovodrun_reads_the_image_names(tmp_path, monkeypatch, alias, value, fsm_name, fsm_value, with_alias,
                                          with_both):
    plain = horovodrun(tmp_path, monkeypatch)
    cmd = horovodrun(tmp_path, monkeypatch, **{alias: value})
    assert {f: arg(cmd, f) for f in with_alias} == with_alias != {f: arg(plain, f) for f in with_alias}
    cmd = horovodrun(tmp_path, monkeypatch, **{alias: value, fsm_name: fsm_value})
    assert {f: arg(cmd, f) for f in with_both} == with_both


def test_horovod_args_are_split_and_passed_before_the_script(tmp_path, monkeypatch):
    cmd = horovodrun(tmp_path, monkeypatch, HOROVOD_ARGS="--verbose --log-level INFO")
    assert cmd[-5:-2] == ["--verbose", "--log-level", "INFO"] and cmd[-2:] == [sys.executable, str(tmp_path / "train.py")]


@pytest.mark.parametrize("env,timeline", [
    ({"ENABLE_TIMELINE": "1", "OCI__SYNC_DIR": "{sync}"}, "{sync}/timeline.json"),
    ({"ENABLE_TIMELINE": "0", "OCI__SYNC_DIR": "{sync}"}, None),
    ({"ENABLE_TIMELINE": "1", "OCI__HOROVOD_TIMELINE": "0", "OCI__SYNC_DIR": "{sync}"}, None),
    ({"ENABLE_TIMELINE": "0", "OCI__HOROVOD_TIMELINE": "1", "OCI__SYNC_DIR": "{sync}"}, "{sync}/timeline.json"),
    ({}, None),
])
def test_enable_timeline_writes_to_the_sync_dir(tmp_path, monkeypatch, env, timeline):
    sync = tmp_path / "sync"
    env = {k: v.format(sync=sync) for k, v in env.items()}
    cmd = horovodrun(tmp_path, monkeypatch, **env)
    assert arg(cmd, "--timeline-filename") == (timeline and timeline.format(sync=sync))
    if timeline:
        assert sync.is_dir()  # made for Horovod, which does not make it


def test_the_timeline_defaults_to_the_images_sync_dir():
    assert horovod.horovodrun_options({"ENABLE_TIMELINE": "1"}) == ["--timeline-filename", "/opt/ml/timeline.json"]


@pytest.mark.parametrize("env,message", [
    ({"NP": "many"}, "NP: must be a whole number >= 1 (got 'many')"),
    ({"SLOTS": "0"}, "SLOTS: must be a whole number >= 1 (got '0')"),
    ({"MIN_NP": "4", "NP": "3"}, "Horovod needs 1 <= MIN_NP <= NP <= OCI__HOROVOD_MAX_NP (got 4, 3, 3)"),
    ({"START_TIMEOUT": "10m"}, "START_TIMEOUT: must be a whole number >= 1 (got '10m')"),
    ({"WORKER_PORT": "ssh"}, "WORKER_PORT: not a port number (1-65535, or 0/auto for a free one): 'ssh'"),
    ({"WORKER_PORT": "auto"}, "WORKER_PORT: the workers' sshd port must be given (1-65535), not picked: 'auto'"),
    ({"ENABLE_TIMELINE": "maybe"}, "ENABLE_TIMELINE: expected 1/0 or true/false, got 'maybe'"),
    ({"HOROVOD_ARGS": "--x 'open"}, "HOROVOD_ARGS: cannot split \"--x 'open\" (No closing quotation)"),
])
def test_a_bad_horovod_image_value_names_the_variable_on_both_sides(tmp_path, monkeypatch, env, message):
    with pytest.raises(SettingsError) as e:
        horovodrun(tmp_path, monkeypatch, **env)
    assert str(e.value) == message
    from engines.specs import spec

    with pytest.raises(SpecError) as e:
        load_spec_text(spec("HOROVOD", env=env), environ={})
    assert f": {message}, line " in str(e.value)


def test_the_oracle_ads_horovod_spec_variables_load():
    """The docs' HOROVOD spec env: WORKER_PORT 12345, START_TIMEOUT 600, ENABLE_TIMELINE 0,
    HOROVOD_ARGS --verbose."""
    from engines.specs import spec

    from fsm_cluster.jobspec import node_environments

    env = {"WORKER_PORT": "12345", "START_TIMEOUT": "600", "ENABLE_TIMELINE": "0", "HOROVOD_ARGS": "--verbose"}
    nodes = node_environments(load_spec_text(spec("HOROVOD", env=env), environ={}))
    assert horovod.horovodrun_options(nodes[0].env) == ["--start-timeout", "600", "-p", "12345"]


def test_ephemeral_none_as_oracle_ads_writes_it_is_the_default():
    """oracle-ads' converter writes str(None) for a spec without `ephemeral:`; its runner takes
    any non-empty value as ephemeral."""
    from fsm_cluster.env import Settings

    base = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/wd"}
    assert Settings.from_env({**base, "OCI__EPHEMERAL": "None"}).ephemeral is True
    assert Settings.from_env({**base, "OCI__EPHEMERAL": "False"}).ephemeral is False
