# The image's run script, as oracle-ads' samples write it (only the import lines are fsm_cluster's).
from fsm_cluster.registry import ClusterProviderFactory
from fsm_cluster.runner import ClusterRunner
from ray_style import RayStyleProvider

if __name__ == "__main__":
    ClusterProviderFactory.register("RAY", RayStyleProvider)
    ClusterRunner().run()
