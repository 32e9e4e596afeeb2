import pytest

from .cluster import EngineCluster


@pytest.fixture
def engine_cluster(tmp_path):
    """``engine_cluster(cluster_type=..., workers=2, extra={...})`` → a started-later EngineCluster,
    killed (with its private network) at the end of the test whatever happened."""
    made = []

    def make(**kwargs) -> EngineCluster:
        c = EngineCluster(tmp_path, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
