"""Every file nodes share is one of these pydantic models (schema-versioned, strict).

Files under ``<work_dir>/<cluster_id>/`` (names compatible with oracle-ads):

* ``MAIN_config.json`` / ``WORKER_<run>_config.json`` / ``PS_<run>_config.json`` — NodeConfig,
  written once per node: a worker's is its registration, MAIN's is the cluster configuration
  (the variables every node exports, and the roster of all nodes).
* ``<node>_state.json`` — NodeState: lifecycle state, reason and heartbeat counter; rewritten on
  transitions and on every heartbeat, so its listing fingerprint is the liveness signal.
* ``stop`` — StopMarker: written once (first writer wins) with the cluster's outcome.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1

Mode = Literal["MAIN", "WORKER", "PS"]
Outcome = Literal["complete", "failed", "stopped"]

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MAX_ENV_VALUE = 32 * 1024

# Names a shared config may never set in a node's environment: they change what a process loads
# or runs (dynamic linker, interpreters, shells) or who the node is.
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
    "OCI__MODE", "JOB_RUN_OCID", "JOB_OCID", "RANK",
})
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


def check_env_name(name: str) -> str:
    if not ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid variable name ([A-Z_][A-Z0-9_]*)")
    if is_hijack_name(name):
        raise ValueError(f"{name!r} may not be exported from a shared config (it could hijack a process)")
    return name


def is_hijack_name(name: str) -> bool:
    """Whether ``name`` is on the hijack denylist (the second line behind each provider's exports)."""
    return (name in DENIED_ENV_NAMES or name in _DENIED_CONTRACT or name.startswith(DENIED_ENV_PREFIXES)
            or bool(_OCI_AUTH.match(name)))


def check_env_value(value: str) -> str:
    if len(value) > MAX_ENV_VALUE:
        raise ValueError(f"value longer than {MAX_ENV_VALUE} characters")
    if "\x00" in value:
        raise ValueError("value contains a NUL byte")
    return value


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
EnvName = Annotated[str, AfterValidator(check_env_name)]
EnvValue = Annotated[str, AfterValidator(check_env_value)]
EnvMap = dict[EnvName, EnvValue]


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


class RosterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    node: NodeName
    mode: Mode
    run_id: Identifier
    rank: int = Field(ge=0)
    ip: str
    host: str = ""


class NodeConfig(_Shared):
    """``<node>_config.json``. ``env`` is what other nodes export (MAIN's); ``roster`` is MAIN's
    list of every node in rank order, written once all expected nodes registered."""

    MAX_BYTES: ClassVar[int] = 4 * 1024 * 1024  # MAIN's roster of a 10,000-node cluster fits

    node: NodeName
    mode: Mode
    run_id: Identifier
    rank: int | None = Field(default=None, ge=0)
    ip: str
    host: str = ""
    env: EnvMap = Field(default_factory=dict)
    roster: list[RosterEntry] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class StopMarker(_Shared):
    """``stop``: the first writer decides the cluster's outcome; later writers never overwrite."""

    outcome: Outcome
    node: Identifier
    reason: str = ""
    exit_code: int = 0
    wall: float = 0.0


class NodeState(_Shared):
    """``<node>_state.json``: the node's lifecycle state and its heartbeat counter."""

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


class DoneMarker(_Shared):
    """``<node>_done``: a node that ran code under OCI__RUN_ON=all finished it."""

    node: NodeName


# ADS images write a bare "stop" string as the stop file; we read that as an operator stop.
LEGACY_STOP = StopMarker(outcome="stopped", node="operator", reason="stop file found", exit_code=0)
