# The image's run script, as oracle-ads' samples write it (only the import lines are fsm_cluster's).
from fsm_cluster.registry import ClusterProviderFactory
from fsm_cluster.runner import ClusterRunner
from tensorflow_style import TensorflowStyleProvider

if __name__ == "__main__":
    ClusterProviderFactory.register("TENSORFLOW", TensorflowStyleProvider)
    ClusterRunner(cluster_key="TENSORFLOW").run()
