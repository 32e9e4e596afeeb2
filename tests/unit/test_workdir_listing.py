"""``WorkDir.subdirectories``: the public listing ``status`` uses to find the clusters of a work dir."""

from __future__ import annotations

import pytest

from fsm_cluster.wire.workdir import WorkDir


def test_subdirectories_are_the_folders_directly_under_the_dir(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c2" / "logs").mkdir(parents=True)
    (tmp_path / "stray.txt").write_text("not a cluster")
    assert sorted(WorkDir(str(tmp_path), "").subdirectories()) == ["c1", "c2"]
    assert WorkDir(str(tmp_path), "c2").subdirectories() == ["logs"]


def test_subdirectories_of_a_missing_dir_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        WorkDir(str(tmp_path / "nope"), "").subdirectories()
