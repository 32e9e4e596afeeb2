"""A cluster spec on OCI Data Science Jobs: one job definition, then one job run per node.

The job carries the cluster-wide environment (``job_def_info``); each run carries only its own
(``OCI__MODE``, ``RANK``, its group's env and start options) — the service merges the two. MAIN's run
is created first, then the workers', then the parameter servers'. If one cannot be created, the runs
already created are cancelled and :class:`SubmitError` names them. A plan of more than
:data:`DEFAULT_MAX_NODES` nodes needs the operator's ``--max-nodes`` (:func:`check_size`).

The job's environment carries a fresh cluster secret (``OCI__CLUSTER_SECRET``) with which the nodes
sign and check every file of the work dir: it reaches them through the Data Science API, never
the work dir; the dry run masks it, and ``submit`` keeps it on this machine for ``fsm-cluster stop``
and ``status`` (:mod:`fsm_cluster.wire.secretstore`).

``watch`` follows the runs and, for recovery (issue 15), replaces a lost WORKER/PS run: when one
ends other than SUCCEEDED while MAIN's run goes on, and MAIN's state file in the work dir records a
restart waiting for that node (``WORKER_<run OCID>``), a new run is created with the lost run's
environment plus ``OCI__REPLACES``. MAIN alone decides (its restart policy, its budget); the
watcher never creates more replacements than MAIN's records, and MAIN itself is never replaced:
the rule is :mod:`.replace`'s (shared with the local launcher), the mechanism — a new job run — is
:func:`replacer`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import FsmClusterError
from ..jobspec import ClusterConfigToJobSpecConverter, ClusterSpec
from ..runtime.oci_auth import describe_error
from ..wire import secretstore
from .replace import Replacer, replaceable, replacement_env, replacement_name

log = logging.getLogger(__name__)

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "DELETED", "NEEDS_ATTENTION"}
DEFAULT_BLOCK_STORAGE_GB = 50
DEFAULT_MAX_NODES = 64  # nodes (job runs) a submit creates without --max-nodes
ADS_IMAGE_PLACEHOLDER = "@image"
PLACEHOLDER_ARTIFACT = b"#!/bin/sh\n# fsm_cluster: container job, the image's entrypoint runs the node\nexec fsm-cluster run\n"


class SubmitError(FsmClusterError):
    """The job or a run could not be created (what was created is named, runs were cancelled)."""

    exit_code = 1


@dataclass
class Plan:
    """What ``submit`` creates: the job (``job_def_info``) and one run per node (``run_infos``)."""

    spec: ClusterSpec
    job: dict
    runs: list[dict]

    @property
    def work_dir(self) -> str:
        return self.spec.cluster.work_dir


@dataclass
class Submitted:
    job_id: str
    runs: list[tuple[dict, str]] = field(default_factory=list)  # (run info, run OCID)
    work_dir: str = ""
    plan: Plan | None = None  # what was submitted (a replacement run is made from it)
    secret: str | None = field(default=None, repr=False)  # the cluster's: MAIN's state is signed

    @property
    def cluster_dir(self) -> str:
        return f"{self.work_dir.rstrip('/')}/{self.job_id}"


def check_size(spec: ClusterSpec, max_nodes: int | None) -> None:
    """Each node is a job run — a billed VM: a plan of more than :data:`DEFAULT_MAX_NODES` nodes (or
    than ``max_nodes``, the operator's ``--max-nodes``) is a SpecError naming the replicas, before a
    run is planned (a typo's ``replicas: 100000`` would plan 100,001 runs)."""
    c = spec.cluster
    workers, ps = (c.worker.count() if c.worker else 0), (c.ps.count() if c.ps else 0)
    total, limit = 1 + workers + ps, DEFAULT_MAX_NODES if max_nodes is None else max_nodes
    if total <= limit:
        return
    group = "worker" if c.worker is not None and c.worker.replicas and (c.ps is None or workers >= ps) else "ps"
    shape = f"1 MAIN + {workers} WORKER" + (f" + {ps} PS" if ps else "")
    consent = (f"more than the {limit} nodes a submit creates unless told: pass --max-nodes {total} if you "
               "mean it" if max_nodes is None else f"more than --max-nodes {limit}")
    raise spec.error(("spec", "cluster", "spec", group, "replicas"),
                     f"{total} nodes ({shape}), one job run (a billed VM) each, is {consent}")


def plan(spec: ClusterSpec, max_nodes: int | None = None) -> Plan:
    """The job and runs for ``spec``; what OCI needs and the spec lacks → SpecError (path, line);
    more nodes than :func:`check_size` allows → SpecError too."""
    check_size(spec, max_nodes)
    conv = ClusterConfigToJobSpecConverter(spec)
    job = conv.job_def_info()
    infra = ("spec", "infrastructure")
    if spec.spec.infrastructure is None:
        raise spec.error(infra, "required to submit to OCI Data Science Jobs "
                                "(compartmentId, projectId, shapeName)")
    ispec = spec.spec.infrastructure.spec
    for key, value in (("compartmentId", ispec.compartment_id), ("projectId", ispec.project_id),
                       ("shapeName", ispec.shape_name)):
        if not value:
            raise spec.error(infra + ("spec", key), "required to submit to OCI Data Science Jobs")
    image = job["image"]
    where = ("spec", "cluster", "spec", "image")
    if not image:
        raise spec.error(where, "required to submit (the container image of the nodes)")
    if image.strip() == ADS_IMAGE_PLACEHOLDER:
        raise spec.error(where, f"{image!r} is ADS' placeholder for a locally built image; "
                                "set the image's registry URI (region.ocir.io/tenancy/repo:tag)")
    if "://" not in spec.cluster.work_dir:
        log.warning("workDir %r is a local path: the job runs need a shared work dir (oci://...)",
                    spec.cluster.work_dir)
    job["envVars"].setdefault(secretstore.OCI__CLUSTER_SECRET, secretstore.new_secret())
    return Plan(spec, job, conv.run_infos())


# ------------------------------------------------------------------------------------------------
# request bodies
# ------------------------------------------------------------------------------------------------
def job_details(p: Plan):
    """``CreateJobDetails`` for the plan's job (a container job on the spec's infrastructure)."""
    from oci.data_science import models as m

    infra = p.spec.spec.infrastructure.spec
    shape = None
    if infra.shape_config_details:
        shape = m.JobShapeConfigDetails(ocpus=infra.shape_config_details.ocpus,
                                        memory_in_gbs=infra.shape_config_details.memory_in_gbs)
    logs = None
    if infra.log_group_id or infra.log_id:
        logs = m.JobLogConfigurationDetails(enable_logging=True,
                                            enable_auto_log_creation=not infra.log_id,
                                            log_group_id=infra.log_group_id, log_id=infra.log_id)
    return m.CreateJobDetails(
        project_id=infra.project_id,
        compartment_id=infra.compartment_id,
        display_name=p.job["name"] or "fsm-cluster",
        job_configuration_details=m.DefaultJobConfigurationDetails(
            job_type="DEFAULT", environment_variables=p.job["envVars"]),
        job_infrastructure_configuration_details=m.StandaloneJobInfrastructureConfigurationDetails(
            job_infrastructure_type="STANDALONE" if infra.subnet_id else "ME_STANDALONE",
            shape_name=infra.shape_name,
            subnet_id=infra.subnet_id,
            block_storage_size_in_gbs=infra.block_storage_size or DEFAULT_BLOCK_STORAGE_GB,
            job_shape_config_details=shape),
        job_environment_configuration_details=m.OcirContainerJobEnvironmentConfigurationDetails(
            job_environment_type="OCIR_CONTAINER", image=p.job["image"]),
        job_log_configuration_details=logs,
        freeform_tags={"fsm_cluster": p.spec.cluster_type},
    )


def run_details(p: Plan, job_id: str, run: dict):
    """``CreateJobRunDetails`` for one node: its name and its own environment."""
    from oci.data_science import models as m

    infra = p.spec.spec.infrastructure.spec
    image = None
    if run.get("image") and run["image"] != p.job["image"]:
        image = m.OcirContainerJobEnvironmentConfigurationDetails(
            job_environment_type="OCIR_CONTAINER", image=run["image"])
    return m.CreateJobRunDetails(
        project_id=infra.project_id,
        compartment_id=infra.compartment_id,
        job_id=job_id,
        display_name=run["name"],
        job_configuration_override_details=m.DefaultJobConfigurationDetails(
            job_type="DEFAULT", environment_variables=run["envVars"]),
        job_environment_configuration_override_details=image,
        freeform_tags={"fsm_cluster_mode": run["mode"], "fsm_cluster_rank": str(run["rank"]),
                       **({"fsm_cluster_replaces": run["replaces"]} if run.get("replaces") else {})},
    )


def dry_run_document(p: Plan) -> dict:
    """What would be created, as plain data (printed as YAML by ``submit --dry-run``)."""
    env = dict(p.job["envVars"])
    if env.get(secretstore.OCI__CLUSTER_SECRET):
        env[secretstore.OCI__CLUSTER_SECRET] = "*** (a new secret per submit)"
    job = {"name": p.job["name"], "image": p.job["image"], "infrastructure": p.job["infrastructure"],
           "envVars": env}
    runs = []
    for r in p.runs:
        run = {"name": r["name"], "mode": r["mode"], "rank": r["rank"]}
        if r.get("image") and r["image"] != p.job["image"]:
            run["image"] = r["image"]
        run["envVars"] = r["envVars"]
        runs.append(run)
    return {"job": job, "runs": runs, "workDir": p.work_dir}


# ------------------------------------------------------------------------------------------------
# submitting
# ------------------------------------------------------------------------------------------------
def submit(p: Plan, client, out: Callable[[str], None] = print) -> Submitted:
    """Create the job and every run with ``client`` (a DataScienceClient)."""
    try:
        job = client.create_job(job_details(p)).data
    except Exception as e:
        raise SubmitError(f"cannot create the job: {describe_error(e)}") from None
    result = Submitted(job_id=job.id, work_dir=p.work_dir, plan=p,
                       secret=p.job["envVars"][secretstore.OCI__CLUSTER_SECRET])
    secretstore.save(result.cluster_dir, p.job["envVars"][secretstore.OCI__CLUSTER_SECRET])
    out(f"job {job.display_name}: {job.id}")
    if job.lifecycle_state != "ACTIVE":
        _upload_placeholder_artifact(client, job.id)
    for run in p.runs:
        try:
            created = client.create_job_run(run_details(p, job.id, run)).data
        except Exception as e:
            cancelled, failed = cancel_runs(client, result.runs)
            lines = [f"cannot create run {run['name']} ({run['mode']}, rank {run['rank']}): "
                     f"{describe_error(e)}"]
            if cancelled:
                lines.append("cancelled the runs already created: " +
                             ", ".join(f"{r['name']} ({ocid})" for r, ocid in cancelled))
            if failed:
                lines.append("could NOT cancel: " + ", ".join(f"{r['name']} ({ocid}): {why}"
                                                              for r, ocid, why in failed))
            lines.append(f"the job {job.id} is left in place")
            raise SubmitError("\n".join(lines)) from None
        result.runs.append((run, created.id))
        out(f"run {run['name']} ({run['mode']}, rank {run['rank']}): {created.id}")
    out(f"work dir: {result.cluster_dir}")
    return result


def _upload_placeholder_artifact(client, job_id: str) -> None:
    """A job that is not ACTIVE after creation waits for an artifact: give it a tiny one (the
    container's entrypoint runs the node; the artifact is never used)."""
    try:
        client.create_job_artifact(job_id, PLACEHOLDER_ARTIFACT,
                                   content_disposition="attachment; filename=fsm_cluster_entry.sh")
    except Exception as e:
        raise SubmitError(f"job {job_id} was created but its artifact could not be uploaded: "
                          f"{describe_error(e)}") from None


def cancel_runs(client, runs: list[tuple[dict, str]]):
    """Cancel ``runs`` (newest first) → (cancelled, [(run, ocid, why)] that could not be)."""
    cancelled, failed = [], []
    for run, ocid in reversed(runs):
        try:
            client.cancel_job_run(ocid, retry_strategy=_cleanup_retry())
            cancelled.append((run, ocid))
        except Exception as e:
            failed.append((run, ocid, describe_error(e)))
    return list(reversed(cancelled)), failed


def _cleanup_retry():
    """A short retry for clean-up calls (the SDK's default may retry a 409 for minutes)."""
    import oci

    return oci.retry.RetryStrategyBuilder(
        max_attempts_check=True, max_attempts=3, total_elapsed_time_check=True,
        total_elapsed_time_seconds=30, retry_max_wait_between_calls_seconds=5,
        retry_base_sleep_time_seconds=1).get_retry_strategy()


def node_id(run: dict, ocid: str) -> str:
    """The node a run is in the work dir: ``MAIN``, ``WORKER_<run OCID>``, ``PS_<run OCID>``."""
    return "MAIN" if run["mode"] == "MAIN" else f"{run['mode']}_{ocid}"


def replacement(run: dict, ocid: str, count: int) -> dict:
    """The run that replaces ``run`` (lost) for MAIN's restart ``count``: its environment (mode,
    rank, every variable) and ``OCI__REPLACES`` (:mod:`.replace`); its name says whom it replaces."""
    base = run.get("base", run["name"])
    lost = node_id(run, ocid)
    return {**run, "base": base, "name": f"{replacement_name(base, count)} (replaces rank {run['rank']})",
            "replaces": lost, "envVars": replacement_env(run["envVars"], lost)}


class MainRestarts:
    """MAIN's restart records, read from the work dir (checked with the cluster's secret); an
    unreadable or forged state file counts as no record (said once per reason)."""

    def __init__(self, submitted: Submitted, out: Callable[[str], None], storage_options: dict | None = None):
        self.submitted, self.out, self.storage_options = submitted, out, storage_options
        self._workdir = None
        self._unreadable: str | None = None

    def __call__(self) -> list:
        from ..wire.workdir import WorkDir

        try:
            if self._workdir is None:
                self._workdir = WorkDir(self.submitted.work_dir, self.submitted.job_id,
                                        storage_options=self.storage_options, secret=self.submitted.secret)
            state = self._workdir.read_state("MAIN")
        except FsmClusterError as e:
            if str(e) != self._unreadable:
                self._unreadable = str(e)
                self.out(f"cannot read MAIN's state (no replacement without its record): {e}")
            return []
        return list(state.restarts) if state is not None else []


def replacer(client, submitted: Submitted, out: Callable[[str], None],
             storage_options: dict | None = None) -> Replacer[tuple[dict, str]]:
    """The shared :class:`~.replace.Replacer` with OCI's mechanism: MAIN's records from the work
    dir, a replacement as a new job run of the submitted job (a run still going is left alone)."""

    def create_run(lost: tuple[dict, str], record) -> None:
        run, ocid = lost
        new = replacement(run, ocid, record.count)
        why = f" ({record.reason})" if record.reason else ""
        try:
            details = run_details(submitted.plan, submitted.job_id, new)
            created = client.create_job_run(details).data
        except Exception as e:
            out(f"restart {record.count}{why}: cannot create the run replacing {run['name']} "
                f"(rank {run['rank']}): {describe_error(e)}")
            return
        submitted.runs.append((new, created.id))
        out(f"restart {record.count}{why}: {run['name']} ({run['mode']}, rank {run['rank']}) "
            f"is replaced by run {new['name']}: {created.id}")

    return Replacer(records=MainRestarts(submitted, out, storage_options), start=create_run)


def watch(client, submitted: Submitted, out: Callable[[str], None] = print, interval: float = 10.0,
          sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None,
          storage_options: dict | None = None) -> int:
    """Print every run's state changes until all runs ended; 0 when MAIN succeeded, else 1. A
    WORKER/PS run lost while MAIN's goes on is replaced when MAIN's state records a restart
    waiting for it (:func:`replacer`; ``storage_options`` for the work dir)."""
    last: dict[str, str] = {}
    polls = 0
    replacements = replacer(client, submitted, out, storage_options)
    while True:
        for run, ocid in list(submitted.runs):
            if last.get(ocid) in TERMINAL:
                continue
            try:
                data = client.get_job_run(ocid).data
                state = data.lifecycle_state
                detail = data.lifecycle_details or ""
            except Exception as e:
                state, detail = last.get(ocid, "UNKNOWN"), f"(cannot read: {describe_error(e)})"
            if state != last.get(ocid):
                out(f"{run['name']} ({run['mode']}): {state}" + (f" {detail}" if detail else ""))
                last[ocid] = state
        polls += 1
        main = next(ocid for run, ocid in submitted.runs if run["mode"] == "MAIN")
        if last.get(main) not in TERMINAL:
            replacements.serve({node_id(run, ocid): (run, ocid) for run, ocid in submitted.runs
                                if replaceable(run["mode"]) and last.get(ocid) in TERMINAL
                                and last[ocid] != "SUCCEEDED"})
        if all(last.get(ocid) in TERMINAL for _, ocid in submitted.runs):
            return 0 if last[main] == "SUCCEEDED" else 1
        if max_polls is not None and polls >= max_polls:
            return 1
        sleep(interval)
