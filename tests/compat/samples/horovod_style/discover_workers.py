"""Host discovery in the style of the Horovod sample's discover_workers.py: every node's
``*config.json`` in the cluster's folder, read as a flat JSON object (``cfg["OCI__WORKER_IP"]``,
``cfg["OCI__SLOTS"]``). One entry per config file (the sample keys them by IP; here every node
has the same address). As a script, prints horovodrun's ``host:slots`` lines."""

import json
import os
from urllib.parse import urlparse

import fsspec


def discover_hosts():
    work_dir = os.environ.get("OCI__WORK_DIR")
    filesystem = fsspec.filesystem(urlparse(work_dir).scheme or "file")
    hosts = []
    for file in sorted(filesystem.glob(f"{os.path.join(work_dir, os.environ.get('JOB_OCID'))}/*config.json")):
        with filesystem.open(file, "rb") as wcf:
            cfg = json.loads(wcf.read())
        hosts.append((cfg["OCI__WORKER_IP"], int(cfg["OCI__SLOTS"])))
    return hosts


if __name__ == "__main__":
    print("\n".join(f"{ip}:{slots}" for ip, slots in discover_hosts()))
