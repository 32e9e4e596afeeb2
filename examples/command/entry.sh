#!/bin/sh
# Runs on every node of the cluster (OCI__RUN_ON=all in cluster.yaml). fsm_cluster exports the
# cluster's layout into each node's environment before starting this script.
set -eu
echo "node rank ${RANK} of ${WORLD_SIZE}: I am ${OCI__NODE_IP}, MAIN is at ${OCI__MAIN_IP}"
echo "all nodes, in rank order: ${OCI__NODE_LIST}"
echo "greeting: ${GREETING:-hello}"
