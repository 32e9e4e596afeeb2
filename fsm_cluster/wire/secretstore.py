"""Where a launcher keeps a cluster's secret for the operator's later commands, out of band.

``fsm-cluster local`` and ``fsm-cluster submit`` draw one secret per cluster (``OCI__CLUSTER_SECRET``)
and hand it to every node in its environment; it is never written to the work dir and never
logged. So that ``fsm-cluster stop`` and ``status`` on this machine can sign and verify the
cluster's files, the launcher also keeps it in ``$XDG_CACHE_HOME/fsm_cluster/secrets/`` (default
``~/.cache``), one owner-only file per cluster, named by a hash of the cluster's URI. The
operator's own ``OCI__CLUSTER_SECRET`` wins over the store.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Mapping

OCI__CLUSTER_SECRET = "OCI__CLUSTER_SECRET"


def new_secret() -> str:
    return secrets.token_hex(32)


def _path(cluster_url: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(cluster_url.rstrip("/").encode()).hexdigest()[:32]
    return os.path.join(base, "fsm_cluster", "secrets", key)


def save(cluster_url: str, secret: str) -> None:
    """Keep ``secret`` for the cluster at ``cluster_url`` (best effort: a read-only home only
    means the operator passes OCI__CLUSTER_SECRET to ``stop`` and ``status`` by hand)."""
    path = _path(cluster_url)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret)
    except OSError:
        pass


def load(cluster_url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret of the cluster at ``cluster_url``: the environment's, else the store's, else None."""
    env = os.environ if environ is None else environ
    if env.get(OCI__CLUSTER_SECRET):
        return env[OCI__CLUSTER_SECRET]
    try:
        with open(_path(cluster_url), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
