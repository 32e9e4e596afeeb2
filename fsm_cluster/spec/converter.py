"""A spec → one job definition + one run per node (the seed's ``ClusterConfigToJobSpecConverter``).

The environment contract (the names live in :mod:`fsm_cluster.env`):

* job definition — ``ClusterConfigToJobSpecConverter.job_def_info()``: the cluster's
  ``config.env``, the ``OCI__*`` variables derived from the spec, then the runtime's ``env``
  (framework builders add theirs there);
* each run — ``job_run_info(jobType)`` and ``run_infos()``: that group's ``config.env``, its
  ``startOptions`` as ``OCI__START_ARGS``, ``OCI__MODE`` and ``RANK`` (MAIN 0, workers 1..n, then PS).

Every value is a string. :func:`node_environments` gives each node's full environment (job
definition merged with its run) as a :class:`NodePlan`, which is what the local launcher starts.
The converter also takes oracle-ads' own ``ClusterInfo`` and then gives oracle-ads' dicts
(:func:`ads_job_def_info`).
"""

from __future__ import annotations

import shlex
from typing import Any

from ..env import (
    OCI__ACTIVE_DEADLINE_SECONDS,
    OCI__BACKOFF_LIMIT,
    OCI__CA_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_AUTHORITY_OCID,
    OCI__CERTIFICATE_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_OCID,
    OCI__CLUSTER_NETWORK,
    OCI__CLUSTER_TYPE,
    OCI__CODE_DIR,
    OCI__ENTRY_SCRIPT,
    OCI__ENTRY_SCRIPT_ARGS,
    OCI__ENTRY_SCRIPT_KWARGS,
    OCI__EPHEMERAL,
    OCI__LIFE_SPAN,
    OCI__MODE,
    OCI__PS_COUNT,
    OCI__RESTART_BACKOFF,
    OCI__RESTART_POLICY,
    OCI__RUN_ON,
    OCI__RUNTIME_GIT_BRANCH,
    OCI__RUNTIME_GIT_COMMIT,
    OCI__RUNTIME_GIT_SECRET_ID,
    OCI__RUNTIME_PYTHON_PATH,
    OCI__RUNTIME_TYPE,
    OCI__RUNTIME_URI,
    OCI__STALL_TIMEOUT,
    OCI__START_ARGS,
    OCI__WORK_DIR,
    OCI__WORKER_COUNT,
    RANK,
)
from .models import MODES, ClusterSpec, NodeGroup
from .nodeplan import NodePlan


def _text(v: Any) -> str:
    return "" if v is None else str(v)


class ClusterConfigToJobSpecConverter:
    """``cluster_info`` → the job definition and the job runs, as in oracle-ads.

    ``cluster_info`` is a :class:`ClusterSpec` (:func:`load_spec`), or the object oracle-ads passes
    to its own converter: the ``ClusterInfo`` of ``ads.opctl``'s ``DistributedSpecParser`` — any
    object with ``infrastructure`` (the spec's infrastructure as a dict), ``cluster`` (``type``,
    ``image``, ``name``, ``work_dir``, ``ephemeral``, ``certificate``, ``config.envVars`` /
    ``config.cmd_args``, and ``main`` / ``worker`` / ``ps`` with ``name``, ``image``,
    ``replicas``, ``config``) and ``runtime`` (``entry_point``, ``args``, ``kwargs``, ``envVars``,
    ``type``, ``uri``, ``branch``, ``commit``, ``git_secret_id``, ``code_dir``, ``python_path``).
    Such an object gets oracle-ads' own dicts (:func:`ads_job_def_info`); a ClusterSpec gets
    fsm_cluster's, which add what the spec says beyond oracle-ads (lifeSpan, runOn, ...).
    """

    def __init__(self, cluster_info: Any):
        if not isinstance(cluster_info, ClusterSpec):
            missing = [a for a in ("infrastructure", "cluster", "runtime") if not hasattr(cluster_info, a)]
            if missing:
                raise TypeError(f"cluster_info must be a ClusterSpec or oracle-ads' ClusterInfo "
                                f"(no {', '.join(missing)} on {type(cluster_info).__name__})")
        self.cluster_info = cluster_info

    def job_def_info(self) -> dict:
        """``{"infrastructure", "image", "name", "envVars"}`` of the one job definition."""
        info = self.cluster_info
        if not isinstance(info, ClusterSpec):
            return ads_job_def_info(info)
        c = info.cluster
        rt = info.runtime
        env: dict[str, str] = dict(c.conf.env_vars)
        env[OCI__WORK_DIR] = c.work_dir
        env[OCI__EPHEMERAL] = str(c.ephemeral)
        env[OCI__CLUSTER_TYPE] = info.cluster_type
        env[OCI__WORKER_COUNT] = str(c.worker.count() if c.worker else 0)
        env[OCI__PS_COUNT] = str(c.ps.count() if c.ps else 0)
        env[OCI__START_ARGS] = c.conf.cmd_args
        env[OCI__ENTRY_SCRIPT] = _text(rt.spec.entry_point)
        optional = {
            OCI__LIFE_SPAN: c.life_span,
            OCI__RUN_ON: c.run_on,
            OCI__RESTART_POLICY: c.restart_policy,
            OCI__BACKOFF_LIMIT: _text(c.backoff_limit),
            OCI__ACTIVE_DEADLINE_SECONDS: _text(c.active_deadline_seconds),
            OCI__RESTART_BACKOFF: _text(c.restart_backoff),
            OCI__STALL_TIMEOUT: _text(c.stall_timeout),
            OCI__CLUSTER_NETWORK: c.network,
            OCI__ENTRY_SCRIPT_ARGS: entry_args(rt.spec.args),
            OCI__ENTRY_SCRIPT_KWARGS: entry_kwargs(rt.spec.kwargs),
            OCI__CODE_DIR: rt.spec.code_dir,
            OCI__RUNTIME_PYTHON_PATH: rt.spec.python_path,
        }
        if rt.runtime_type != "python":
            optional.update({
                OCI__RUNTIME_TYPE: rt.runtime_type,
                OCI__RUNTIME_URI: rt.spec.uri,
                OCI__RUNTIME_GIT_BRANCH: rt.spec.branch,
                OCI__RUNTIME_GIT_COMMIT: rt.spec.commit,
                OCI__RUNTIME_GIT_SECRET_ID: rt.spec.git_secret_id,
            })
        env.update({k: v for k, v in optional.items() if v})
        env.update(rt.env_vars)
        if c.certificate:
            cert = c.certificate
            env.update(certificate_env(cert.ca_cert.id, cert.ca_cert.download_location, cert.cert.id,
                                       cert.cert.cert_download_location,
                                       cert.cert.key_download_location))
        infra = info.infrastructure
        image = c.image or c.main.image or (c.worker.image if c.worker else None)
        name = c.name or infra.get("spec", {}).get("displayName")
        return {"infrastructure": infra, "image": image, "name": name,
                "envVars": {k: str(v) for k, v in env.items()}}

    def job_run_info(self, jobType: str) -> dict:
        """``{"name", "envVars"}`` shared by the runs of ``jobType`` (main/worker/ps) — and, for a
        ClusterSpec, the group's ``image`` — or ``{}`` when the cluster has no such group (as
        oracle-ads)."""
        job_type = jobType.lower()
        if job_type not in MODES:
            raise ValueError(f"jobType must be one of {', '.join(MODES)} (got {jobType!r})")
        group = getattr(self.cluster_info.cluster, job_type, None)
        if group is None:
            return {}
        conf = group.conf if isinstance(group, NodeGroup) else group.config
        env = dict(conf.envVars or {})
        cmd_args = (conf.cmd_args or "").strip()
        if cmd_args:
            env[OCI__START_ARGS] = cmd_args
        if isinstance(group, NodeGroup) and group.restart_policy:
            env[OCI__RESTART_POLICY] = group.restart_policy  # this role's, over the cluster's
        env[OCI__MODE] = MODES[job_type]
        info = {"name": group.name or job_type, "envVars": {k: str(v) for k, v in env.items()}}
        if isinstance(group, NodeGroup):
            info["image"] = group.image
        return info

    def run_infos(self) -> list[dict]:
        """One ``{"name", "mode", "rank", "image", "envVars"}`` per node: MAIN (rank 0), the
        workers (``<name>_<i>``, ranks 1..n), then the parameter servers (``<name>_<i>``)."""
        runs = []
        main = self.job_run_info("main")
        runs.append({**main, "mode": "MAIN", "rank": 0,
                     "envVars": {**main["envVars"], RANK: "0"}})
        for job_type in ("worker", "ps"):
            info = self.job_run_info(job_type)
            if not info:
                continue
            group = getattr(self.cluster_info.cluster, job_type)
            count = group.count() if isinstance(group, NodeGroup) else int(group.replicas or 0)
            for i in range(count):
                rank = len(runs)
                runs.append({**info, "name": f"{info['name']}_{i}", "mode": MODES[job_type],
                             "rank": rank, "envVars": {**info["envVars"], RANK: str(rank)}})
        return runs


def certificate_env(ca_id, ca_location, cert_id, cert_location, key_location) -> dict:
    """The ``OCI__CERTIFICATE_*`` / ``OCI__CA_*`` variables of a cluster's TLS certificate."""
    return {OCI__CERTIFICATE_OCID: cert_id, OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION: key_location,
            OCI__CERTIFICATE_DOWNLOAD_LOCATION: cert_location,
            OCI__CERTIFICATE_AUTHORITY_OCID: ca_id, OCI__CA_DOWNLOAD_LOCATION: ca_location}


# oracle-ads' runtime attributes → variables, set only when the runtime has a type and the value is set
_ADS_RUNTIME_VARS = (("type", OCI__RUNTIME_TYPE), ("uri", OCI__RUNTIME_URI),
                     ("branch", OCI__RUNTIME_GIT_BRANCH), ("commit", OCI__RUNTIME_GIT_COMMIT),
                     ("git_secret_id", OCI__RUNTIME_GIT_SECRET_ID), ("code_dir", OCI__CODE_DIR),
                     ("python_path", OCI__RUNTIME_PYTHON_PATH))


def ads_job_def_info(info: Any) -> dict:
    """oracle-ads' job definition for its ``ClusterInfo`` (see the converter), value for value:
    values are ``str()`` of what the object holds (an unset ``ephemeral`` is ``"None"``, as in
    oracle-ads); ``OCI__PS_COUNT`` only with a ``ps`` group; list args joined by spaces; the
    runtime's git/remote variables, code dir and python path only when the runtime has a type;
    the name from ``cluster.name`` or the infrastructure's top-level ``displayName``. The object is
    not changed (oracle-ads writes into ``cluster.config.envVars``)."""
    c, rt, infra = info.cluster, info.runtime, info.infrastructure
    env: dict[str, Any] = dict(c.config.envVars or {})
    env[OCI__WORK_DIR] = c.work_dir
    env[OCI__EPHEMERAL] = c.ephemeral
    env[OCI__CLUSTER_TYPE] = (c.type or "").upper()
    env[OCI__WORKER_COUNT] = c.worker.replicas if c.worker is not None else 0
    if c.ps is not None:
        env[OCI__PS_COUNT] = c.ps.replicas
    env[OCI__START_ARGS] = (c.config.cmd_args or "").strip()
    env[OCI__ENTRY_SCRIPT] = rt.entry_point
    if rt.type:
        env.update({name: getattr(rt, attr) for attr, name in _ADS_RUNTIME_VARS if getattr(rt, attr, None)})
    args = " ".join(str(a) for a in rt.args) if isinstance(rt.args, list) else rt.args
    if args:
        env[OCI__ENTRY_SCRIPT_ARGS] = args
    if rt.kwargs:
        env[OCI__ENTRY_SCRIPT_KWARGS] = rt.kwargs
    env.update(rt.envVars or {})
    env = {k: str(v) for k, v in env.items()}
    cert = c.certificate
    if cert:
        env.update(certificate_env(cert.ca_ocid, cert.ca_download_location, cert.cert_ocid,
                                   cert.cert_download_location, cert.key_download_location))
    groups = (c.main, c.worker)
    image = c.image or next((g.image for g in groups if g is not None and g.image), None)
    return {"infrastructure": infra, "image": image,
            "name": c.name or (infra or {}).get("displayName"), "envVars": env}


def entry_args(args: list[str] | str | None) -> str:
    """Runtime args as one shell-quoted string (the node splits it with shlex)."""
    if args is None:
        return ""
    return args if isinstance(args, str) else shlex.join(args)


def entry_kwargs(kwargs: dict[str, str] | str | None) -> str:
    """Runtime kwargs: a string as is, a mapping as ``--key value`` pairs (shell-quoted)."""
    if not kwargs:
        return ""
    if isinstance(kwargs, str):
        return kwargs
    parts: list[str] = []
    for k, v in kwargs.items():
        parts += [k if k.startswith("-") else f"--{k}", v]
    return shlex.join(parts)


def node_environments(spec: ClusterSpec) -> list[NodePlan]:
    """Every node's plan with its full environment (job def + run), MAIN first (what
    ``fsm-cluster local`` starts)."""
    conv = ClusterConfigToJobSpecConverter(spec)
    base = conv.job_def_info()["envVars"]
    return [NodePlan(r["name"], r["mode"], r["rank"], {**base, **r["envVars"]})
            for r in conv.run_infos()]
