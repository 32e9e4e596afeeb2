"""The environment contract (ADS compatible): every variable's name, and one validated Settings.

A node reads its whole configuration once, here; a missing or malformed variable is a
SettingsError naming it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from types import MappingProxyType
from typing import Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SettingsError
from .validation import Problem, format_validation_error

# --- job definition (cluster-wide) -------------------------------------------------------------
OCI__WORK_DIR = "OCI__WORK_DIR"
OCI__CLUSTER_TYPE = "OCI__CLUSTER_TYPE"
OCI__EPHEMERAL = "OCI__EPHEMERAL"
OCI__LIFE_SPAN = "OCI__LIFE_SPAN"
OCI__WORKER_COUNT = "OCI__WORKER_COUNT"
OCI__PS_COUNT = "OCI__PS_COUNT"
OCI__START_ARGS = "OCI__START_ARGS"
OCI__ENTRY_SCRIPT = "OCI__ENTRY_SCRIPT"
OCI__ENTRY_SCRIPT_ARGS = "OCI__ENTRY_SCRIPT_ARGS"
OCI__ENTRY_SCRIPT_KWARGS = "OCI__ENTRY_SCRIPT_KWARGS"
OCI__RUN_ON = "OCI__RUN_ON"
OCI__RUNTIME_TYPE = "OCI__RUNTIME_TYPE"
OCI__RUNTIME_URI = "OCI__RUNTIME_URI"
OCI__RUNTIME_GIT_BRANCH = "OCI__RUNTIME_GIT_BRANCH"
OCI__RUNTIME_GIT_COMMIT = "OCI__RUNTIME_GIT_COMMIT"
OCI__RUNTIME_GIT_SECRET_ID = "OCI__RUNTIME_GIT_SECRET_ID"
OCI__CODE_DIR = "OCI__CODE_DIR"
OCI__RUNTIME_PYTHON_PATH = "OCI__RUNTIME_PYTHON_PATH"
OCI__SYNC_DIR = "OCI__SYNC_DIR"
OCI__TIMEOUT = "OCI__TIMEOUT"
OCI__HEARTBEAT_INTERVAL = "OCI__HEARTBEAT_INTERVAL"
OCI__HEARTBEAT_TIMEOUT = "OCI__HEARTBEAT_TIMEOUT"
OCI__TEARDOWN_GRACE = "OCI__TEARDOWN_GRACE"
OCI__RESTART_POLICY = "OCI__RESTART_POLICY"  # Never | OnFailure | ExitCode (Kubeflow's restartPolicy)
OCI__BACKOFF_LIMIT = "OCI__BACKOFF_LIMIT"  # restarts the whole cluster may take
OCI__ACTIVE_DEADLINE_SECONDS = "OCI__ACTIVE_DEADLINE_SECONDS"  # the whole life's deadline (0: none)
OCI__RESTART_BACKOFF = "OCI__RESTART_BACKOFF"  # the first restart's delay; doubling, capped (0: none)
OCI__RESTART_COUNT = "OCI__RESTART_COUNT"  # restarts so far (what the entry script sees)
OCI__STALL_TIMEOUT = "OCI__STALL_TIMEOUT"  # s of no output / progress on every node: a stall (0: off)
OCI__REPLACES = "OCI__REPLACES"  # set by a launcher: the lost node this one replaces
OCI__STORAGE_RETRY_BUDGET = "OCI__STORAGE_RETRY_BUDGET"  # seconds a storage call is retried
OCI__CLUSTER_SECRET = "OCI__CLUSTER_SECRET"  # per-cluster HMAC key, from the launcher, never in the work dir
OCI__EXPORTS = "OCI__EXPORTS"  # extra names a node may take from MAIN's config (comma separated)
OCI__CLUSTER_NETWORK = "OCI__CLUSTER_NETWORK"  # the nodes' network: a subnet (CIDR) or an interface name
OCI__CERTIFICATE_AUTHORITY_OCID = "OCI__CERTIFICATE_AUTHORITY_OCID"
OCI__CERTIFICATE_OCID = "OCI__CERTIFICATE_OCID"
OCI__CA_DOWNLOAD_LOCATION = "OCI__CA_DOWNLOAD_LOCATION"
OCI__CERTIFICATE_DOWNLOAD_LOCATION = "OCI__CERTIFICATE_DOWNLOAD_LOCATION"
OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION = "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION"
# --- read by the engines (fsm_cluster/frameworks/): the node's values come through
# Settings.variables, each checked where it is used by the rule the spec side checks too ---------
ENGINE_VARIABLES = frozenset({
    "OCI__DASK_SCHEDULER_PORT", "OCI__DASK_DASHBOARD_PORT", "MASTER_PORT", "OCI__PYTORCH_NPROC_PER_NODE",
    "OCI__PYTORCH_MIN_NODES",
    "OCI__TF_PORT", "OCI__RAY_PORT", "OCI__HOROVOD_SLOTS", "OCI__HOROVOD_NP", "OCI__HOROVOD_MIN_NP",
    "OCI__HOROVOD_MAX_NP", "CUDA_VISIBLE_DEVICES", "OCI__CA_DOWNLOAD_LOCATION",
    "OCI__CERTIFICATE_DOWNLOAD_LOCATION", "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION",
    "OCI__DASK_WORKER_PORT", "OCI__DASK_NANNY_PORT", "OCI__DASK_DEATH_TIMEOUT",
    "OCI__HOROVOD_START_TIMEOUT", "OCI__HOROVOD_SSH_PORT", "OCI__HOROVOD_TIMELINE",
    # oracle-ads' names, read by the engines as aliases of theirs (each engine's ALIASES): Dask's
    # spec builder and image; the Horovod image
    "OCI__WORKER_PORT", "OCI__NANNY_PORT", "OCI__WORKER_TIMEOUT",
    "HOROVOD_ARGS", "MIN_NP", "MAX_NP", "NP", "SLOTS", "START_TIMEOUT", "WORKER_PORT", "ENABLE_TIMELINE",
})
# --- per run ------------------------------------------------------------------------------------
OCI__MODE = "OCI__MODE"
RANK = "RANK"
# --- set by the platform ------------------------------------------------------------------------
JOB_OCID = "JOB_OCID"
JOB_RUN_OCID = "JOB_RUN_OCID"
# --- others -------------------------------------------------------------------------------------
SYNC_ARTIFACTS = "SYNC_ARTIFACTS"
SYNC_SLEEP = "SYNC_SLEEP"
POST_PROCESSING_WAIT = "POST_PROCESSING_WAIT"  # oracle-ads: seconds a node sleeps at its very end
WORKSPACE = "WORKSPACE"
WORKSPACE_PREFIX = "WORKSPACE_PREFIX"
PROFILE = "PROFILE"
PROFILE_CMD = "PROFILE_CMD"
OCI_IAM_TYPE = "OCI_IAM_TYPE"
OCI_CONFIG_PROFILE = "OCI_CONFIG_PROFILE"
OCIFS_CONFIG_PROFILE = "OCIFS_CONFIG_PROFILE"  # oracle-ads' second name for the profile
DEFAULT_CONFIG_PROFILE = "DEFAULT"
OCI_CONFIG_LOCATION = "OCI_CONFIG_LOCATION"
# --- exported by fsm_cluster to every node's processes ------------------------------------------
OCI__MAIN_IP = "OCI__MAIN_IP"
OCI__WORKER_IP = "OCI__WORKER_IP"
OCI__NODE_IP = "OCI__NODE_IP"
OCI__NODE_RANK = "OCI__NODE_RANK"
OCI__WORLD_SIZE = "OCI__WORLD_SIZE"
OCI__NODE_LIST = "OCI__NODE_LIST"
OCI__CLUSTER_ID = "OCI__CLUSTER_ID"
WORLD_SIZE = "WORLD_SIZE"

_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n", ""}

MIN_STALL_TIMEOUT = 1.0  # s: the shortest OCI__STALL_TIMEOUT (0: off)
MAX_RESTART_BACKOFF = 300.0  # s: the longest delay before a restart (Kubernetes' 5 minutes)

_DURATION = re.compile(r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$", re.IGNORECASE)


_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}$")  # Linux: at most 15 characters, no / or space


def cluster_network(value: str) -> str:
    """OCI__CLUSTER_NETWORK checked (the environment's and the spec's ``network``): a subnet in CIDR
    form (``10.0.1.0/24``: each node takes its address inside it) or an interface name (``eth1``:
    each node takes that interface's address); ``""``: unset. Anything else → ValueError."""
    v = str(value or "").strip()
    if not v:
        return ""
    if "/" in v:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"not a subnet in CIDR form: {v!r} (example: 10.0.1.0/24)") from None
        return v
    if re.fullmatch(r"[0-9.]+", v) or ":" in v and _is_address(v):
        raise ValueError(f"{v!r} is an address, not a subnet: give the subnet's prefix length (example: "
                         "10.0.1.0/24), or set OCI__SELF_IP on each node")
    if not _IFNAME.match(v):
        raise ValueError(f"neither a subnet in CIDR form nor an interface name: {v!r} (examples: 10.0.1.0/24, eth1)")
    return v


def _is_address(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def config_profile(environ: Mapping[str, str]) -> str:
    """The OCI config profile as oracle-ads picks it: OCI_CONFIG_PROFILE, else
    OCIFS_CONFIG_PROFILE, else ``DEFAULT`` (an empty value counts as unset)."""
    return (environ.get(OCI_CONFIG_PROFILE) or environ.get(OCIFS_CONFIG_PROFILE) or "").strip() \
        or DEFAULT_CONFIG_PROFILE


def parse_bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"expected 1/0 or true/false, got {v!r}")


class Settings(BaseModel):
    """Everything a node needs, validated from the environment (field aliases are the names).

    oracle-ads' names and defaults where fsm_cluster reads the same thing:

    * ``OCI__WORKER_COUNT`` unset is 1 WORKER node (oracle-ads' ``expected_worker_count()``); the
      launchers always set it.
    * ``oci_config_profile``: OCI_CONFIG_PROFILE, else OCIFS_CONFIG_PROFILE, else ``DEFAULT``
      (:func:`config_profile`).
    * ``post_processing_wait``: POST_PROCESSING_WAIT, seconds a node waits at its very end, after
      the final artifact sync; 0 when unset (oracle-ads waits 60 s even then).
    * The engines read oracle-ads' engine variables as aliases of their own (ENGINE_VARIABLES;
      listed in each engine module's doc): OCI__WORKER_PORT, OCI__NANNY_PORT, OCI__WORKER_TIMEOUT
      (Dask); HOROVOD_ARGS, MIN_NP, MAX_NP, NP, SLOTS, START_TIMEOUT, WORKER_PORT, ENABLE_TIMELINE
      (Horovod).
    """

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    mode: Literal["MAIN", "WORKER", "PS"] = Field(alias=OCI__MODE)
    work_dir: str = Field(alias=OCI__WORK_DIR, min_length=1)
    cluster_type: str = Field("COMMAND", alias=OCI__CLUSTER_TYPE, min_length=1)
    ephemeral: bool = Field(True, alias=OCI__EPHEMERAL)
    life_span: str = Field("0h", alias=OCI__LIFE_SPAN)
    worker_count: int = Field(1, alias=OCI__WORKER_COUNT, ge=0)
    ps_count: int = Field(0, alias=OCI__PS_COUNT, ge=0)
    timeout: float = Field(600.0, alias=OCI__TIMEOUT, gt=0, allow_inf_nan=False)
    heartbeat_interval: float = Field(10.0, alias=OCI__HEARTBEAT_INTERVAL, gt=0, allow_inf_nan=False)
    heartbeat_timeout: float = Field(60.0, alias=OCI__HEARTBEAT_TIMEOUT, gt=0, allow_inf_nan=False)
    # The control channel (fsm_cluster.wire.control): on unless OCI__CONTROL is off/0/false; MAIN's port
    # (0: an ephemeral one, published in its configuration).
    control: bool = Field(True, alias="OCI__CONTROL")
    control_port: int = Field(0, alias="OCI__CONTROL_PORT", ge=0, le=65535)
    teardown_grace: float = Field(5.0, alias=OCI__TEARDOWN_GRACE, ge=0, allow_inf_nan=False)
    # Recovery (Kubeflow's run policy): whether a failed entry script / a lost node restarts the
    # code (Never: today's behaviour, any failure ends the cluster; OnFailure: any; ExitCode: exit
    # codes 128+ — signals, preemption — are retryable, 1–127 permanent), how many restarts the
    # whole cluster may take, and a deadline for the whole life (0: none). MAIN decides with its
    # own budget and deadline; a node's restart policy is its role's.
    restart_policy: Literal["Never", "OnFailure", "ExitCode"] = Field("Never", alias=OCI__RESTART_POLICY)
    backoff_limit: int = Field(6, alias=OCI__BACKOFF_LIMIT, ge=0, le=10_000)
    active_deadline: float = Field(0.0, alias=OCI__ACTIVE_DEADLINE_SECONDS, ge=0, allow_inf_nan=False)
    # Every node waits this long before the code runs again after restart 1, twice as long after
    # restart 2, … at most MAX_RESTART_BACKOFF (Kubernetes' crash-loop backoff: 10 s doubling, 5 min);
    # seconds or a duration ("10s", "1m"); 0: at once.
    restart_backoff: float = Field(10.0, alias=OCI__RESTART_BACKOFF, ge=0, le=MAX_RESTART_BACKOFF,
                                   allow_inf_nan=False)
    # Set by the node for its entry script (the cluster's restarts so far), and by a launcher on a
    # node it starts in place of a lost one (the lost node's id: MAIN gives it that node's rank).
    restart_count: int = Field(0, alias=OCI__RESTART_COUNT, ge=0)
    replaces: str = Field("", alias=OCI__REPLACES, max_length=255)
    # The stall watchdog (fsm_cluster.runtime.stall): no output or progress from the code on any node for
    # this long fails the cluster, with every node's stacks in the work dir (0: off, the default;
    # else at least MIN_STALL_TIMEOUT: the code's quiet is seen by the second, a shorter one is a typo).
    stall_timeout: float = Field(0.0, alias=OCI__STALL_TIMEOUT, ge=0, allow_inf_nan=False)
    storage_retry_budget: float = Field(30.0, alias=OCI__STORAGE_RETRY_BUDGET, gt=0, allow_inf_nan=False)
    job_ocid: str = Field("Undefined", alias=JOB_OCID, min_length=1)
    job_run_ocid: str = Field(default_factory=lambda: f"local-{os.getpid()}-{time.time_ns()}", alias=JOB_RUN_OCID)
    rank: int | None = Field(None, alias=RANK, ge=0)
    start_args: str = Field("", alias=OCI__START_ARGS)
    entry_script: str = Field("", alias=OCI__ENTRY_SCRIPT)
    entry_script_args: str = Field("", alias=OCI__ENTRY_SCRIPT_ARGS)
    entry_script_kwargs: str = Field("", alias=OCI__ENTRY_SCRIPT_KWARGS)
    run_on: Literal["main", "all"] = Field("main", alias=OCI__RUN_ON)
    code_dir: str = Field("/code", alias=OCI__CODE_DIR)
    runtime_type: Literal["", "git", "remote", "python", "script"] = Field("", alias=OCI__RUNTIME_TYPE)
    runtime_uri: str = Field("", alias=OCI__RUNTIME_URI)
    runtime_git_branch: str = Field("", alias=OCI__RUNTIME_GIT_BRANCH)
    runtime_git_commit: str = Field("", alias=OCI__RUNTIME_GIT_COMMIT)
    runtime_git_secret_id: str = Field("", alias=OCI__RUNTIME_GIT_SECRET_ID)
    runtime_python_path: str = Field("", alias=OCI__RUNTIME_PYTHON_PATH)
    sync_dir: str = Field("", alias=OCI__SYNC_DIR)
    sync_artifacts: bool = Field(False, alias=SYNC_ARTIFACTS)
    sync_sleep: float = Field(60.0, alias=SYNC_SLEEP, gt=0, allow_inf_nan=False)
    post_processing_wait: float = Field(0.0, alias=POST_PROCESSING_WAIT, ge=0, allow_inf_nan=False)
    workspace: str = Field("", alias=WORKSPACE)
    workspace_prefix: str = Field("", alias=WORKSPACE_PREFIX)
    profile: bool = Field(False, alias=PROFILE)
    profile_cmd: str = Field("", alias=PROFILE_CMD)
    oci_iam_type: str = Field("", alias=OCI_IAM_TYPE)
    oci_config_profile: str = Field(DEFAULT_CONFIG_PROFILE, alias=OCI_CONFIG_PROFILE)
    ocifs_config_profile: str = Field("", alias=OCIFS_CONFIG_PROFILE)
    oci_config_location: str = Field("", alias=OCI_CONFIG_LOCATION)
    self_ip: str = Field("", alias="OCI__SELF_IP")  # this node's address (wins over the network)
    # The cluster's network, the same for every node: a subnet (CIDR) or an interface name
    # (fsm_cluster.node.identity.on_network); unset: the job's subnet, else the default route's.
    cluster_network: str = Field("", alias=OCI__CLUSTER_NETWORK)
    certificate_ocid: str = Field("", alias=OCI__CERTIFICATE_OCID)
    certificate_authority_ocid: str = Field("", alias=OCI__CERTIFICATE_AUTHORITY_OCID)
    cluster_secret: str = Field("", alias=OCI__CLUSTER_SECRET, repr=False)
    exports: str = Field("", alias=OCI__EXPORTS)

    _b = field_validator("sync_artifacts", "profile", "control", mode="before")(
        classmethod(lambda cls, v: parse_bool(v))
    )

    @field_validator("ephemeral", mode="before")
    @classmethod
    def _ephemeral(cls, v):
        """A boolean; ``None`` is what oracle-ads' job converter writes when the spec says nothing:
        the default (ephemeral), as oracle-ads' runner takes it."""
        return True if isinstance(v, str) and v.strip() == "None" else parse_bool(v)

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data):
        """oci_config_profile as oracle-ads picks it (:func:`config_profile`)."""
        if isinstance(data, Mapping):  # by variable name (from_env) or by field name
            data = dict(data)
            given = data.pop("oci_config_profile", None)
            names = {OCI_CONFIG_PROFILE: data.get(OCI_CONFIG_PROFILE, given),
                     OCIFS_CONFIG_PROFILE: data.get(OCIFS_CONFIG_PROFILE, data.get("ocifs_config_profile"))}
            data[OCI_CONFIG_PROFILE] = config_profile({k: str(v or "") for k, v in names.items()})
        return data

    @field_validator("mode", "cluster_type", mode="before")
    @classmethod
    def _upper(cls, v):  # a module:Class provider keeps its case
        return v.strip().upper() if isinstance(v, str) and ":" not in v else (v.strip() if isinstance(v, str) else v)

    @field_validator("restart_policy", mode="before")
    @classmethod
    def _policy(cls, v):
        """Kubeflow's spellings, any case: never / onfailure / on_failure / exitcode / exit_code."""
        if isinstance(v, str):
            key = v.strip().lower().replace("_", "").replace("-", "")
            return {"never": "Never", "onfailure": "OnFailure", "exitcode": "ExitCode", "": "Never"}.get(key, v)
        return v

    @field_validator("run_on", mode="before")
    @classmethod
    def _lower_run_on(cls, v):
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("runtime_type", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("job_ocid", "job_run_ocid")
    @classmethod
    def _identifier(cls, v: str):
        from .wire.models import check_identifier

        return check_identifier(v, "value")

    @field_validator("cluster_network", mode="before")
    @classmethod
    def _network(cls, v):
        return cluster_network(v)

    @field_validator("restart_backoff", mode="before")
    @classmethod
    def _backoff(cls, v):
        from .clock import parse_duration

        return parse_duration(v) if isinstance(v, str) and _DURATION.match(v) else v

    @field_validator("stall_timeout")
    @classmethod
    def _stall(cls, v: float):
        if 0 < v < MIN_STALL_TIMEOUT:
            raise ValueError(f"{v:g} s is too short to tell a stall from a pause: 0 (off) or at least "
                             f"{MIN_STALL_TIMEOUT:g} s")
        return v

    @field_validator("cluster_secret")
    @classmethod
    def _secret(cls, v: str):
        if v and len(v) < 16:
            raise ValueError("a cluster secret needs at least 16 characters (the launchers make 64)")
        return v

    @model_validator(mode="after")
    def _heartbeats(self):
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError(f"{OCI__HEARTBEAT_TIMEOUT} ({self.heartbeat_timeout:g} s) must be at least twice "
                             f"{OCI__HEARTBEAT_INTERVAL} ({self.heartbeat_interval:g} s): a node beats once "
                             "per interval, so a shorter timeout declares live nodes dead")
        return self

    _variables: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def variables(self) -> Mapping[str, str]:
        """Every variable of the contract the node was given, as text, by name (read only): what
        the engines read (ports, process counts, start options, certificate locations…)."""
        return MappingProxyType(self._variables)

    @property
    def export_names(self) -> tuple[str, ...]:
        """OCI__EXPORTS as names (the job definition's extra names a node takes from MAIN)."""
        return tuple(n.strip() for n in self.exports.split(",") if n.strip())

    @field_validator("life_span")
    @classmethod
    def _duration(cls, v: str):
        if not _DURATION.match(v):
            raise ValueError(f"not a duration: {v!r} (examples: 45s, 30m, 2h, 1d)")
        return v.strip()

    # -- derived ---------------------------------------------------------------------------------
    @property
    def cluster_id(self) -> str:
        return self.job_ocid

    @property
    def life_span_seconds(self) -> float:
        from .clock import parse_duration

        return parse_duration(self.life_span)

    @property
    def node_id(self) -> str:
        """ADS file-name stem of this node: ``MAIN`` or ``WORKER_<run>`` / ``PS_<run>``."""
        return "MAIN" if self.mode == "MAIN" else f"{self.mode}_{self.job_run_ocid}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if environ is None else environ)
        data = {k: v for k, v in env.items() if k in _ALIASES}
        # Empty strings for numbers mean "not set" (ADS job definitions often carry "").
        for k in list(data):
            if data[k] == "" and k in _OPTIONAL_NUMBERS:
                del data[k]
        for name, value in overrides.items():
            if value is not None:
                data[cls.model_fields[name].alias] = value
        try:
            settings = cls.model_validate(data)
        except ValidationError as e:
            raise SettingsError(format_validation_error(e, _variable)) from None
        settings._variables = {k: str(v) for k, v in {**env, **data}.items()
                               if k in _ALIASES or k in ENGINE_VARIABLES}
        return settings


_ALIASES = {f.alias for f in Settings.model_fields.values()}
_OPTIONAL_NUMBERS = {"OCI__CONTROL_PORT", RANK, OCI__WORKER_COUNT, OCI__PS_COUNT, OCI__TIMEOUT, OCI__HEARTBEAT_INTERVAL,
                     OCI__HEARTBEAT_TIMEOUT, OCI__TEARDOWN_GRACE, SYNC_SLEEP, OCI__LIFE_SPAN,
                     OCI__STORAGE_RETRY_BUDGET, POST_PROCESSING_WAIT, OCI__BACKOFF_LIMIT,
                     OCI__ACTIVE_DEADLINE_SECONDS, OCI__RESTART_COUNT, OCI__STALL_TIMEOUT, OCI__RESTART_BACKOFF}


def _variable(p: Problem) -> str:
    """``environment variable OCI__MODE: required but not set`` (a rule over several variables:
    its own message, which names them)."""
    if not p.loc:
        return p.message
    return f"environment variable {p.path}: {'required but not set' if p.type == 'missing' else p.message}"
