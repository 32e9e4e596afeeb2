"""Suite-wide: a private secret store, and the test tiers.

Launchers keep cluster secrets under $XDG_CACHE_HOME; the tests' go to a temporary folder, never
the real home.

Tiers (README, "Run the tests"): markers set here, in one place, rather than in the test files:

* ``engines`` — the test starts a real framework engine (Dask, PyTorch/gloo, TensorFlow, Horovod,
  Ray): every test that uses the ``engine_cluster`` or ``sample_cluster`` fixture, and those in
  ENGINE_TESTS.
* ``slow`` — the test takes about 2.5-3 s or more on a 2-core machine by design (heartbeat timeouts
  waited out, clusters formed and torn down, outages sized against a timeout): SLOW below, by
  test (all its parameters) or by file. ``-m "not engines and not slow"`` is the inner loop.
* ``solo`` — under pytest-xdist (``-n``), the test runs with no other test at the same time
  (SOLO): a shared/exclusive file lock between the workers. Ray's ``ray start`` gives up when its
  raylet has not registered within a hard-coded 30 s, which a busy 2-core machine can cause.

Under xdist (``-n 2 --dist loadgroup``, scripts/test.sh) the engine tests share one worker
(``xdist_group("engines")``): two engine clusters never compete for the 2 cores.

Collection order is kept on purpose: some in-process tests end every descendant of the pytest
process when their node tears down (ProcessGroup.terminate_all), which takes a worker's session
S3 server (tests/faults/conftest.py) with them; in file order every test that needs that server
has run before any of those.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

# -- tiers ------------------------------------------------------------------------------------------
ENGINE_FIXTURES = {"engine_cluster", "sample_cluster"}
ENGINE_TESTS = {
    "tests/engines/test_dask.py::test_check_cluster_status_reports_the_workers_and_closes_its_client",
    "tests/integration/test_stall.py::test_a_gloo_all_reduce_one_rank_never_joins_is_failed_with_that_call_named",
    "tests/cli/test_hostile_input.py::test_the_next_command_printed_by_init_runs[dask]",
}

# Measured with --durations on 2 shared cores (each >= ~2.5-3 s alone; the machine was shared, so
# borderline ones were put here when they also wait on a timeout by design); a file stands for all
# its tests, a name without [...] for all its parameters.
SLOW = {
    "tests/faults/test_production_defaults.py",  # SIGSTOP at the production 60 s heartbeat timeout
    "tests/compat/test_wire_ads.py::test_a_mixed_cluster_forms_runs_and_completes",  # oracle-ads polls every 10 s
    "tests/faults/test_s3_outage.py",
    "tests/faults/test_channel_live.py",
    "tests/faults/test_stop_race.py",
    "tests/faults/test_faults.py::test_two_nodes_racing_to_write_the_stop_marker",
    "tests/faults/test_faults.py::test_work_dir_deleted_under_a_running_cluster",
    "tests/faults/test_faults.py::test_sigstop_worker_mid_run",
    "tests/faults/test_faults.py::test_corrupt_or_truncated_main_config",
    "tests/faults/test_faults.py::test_sigterm_to_main_is_a_stopped_cluster_with_final_sync",
    "tests/faults/test_faults.py::test_kill9_worker_mid_run[s3]",
    "tests/faults/test_faults.py::test_kill9_main_mid_run[s3]",
    "tests/faults/test_faults.py::test_entry_script_failing_on_one_node[s3]",
    "tests/integration/test_stall.py",
    "tests/integration/test_dump.py::test_dump_writes_every_live_nodes_stacks_and_the_cluster_goes_on",
    "tests/integration/test_blocking_provider.py",
    "tests/integration/test_recovery.py::test_a_lost_worker_is_replaced_and_the_cluster_completes",
    "tests/integration/test_recovery.py::test_on_failure_restarts_the_code_in_place_within_the_backoff_limit",
    "tests/integration/test_recovery.py::test_past_the_active_deadline_the_cluster_fails_saying_so",
    "tests/integration/test_recovery.py::test_exit_code_policy_retries_only_signals",
    "tests/integration/test_recovery.py::test_past_the_backoff_limit_the_cluster_fails_saying_so",
    "tests/integration/test_timeline_cli.py",
    "tests/integration/test_resources.py",
    "tests/integration/test_local_processes.py::test_ttl_expiry_of_a_non_ephemeral_cluster",
    "tests/integration/test_local_processes.py::test_oracle_ads_stop_file_ends_nodes_once_their_code_is_done",
    "tests/integration/test_control_channel.py::test_the_outcome_reaches_every_node_over_the_channel",
    "tests/cli/test_local_recovery.py::test_a_lost_node_main_never_decides_on_fails_the_cluster_after_main_s_heartbeat_timeout",
    "tests/cli/test_local_recovery.py::test_policy_never_a_lost_node_ends_the_cluster_as_before",
    "tests/cli/test_local_recovery.py::test_a_restart_record_of_main_gets_the_lost_node_replaced",
    "tests/cli/test_local_recovery.py::test_kill_9_of_a_worker_under_on_failure_is_replaced_and_the_job_completes",
    "tests/cli/test_hostile_input.py::test_the_next_command_printed_by_init_runs",
    "tests/cli/test_local_secret.py",
    "tests/cli/test_object_store.py",
    "tests/cli/test_status_stop.py::test_live_cluster_status_watch_and_stop_from_another_process",
    "tests/compat/test_ads_surface.py::test_processes_a_start_script_backgrounds_are_ended_with_the_node",
    "tests/compat/test_ads_runner_shape.py::test_under_an_oracle_ads_main_the_bare_stop_file_ends_the_worker",
    "tests/security/test_workdir_attacks.py::test_forged_files_are_refused_by_real_nodes",
    "tests/oci/test_oci_submit.py::test_cancel_retries_are_bounded",
    "tests/unit/test_timeline.py::test_the_drawn_spans_are_the_recorded_transitions",
    # multi-host (network namespaces): measured 70, 21, 12 and 4 s alone
    "tests/multihost/test_trivial.py::test_a_cut_off_worker_is_named_the_culprit",
    "tests/multihost/test_trivial.py::test_a_link_healed_within_the_heartbeat_timeout_completes",
    "tests/multihost/test_hosts.py::test_each_host_has_its_address_and_a_first_interface_that_reaches_nothing",
    "tests/multihost/test_hosts.py::test_a_cut_host_is_unreachable_its_processes_live_and_a_heal_brings_it_back",
}

# Run alone under xdist (see the module's docstring).
SOLO = {
    "tests/engines/test_ray.py",
    "tests/compat/test_sample_styles.py::test_ray_sample_style",
}


def _match(item: pytest.Item, names: set[str]) -> str | None:
    """The entry of ``names`` that covers ``item``: its file, its test (every parameter) or itself."""
    nodeid = item.nodeid
    for key in (nodeid, nodeid.split("[", 1)[0], nodeid.split("::", 1)[0]):
        if key in names:
            return key
    return None


def pytest_configure(config):
    # engines, slow and solo are registered in pyproject.toml; xdist_group is pytest-xdist's own
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's --dist loadgroup (not installed)")


def pytest_collection_modifyitems(config, items):
    used: set[str] = set()
    files = {item.nodeid.split("::", 1)[0] for item in items}
    for item in items:
        listed = _match(item, ENGINE_TESTS)
        used.add(listed)
        if listed or ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engines)
        if item.get_closest_marker("engines"):  # here, or by the test file itself
            # under xdist --dist loadgroup: one engine cluster at a time (they are CPU-heavy), on
            # one worker, while the other worker runs the rest
            item.add_marker(pytest.mark.xdist_group("engines"))
        for names, mark in ((SLOW, pytest.mark.slow), (SOLO, pytest.mark.solo)):
            key = _match(item, names)
            if key:
                used.add(key)
                item.add_marker(mark)
    # an entry whose file was collected but that covers no test there has gone stale (renamed)
    stale = sorted(k for k in (SLOW | SOLO | ENGINE_TESTS) - used if k.split("::", 1)[0] in files)
    whole_files = all(os.path.isdir(a) for a in config.args)  # not `pytest file.py::one_test`
    if stale and whole_files and not config.getoption("keyword") and not config.getoption("markexpr"):
        warnings.warn(pytest.PytestConfigWarning(f"tests/conftest.py names tests that do not exist: {stale}"))


# -- solo: a shared/exclusive lock between xdist workers --------------------------------------------
@contextmanager
def _flock(path: Path, mode: int):
    with open(path, "a+") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _solo(request, tmp_path_factory):
    """Under xdist every test holds a shared lock and a ``solo`` test an exclusive one, for its
    setup, run and teardown. A turnstile taken first keeps a waiting solo test from being
    overtaken by the next shared ones."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    run_dir = tmp_path_factory.getbasetemp().parent  # shared by this run's workers
    solo = request.node.get_closest_marker("solo") is not None
    with _flock(run_dir / "solo.turnstile", fcntl.LOCK_EX):
        lock = _flock(run_dir / "solo.lock", fcntl.LOCK_EX if solo else fcntl.LOCK_SH)
        lock.__enter__()
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


# -- secrets ----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="session")
def _private_secret_store(tmp_path_factory):
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
