"""The spec's shape: the pydantic models of a ``kind: distributed`` spec (oracle-ads' ``train.yaml``),
its JSON schema, and validation errors as one line per problem naming the YAML path and line.

The field aliases are the YAML keys (camelCase), so an error's location is a YAML path. The models
check what one field's type can say; what needs the whole spec (one MAIN, a runtime's uri, ...)
is :func:`fsm_cluster.spec.loading.semantic_problems`. A cluster ``kind`` must be one the registry
knows (asked when a spec is validated, not when this module is imported).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from ..errors import SpecError
from ..validation import Problem, format_validation_error, problems_of
from .fields import (
    ArgList,
    Kwargs,
    RestartPolicy,
    Scalar,
    ScalarList,
    Seconds,
    Unset,
    WholeNumber,
    empty_is_none,
)
from .reading import Path, SpecSource

MODES = {"main": "MAIN", "worker": "WORKER", "ps": "PS"}  # a node group's key → its nodes' mode


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class EnvVar(_Model):
    """``- name: WORKER_PORT`` / ``value: 12345`` (numbers and booleans become strings)."""

    name: str = Field(pattern=ENV_VAR_NAME)
    value: Scalar = ""


def env_dict(items: list[EnvVar] | None) -> dict[str, str]:
    return {e.name: e.value for e in items or []}


class GroupConfig(_Model):
    """``config`` of the cluster or of one node group: environment and framework start options."""

    env: list[EnvVar] | None = None
    start_options: ScalarList = None

    @property
    def env_vars(self) -> dict[str, str]:
        return env_dict(self.env)

    envVars = env_vars  # oracle-ads' name (its ClusterConfig)

    @property
    def cmd_args(self) -> str:
        """ADS' meaning: the start options joined by spaces (an item may hold several words)."""
        opts = self.start_options
        return (opts if isinstance(opts, str) else " ".join(opts or [])).strip()


# Run-wide recovery keys (Kubeflow's runPolicy): a node group names them only to be refused.
RUN_WIDE = {"backoff_limit": "backoffLimit", "active_deadline_seconds": "activeDeadlineSeconds",
            "restart_backoff": "restartBackoff"}


class NodeGroup(_Model):
    """``main`` / ``worker`` / ``ps``."""

    name: str | None = None
    image: str | None = None
    replicas: int | None = Field(None, ge=0)
    config: GroupConfig | None = None
    # Recovery: this role's restartPolicy (overrides the cluster's). backoffLimit and
    # activeDeadlineSeconds are the whole cluster's: here they are an error (semantic_problems).
    restart_policy: RestartPolicy = None
    backoff_limit: SkipJsonSchema[Any] = Field(None, exclude=True)
    active_deadline_seconds: SkipJsonSchema[Any] = Field(None, exclude=True)
    restart_backoff: SkipJsonSchema[Any] = Field(None, exclude=True)

    @property
    def conf(self) -> GroupConfig:
        return self.config or GroupConfig()

    def count(self, default: int = 1) -> int:
        return default if self.replicas is None else self.replicas


class CaCert(_Model):
    id: str = Field(min_length=1)
    download_location: str = "ca-cert.pem"


class Cert(_Model):
    id: str = Field(min_length=1)
    cert_download_location: str = "cert.pem"
    key_download_location: str = "key.pem"


class Certificate(_Model):
    ca_cert: CaCert
    cert: Cert


class ClusterBody(_Model):
    """``spec.cluster.spec``."""

    image: str | None = None
    work_dir: str = Field(min_length=1)
    name: str | None = None
    ephemeral: bool = True
    life_span: str | None = None
    run_on: Literal["main", "all"] | None = None
    # Recovery (Kubeflow's restartPolicy and runPolicy): Never (the default: any failure ends the
    # cluster) / OnFailure / ExitCode; the restarts the whole cluster may take; its whole life; the
    # seconds before the code runs again after the first restart (doubling, at most 300).
    restart_policy: RestartPolicy = None
    backoff_limit: WholeNumber = Field(None, ge=0, le=10_000)
    active_deadline_seconds: WholeNumber = Field(None, ge=1)
    restart_backoff: Seconds = Field(None, ge=0, le=300, allow_inf_nan=False)
    # The stall watchdog (fsm_cluster.runtime.stall): seconds without output or progress on every node.
    stall_timeout: Seconds = Field(None, gt=0, allow_inf_nan=False)
    # The nodes' network, the same for every node (OCI__CLUSTER_NETWORK): a subnet in CIDR form
    # (10.0.1.0/24: each node's address inside it) or an interface name (eth1: its address).
    network: str | None = None
    certificate: Certificate | None = None
    config: GroupConfig | None = None
    main: NodeGroup = Field(default_factory=NodeGroup)
    worker: NodeGroup | None = None
    ps: NodeGroup | None = None

    @field_validator("main", mode="before")
    @classmethod
    def _empty_main(cls, v):
        return {} if v is None else v  # ADS specs may write a bare `main:`

    @field_validator("life_span", mode="before")
    @classmethod
    def _duration(cls, v):
        if v is None:
            return v
        from ..clock import parse_duration

        try:
            parse_duration(v)
        except ValueError:
            raise ValueError(f"not a duration: {v!r} (examples: 45s, 30m, 2h, 1d)") from None
        return str(v).strip()

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v):
        if v is None:
            return v
        from ..env import cluster_network

        return cluster_network(v) or None

    @property
    def conf(self) -> GroupConfig:
        return self.config or GroupConfig()

    def group(self, job_type: str) -> NodeGroup | None:
        return getattr(self, job_type)


class ClusterSection(_Model):
    """``spec.cluster``: ``kind`` is the cluster type (DASK, PYTORCH, ..., or module:Class)."""

    kind: str = Field(min_length=1)
    api_version: str | None = None
    spec: ClusterBody

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        v = v.strip()
        if ":" in v:
            return v
        from ..registry import (
            known_cluster_kinds,  # the registry imports engines lazily
        )

        known = known_cluster_kinds()
        if v.upper() not in known:
            raise ValueError(f"unknown cluster kind {v!r} (known: {', '.join(known)})")
        return v.upper()


class ShapeConfig(_Model):
    ocpus: float = Field(gt=0)
    memory_in_gbs: float = Field(gt=0, alias="memoryInGBs")


class InfraSpec(_Model):
    """``spec.infrastructure.spec``: where the job runs (ignored by ``fsm-cluster local``)."""

    compartment_id: Unset = None
    project_id: Unset = None
    display_name: Unset = None
    log_group_id: Unset = None
    log_id: Unset = None
    subnet_id: Unset = None
    shape_name: Unset = None
    shape_config_details: Annotated[ShapeConfig | None, BeforeValidator(empty_is_none)] = None
    block_storage_size: Annotated[int | None, BeforeValidator(empty_is_none)] = Field(None, ge=50)


class Infrastructure(_Model):
    kind: Literal["infrastructure"] = "infrastructure"
    type: Literal["dataScienceJob"] = "dataScienceJob"
    api_version: str | None = None
    spec: InfraSpec = Field(default_factory=InfraSpec)


RuntimeType = Literal["python", "git", "remote"]


class RuntimeSpec(_Model):
    entry_point: str | None = None
    args: ArgList = None
    kwargs: Kwargs = None
    env: list[EnvVar] | None = None
    type: RuntimeType | None = None
    uri: str | None = None
    branch: str | None = None
    commit: str | None = None
    git_secret_id: str | None = None
    code_dir: str | None = None
    python_path: str | None = None


class Runtime(_Model):
    """``spec.runtime``: ``type`` python (code in the image), git or remote (fetched at start)."""

    kind: Literal["python"] = "python"
    type: RuntimeType | None = None
    api_version: str | None = None
    spec: RuntimeSpec = Field(default_factory=RuntimeSpec)

    @property
    def runtime_type(self) -> str:
        return self.type or self.spec.type or "python"

    @property
    def env_vars(self) -> dict[str, str]:
        return env_dict(self.spec.env)


class DistributedSpec(_Model):
    infrastructure: Infrastructure | None = None
    cluster: ClusterSection
    runtime: Runtime = Field(default_factory=Runtime)

    @field_validator("runtime", mode="before")
    @classmethod
    def _empty_runtime(cls, v):
        return {} if v is None else v


class ClusterSpec(_Model):
    """A whole cluster spec (``kind: distributed``); ``source`` knows the line of every path."""

    kind: Literal["distributed"]
    api_version: Literal["v1.0", "v1"]
    spec: DistributedSpec
    _source: SpecSource | None = PrivateAttr(None)

    # the names of the seed's ClusterInfo
    @property
    def infrastructure(self) -> dict:
        infra = self.spec.infrastructure or Infrastructure()
        return infra.model_dump(by_alias=True, exclude_none=True)

    @property
    def cluster(self) -> ClusterBody:
        return self.spec.cluster.spec

    @property
    def cluster_type(self) -> str:
        return self.spec.cluster.kind

    @property
    def runtime(self) -> Runtime:
        return self.spec.runtime

    @property
    def source(self) -> SpecSource:
        return self._source or SpecSource("<spec>", {})

    def error(self, path: Path, message: str) -> SpecError:
        """A SpecError naming this spec's file, ``path`` and its line."""
        return SpecError(self.source.error(path, message))


def json_schema() -> dict:
    """JSON schema of cluster specs (for editors: yaml-language-server, IDEs)."""
    schema = ClusterSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fsm_cluster cluster spec (kind: distributed)"
    return schema


# ------------------------------------------------------------------------------------------------
# Validation errors → one line per problem, naming path and line
# ------------------------------------------------------------------------------------------------
_PATTERNS = {ENV_VAR_NAME: "environment variable name"}


def format_errors(e: ValidationError, source: SpecSource, model: type[BaseModel] = None) -> str:
    """One line per problem (``<file>: <yaml path>: <message>, line N``), in the file's order."""
    return format_validation_error(e, lambda p: source.error(p.loc, p.message), sep="\n",
                                   model=model or ClusterSpec, patterns=_PATTERNS,
                                   order=lambda p: source.line_of(p.loc) or 0)


def spec_problems(e: ValidationError) -> list[Problem]:
    """The problems of a spec's validation (an unknown key's message says "did you mean")."""
    return problems_of(e, model=ClusterSpec, patterns=_PATTERNS)
