"""Every file nodes share is one of these pydantic models (schema-versioned, strict).

Files under ``<work_dir>/<cluster_id>/`` (names compatible with oracle-ads):

* ``MAIN_config.json`` / ``WORKER_<run>_config.json`` / ``PS_<run>_config.json`` — NodeConfig,
  written once per node: a worker's is its registration, MAIN's is the cluster configuration
  (the variables every node exports, and the roster of all nodes). On disk it is oracle-ads'
  format: a flat JSON object of the node's variables (what ``configuration()`` returns, any keys,
  ``cfg["OCI__WORKER_IP"]`` works), plus one key, ``fsm_cluster``, holding fsm_cluster's own fields.
  A flat file without that key was written by an oracle-ads node (``legacy``): who wrote it is
  then said by its file name.
* ``<node>_state.json`` — NodeState: lifecycle state, reason and heartbeat counter; rewritten on
  transitions and on every heartbeat, so its listing fingerprint is the liveness signal.
* ``stop`` — StopMarker: written once (first writer wins) with the cluster's outcome.
* ``dump_request`` — DumpRequest: an operator asks for the stacks of every node's code.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic.dataclasses import dataclass
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1

Mode = Literal["MAIN", "WORKER", "PS"]
Outcome = Literal["complete", "failed", "stopped"]

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")  # names fsm_cluster's own inputs accept (-e NAME=VALUE)
EXPORTABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # names a node takes from a shared config
MAX_ENV_VALUE = 32 * 1024

# Names a shared config may never carry (the node fails, naming the file and the name): they
# change what a process loads or runs (dynamic linker, interpreters, shells).
DENIED_ENV_NAMES = frozenset({
    "PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONUSERBASE",
    "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "PYTHONBREAKPOINT", "PYTHONWARNINGS", "PYTHONPLATLIBDIR",
    "PYTHONNOUSERSITE", "BASH_ENV", "ENV", "SHELL", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
    "IFS", "HOME", "USER", "LOGNAME", "TMPDIR", "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB",
    "NODE_OPTIONS", "NODE_PATH", "CLASSPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "GCONV_PATH", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "LOCPATH", "NLSPATH", "ZDOTDIR",
    "MALLOC_CHECK_", "OPENSSL_CONF", "OPENSSL_MODULES", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "FTP_PROXY", "EDITOR", "VISUAL", "PAGER", "BROWSER", "TERMINFO", "INPUTRC",
})
# Proxies are honoured in lower case too (curl, requests, pip).
_LOWER_HONOURED = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY"})
# Who a node is: a peer's config may carry them (oracle-ads' TensorFlow provider writes OCI__MODE),
# they stay in the file and are never exported into another node.
IDENTITY_NAMES = frozenset({"OCI__MODE", "RANK", "JOB_OCID", "JOB_RUN_OCID", "OCI__REPLACES", "OCI__RESTART_COUNT"})
# Whole families: the dynamic linker and libc tuning, interpreters' and tools' own start-up hooks,
# credentials and endpoints of cloud SDKs, fsm_cluster's own contract (``OCI__START_ARGS`` is passed
# to engine launchers: a ``--preload`` is code execution) and OCI's auth settings.
DENIED_ENV_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "PYTHON", "GLIBC_", "MALLOC_", "GIT_", "PERL",
                       "RUBY", "JAVA", "_JAVA", "JDK_", "NODE_", "AWS_", "OCIFS_", "KUBE",
                       "DOCKER_", "GOOGLE_", "AZURE_", "SSH_", "GPG_", "LUA_", "TCL", "R_", "JULIA_",
                       "NPM_", "PIP_", "UV_", "CONDA", "VIRTUAL_ENV", "OCI__START", "OCI__ENTRY",
                       "OCI__RUNTIME", "OCI__CERTIFICATE", "OCI__CA_", "OCI__CLUSTER_SECRET", "PROFILE")
_OCI_AUTH = re.compile(r"^OCI_[A-Z]")  # OCI_CONFIG_LOCATION, OCI_IAM_TYPE… (not OCI__ names)
_DENIED_CONTRACT = frozenset({"OCI__WORK_DIR", "OCI__CODE_DIR", "OCI__SYNC_DIR", "OCI__CLUSTER_TYPE",
                              "OCI__EXPORTS", "OCI__SELF_IP"})


def is_hijack_name(name: str) -> bool:
    """Whether ``name`` is on the hijack denylist: no shared config may carry it."""
    return (name in DENIED_ENV_NAMES or name in _DENIED_CONTRACT or name.startswith(DENIED_ENV_PREFIXES)
            or bool(_OCI_AUTH.match(name)) or name.upper() in _LOWER_HONOURED)


def check_config_name(name: str) -> str:
    """A variable name in a shared config: any name oracle-ads would write (lower case too), but
    never one of the hijack denylist."""
    if is_hijack_name(name):
        raise ValueError(f"{name!r} may not be set by a shared config (it could hijack a process)")
    return name


# Identifiers that become file or folder names in the work dir (cluster id = JOB_OCID, run ids =
# JOB_RUN_OCID, node names): an OCID or a plain name; never a path ("/", "." or ".."), never a
# control character, never hidden (leading "."), at most 255 characters.
# Without "/" the only names that leave a folder are "." and "..": no identifier starts with ".".
# (".." inside is allowed: OCIDs of global resources read "ocid1.<type>.oc1..<id>".)
_ID_BODY = r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]*"
IDENTIFIER_PATTERN = rf"^{_ID_BODY}$"
NODE_PATTERN = rf"^(?:MAIN|(?:WORKER|PS)_{_ID_BODY})$"  # MAIN, WORKER_<run id>, PS_<run id>
IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)
MAX_IDENTIFIER = 255


def check_identifier(value: str, what: str = "identifier") -> str:
    """``value`` if it is safe as one path component of the work dir, else ValueError naming
    ``what`` (e.g. ``"JOB_OCID"``, ``"--cluster-id"``)."""
    if not isinstance(value, str) or len(value) > MAX_IDENTIFIER or not IDENTIFIER_RE.match(value):
        raise ValueError(f"{what}: {value!r} is not a valid identifier (letters, digits and "
                         "_ . : @ + = -, not starting with '.', no '/' or control characters, "
                         "at most 255 characters)")
    return value


# In shared files the same rules are pydantic constraints, checked natively (a 10,000-node roster is
# read by every node).
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=MAX_IDENTIFIER)]
NodeName = Annotated[str, StringConstraints(pattern=NODE_PATTERN, max_length=MAX_IDENTIFIER)]
ConfigName = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(check_config_name)]

FSM_KEY = "fsm_cluster"  # the one key of a flat config file that holds fsm_cluster's own fields
_CONFIG_FILE = re.compile(rf"^(?:(MAIN)|(WORKER|PS)_({_ID_BODY}))_config\.json$")


class _Shared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The largest file of this kind a reader accepts: anyone who can write the work dir could
    # otherwise make every node read (and hold) a file of any size.
    MAX_BYTES: ClassVar[int] = 64 * 1024
    schema_version: Literal[1] = SCHEMA_VERSION
    # The life of the cluster this file belongs to: MAIN draws a new one each time it starts, so
    # a re-run of the same job (same JOB_OCID, same work dir) never takes a previous life's files
    # (its stop marker, its roster) for its own. "" = not known to the writer (a worker before it
    # read MAIN's configuration, an ADS node).
    life: str = Field("", max_length=64)


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class RosterEntry:
    """One node of MAIN's roster. A (pydantic) dataclass with slots, not a model: every worker
    holds the whole roster, and an entry is a tenth of a model's memory and validated faster."""

    node: NodeName
    mode: Mode
    run_id: Identifier
    rank: Annotated[int, Field(ge=0)]
    ip: str
    host: str = ""


class _ConfigFields(_Shared):
    """NodeConfig's own fields: what a config file keeps under its ``fsm_cluster`` key."""

    node: NodeName
    mode: Mode
    run_id: Identifier
    rank: int | None = Field(default=None, ge=0)
    ip: str
    host: str = ""
    roster: list[RosterEntry] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class _FlatConfig(BaseModel):
    """A config file as written by fsm_cluster, validated straight from its JSON: the fields under
    ``fsm_cluster``, the variables beside it (checked apart: :data:`_VARIABLES`)."""

    model_config = ConfigDict(extra="allow")
    fsm_cluster: _ConfigFields


class NodeConfig(_ConfigFields):
    """``<node>_config.json``. ``env`` is the node's variables (MAIN's are what other nodes
    export), as ``configuration()`` returned them; ``roster`` is MAIN's list of every node in rank
    order, written once all expected nodes registered. Serialized flat (see the module doc)."""

    MAX_BYTES: ClassVar[int] = 4 * 1024 * 1024  # MAIN's roster of a 10,000-node cluster fits

    env: dict[ConfigName, JsonValue] = Field(default_factory=dict)
    # Written by an oracle-ads node (no fsm_cluster fields): it neither heart-beats nor knows lives.
    legacy: bool = Field(False, exclude=True)

    @classmethod
    def from_json(cls, data: bytes, file: str) -> "NodeConfig":
        """``data`` (the file ``file``) validated: the file fsm_cluster writes straight from its
        JSON (every worker reads MAIN's roster: twice as fast as through the flat form's Python
        objects); anything else (an oracle-ads file, an invalid one) as :meth:`model_validate_json`
        takes it, which then names the problem."""
        try:
            flat = _FlatConfig.model_validate_json(data)
            env = _VARIABLES.validate_python(flat.__pydantic_extra__ or {})
        except ValidationError:
            return cls.model_validate_json(data, context={"file": file})
        return cls.model_construct(**dict(flat.fsm_cluster), env=env)

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any, info: ValidationInfo) -> Any:
        """A flat file (ours: the ``fsm_cluster`` key holds the fields; oracle-ads': the file name
        given as ``context={"file": name}`` says whose it is) → the fields."""
        if not isinstance(data, dict):
            return data
        file = (info.context or {}).get("file") if info.context else None
        meta = data.get(FSM_KEY)
        if isinstance(meta, dict):
            env = {k: v for k, v in data.items() if k != FSM_KEY}
            return {**meta, "env": env}
        if file is None or FSM_KEY in data:
            return data  # built in Python (or a malformed fsm_cluster key: the fields report it)
        m = _CONFIG_FILE.match(file)
        if m is None:
            raise ValueError(f"not a config file name: {file!r}")
        mode = m.group(1) or m.group(2)
        ip = data.get("OCI__MAIN_IP" if mode == "MAIN" else "OCI__WORKER_IP") or data.get("MASTER_ADDR") or ""
        return {"node": "MAIN" if mode == "MAIN" else f"{mode}_{m.group(3)}", "mode": mode,
                "run_id": m.group(3) or "main", "ip": str(ip), "env": data, "legacy": True}

    @model_serializer(mode="wrap")
    def _to_flat(self, handler) -> dict[str, Any]:
        fields = handler(self)
        env = fields.pop("env")
        return {**env, FSM_KEY: fields}

    def variables(self) -> dict[str, str]:
        """The variables as oracle-ads exports them: ``str(value)``."""
        return {k: v if isinstance(v, str) else str(v) for k, v in self.env.items()}


_VARIABLES = TypeAdapter(dict[ConfigName, JsonValue])


class RestartRecord(BaseModel):
    """One restart of the cluster's code, as MAIN decided it (kept in MAIN's state file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(ge=1)  # 1 for the first restart
    node: Identifier  # the node whose failure or loss caused it
    reason: str = Field("", max_length=2000)
    exit_code: int | None = None  # None: the node was lost (its process died or froze)
    wall: float = 0.0  # when MAIN decided (for humans)
    waiting_for: str = Field("", max_length=255)  # a lost node MAIN waits to see replaced ("": none)


MARKER_RESTARTS = 20  # restarts a stop marker carries: the life's last ones (MAIN's state file has them all)
MARKER_RESTARTS_BYTES = 32 * 1024  # and at most this much of them (a reason may be 2,000 characters)


class StopMarker(_Shared):
    """``stop``: the first writer decides the cluster's outcome; later writers never overwrite
    (except over oracle-ads' bare ``stop`` text, which says no outcome: see LEGACY_STOP). It
    carries the life's last restarts (``MARKER_RESTARTS``, within ``MARKER_RESTARTS_BYTES``) and
    how many there were (``restarts_total``): a marker always fits its ``MAX_BYTES``."""

    outcome: Outcome
    node: Identifier
    reason: str = ""
    exit_code: int = 0
    wall: float = 0.0
    legacy: bool = Field(False, exclude=True)  # oracle-ads' bare "stop" file
    # the life's last restarts, as its writer knew them
    restarts: list[RestartRecord] = Field(default_factory=list, max_length=10_001)
    restarts_total: int = Field(0, ge=0)  # the life's restarts, all of them

    @model_validator(mode="before")
    @classmethod
    def _count_restarts(cls, data: Any) -> Any:
        """The total is the writer's list when not given (a marker made with every restart)."""
        if isinstance(data, dict) and "restarts_total" not in data and isinstance(data.get("restarts"), (list, tuple)):
            data = {**data, "restarts_total": len(data["restarts"])}
        return data

    @field_validator("restarts")
    @classmethod
    def _last_restarts(cls, restarts: list[RestartRecord]) -> list[RestartRecord]:
        kept = restarts[-MARKER_RESTARTS:]
        sizes = [len(r.model_dump_json()) for r in kept]
        while len(kept) > 1 and sum(sizes) > MARKER_RESTARTS_BYTES:
            kept, sizes = kept[1:], sizes[1:]
        return kept


class GpuUsage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    util_percent: float = Field(ge=0)
    mem_used_mib: float = Field(ge=0)
    mem_total_mib: float = Field(ge=0)


class Resources(BaseModel):
    """What the node and everything it started use, sampled at the heartbeat that wrote the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu_percent: float = Field(ge=0)  # summed over processes: 200 = two cores busy
    rss_bytes: int = Field(ge=0)
    mem_percent: float = Field(ge=0)  # of the machine's memory
    processes: int = Field(ge=0)
    gpus: list[GpuUsage] = Field(default_factory=list, max_length=64)


MAX_USAGE = 256  # resource samples a state file keeps (older ones are thinned, the whole life stays)


class Usage(BaseModel):
    """One resource sample of the node's history (the timeline's resource panel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    wall: float
    cpu: float = Field(ge=0)  # percent, summed over processes
    rss: int = Field(ge=0)  # bytes
    gpu: float | None = Field(None, ge=0)  # mean utilisation of the node's GPUs, percent


class Transition(BaseModel):
    """One transition of a node's life (its timeline): the state entered, when (wall clock: for
    humans), and the node's reason then."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    state: str = Field(max_length=64)
    wall: float = 0.0
    reason: str = Field("", max_length=300)


MAX_HISTORY = 500  # transitions kept in a state file (a life takes ~8; restarts add 2 each)


class NodeState(_Shared):
    """``<node>_state.json``: the node's lifecycle state and its heartbeat counter."""

    # its timeline (≤ 500 transitions with reasons: ≤ 200 KB), usage (≤ 256 samples: ≤ 20 KB) and
    # MAIN's restarts (≤ 10,001 records at backoffLimit's bound)
    MAX_BYTES: ClassVar[int] = 4 * 1024 * 1024

    node: NodeName
    mode: Mode
    run_id: Identifier
    state: str = Field(max_length=64)
    reason: str = ""
    heartbeat: int = Field(ge=0)
    transitions: int = Field(0, ge=0)
    pid: int | None = None
    host: str = ""
    ip: str = ""
    # Wall times are for humans only (status views); liveness never compares clocks.
    started_wall: float = 0.0  # when the node started
    entered_wall: float = 0.0  # when it entered ``state``
    state_wall: float = 0.0  # when this file was written
    exit_code: int | None = None
    # The cluster's stop marker as this node knows it. Workers watch MAIN through MAIN's state
    # file alone (one small read per interval), so MAIN mirrors the marker here.
    stop: StopMarker | None = None
    # MAIN: "host:port" of its control channel, from its first heartbeat on (workers join it while
    # they wait for MAIN's configuration).
    control: str = Field("", max_length=300)
    # MAIN: the restarts of the cluster's code so far (recovery); workers learn a new one here when
    # they are not on MAIN's control channel.
    restarts: list[RestartRecord] = Field(default_factory=list, max_length=10_001)
    resources: Resources | None = None  # CPU / memory (/ GPU) of the node and its processes
    history: list[Transition] = Field(default_factory=list, max_length=MAX_HISTORY)  # the timeline
    usage: list[Usage] = Field(default_factory=list, max_length=MAX_USAGE)  # resources over the life
    # The stall watchdog (OCI__STALL_TIMEOUT): since when (wall) this node's code has been quiet,
    # once it has been for the timeout or ended (None: active). Read by MAIN for nodes off its channel.
    quiet_since: float | None = Field(None, allow_inf_nan=False)
    # MAIN: the last stacks request (fsm-cluster dump, or the watchdog); nodes off its channel read it.
    dump: str = Field("", max_length=64)


class FailureRequest(_Shared):
    """``<node>_failure.json``: a node off MAIN's control channel whose code failed under a restart
    policy that may retry it asks MAIN to decide (over the channel: a ``failure`` message)."""

    node: NodeName
    exit_code: int | None = None
    reason: str = Field("", max_length=4096)
    after: int | None = Field(None, ge=0)  # the restarts the failed code ran after (a late one is no news)


class DumpRequest(_Shared):
    """``dump_request``: ``fsm-cluster dump`` asks every live node for its code's stacks (signed,
    like every file, when the cluster has a secret)."""

    MAX_BYTES: ClassVar[int] = 1024
    request: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class DoneMarker(_Shared):
    """``<node>_done``: a node that ran code under OCI__RUN_ON=all finished it."""

    node: NodeName


# oracle-ads nodes write the text "stop" as the stop file when their own code is done (or an
# operator does, to end a TTL cluster). As in oracle-ads it never interrupts a node's code: a node
# whose own code is done (or that runs none) ends when it sees it.
LEGACY_STOP = StopMarker(outcome="stopped", node="operator", reason="stop file found (oracle-ads' format)",
                         exit_code=0, legacy=True)
