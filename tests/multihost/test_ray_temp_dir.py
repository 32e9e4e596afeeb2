"""Which temp dir a built-in Ray node is given (fsm_cluster.frameworks.ray): its own, whatever its
address, unless the user's ``OCI__START_ARGS`` names one. No namespaces needed: this runs anywhere;
tests/multihost/test_engines.py's Ray test checks it on three hosts."""

from __future__ import annotations

import pytest

from fsm_cluster.frameworks.ray import TEMP_DIR_ROOM, names_temp_dir, node_temp_dir


def test_every_node_of_a_cluster_gets_a_temp_dir_of_its_own():
    dirs = {node_temp_dir("job-1", node, "/tmp/fsmh-abcdef/h0") for node in ("MAIN", "WORKER_w1", "WORKER_w2")}
    assert len(dirs) == 3 and all(d.startswith("/tmp/fsmh-abcdef/h0/ray-") for d in dirs), dirs
    assert node_temp_dir("job-1", "MAIN", "/t") == node_temp_dir("job-1", "MAIN", "/t")  # a restart: the same
    assert node_temp_dir("job-2", "MAIN", "/t") != node_temp_dir("job-1", "MAIN", "/t")  # another cluster's


def test_a_temp_dir_fits_rays_socket_paths():
    assert node_temp_dir("job", "MAIN", "/tmp/" + "x" * 200).startswith("/tmp/ray-")
    assert len(node_temp_dir("job", "MAIN", "/tmp/fsmh-abcdef/h12")) <= TEMP_DIR_ROOM


@pytest.mark.parametrize(("args", "named"), [
    (["--num-cpus", "1"], False), (["--temp-dir", "/x"], True), (["--temp-dir=/x"], True),
    (["--temp-dirs", "/x"], False)])
def test_the_users_temp_dir_is_respected(args, named):
    assert names_temp_dir(args) is named
