# The image's run script, as the Horovod sample's run_horovod.py (only the import lines are fsm_cluster's).
from fsm_cluster.registry import ClusterProviderFactory
from horovod_style import HorovodStyleProvider
from runner_style import ClusterRunnerHorovodStyle


def main():
    ClusterProviderFactory.register("HOROVOD", HorovodStyleProvider)
    ClusterRunnerHorovodStyle(cluster_key="HOROVOD").run()


if __name__ == "__main__":
    main()
