"""Cluster specs (YAML) → one job definition + one run per node.

A spec is the ``kind: distributed`` YAML oracle-ads' distributed training reads (``train.yaml``);
such files load unchanged. Loading does, in order:

1. parse the YAML, keeping every node's line (``yaml.compose``) so that each error names the
   file, the YAML path and the line: ``train.yaml: spec.cluster.spec.worker.replicas: must be ≥ 0,
   line 23``;
2. replace ``${VAR}`` / ``${VAR:-default}`` in string values from the environment (``$${`` is a
   literal ``${``);
3. ``submit`` only: settle the cluster image (``--image``, or oracle-ads' ``"@image"`` read from
   the ``config.ini`` of ``ads opctl distributed-training build-image``: :class:`ImageChoice`);
4. validate with the pydantic models below;
5. let the cluster kind's spec builder (``FrameworkSpecBuilderFactory``) add its environment.

``strict`` (the library's default; ``--strict`` on the command line) refuses an unknown key (with a
"did you mean") and a key repeated in a mapping. Lenient, as oracle-ads reads specs (the command
line's default), the unknown key is ignored and the repeated key takes its last value, each with a
warning naming the file, the YAML path and the line(s).

The environment contract (the names live in :mod:`fsm_cluster.env`):

* job definition — ``ClusterConfigToJobSpecConverter.job_def_info()``: the cluster's
  ``config.env``, the ``OCI__*`` variables derived from the spec, then the runtime's ``env``
  (framework builders add theirs there);
* each run — ``job_run_info(jobType)`` and ``run_infos()``: that group's ``config.env``, its
  ``startOptions`` as ``OCI__START_ARGS``, ``OCI__MODE`` and ``RANK`` (MAIN 0, workers 1..n, then PS).

Every value is a string. ``node_environments(spec)`` gives each node's full environment (job
definition merged with its run), which is what the local launcher starts.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shlex
from abc import ABCMeta
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError,
                      WithJsonSchema, field_validator)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from .env import (JOB_RUN_OCID, OCI__ACTIVE_DEADLINE_SECONDS, OCI__BACKOFF_LIMIT, OCI__STALL_TIMEOUT,
                  OCI__CA_DOWNLOAD_LOCATION, OCI__CERTIFICATE_AUTHORITY_OCID,
                  OCI__CERTIFICATE_DOWNLOAD_LOCATION, OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION,
                  OCI__CERTIFICATE_OCID, OCI__CLUSTER_TYPE, OCI__CODE_DIR, OCI__ENTRY_SCRIPT,
                  OCI__ENTRY_SCRIPT_ARGS, OCI__ENTRY_SCRIPT_KWARGS, OCI__EPHEMERAL, OCI__LIFE_SPAN,
                  OCI__MODE, OCI__PS_COUNT, OCI__RESTART_POLICY, OCI__RUN_ON,
                  OCI__RUNTIME_GIT_BRANCH, OCI__RUNTIME_GIT_COMMIT, OCI__RUNTIME_GIT_SECRET_ID,
                  OCI__RUNTIME_PYTHON_PATH, OCI__RUNTIME_TYPE, OCI__RUNTIME_URI, OCI__START_ARGS,
                  OCI__WORK_DIR, OCI__WORKER_COUNT, RANK)
from .errors import SpecError
from .registry import (BUILTIN_SPEC_BUILDERS, SPEC_BUILDERS_GROUP, ClusterProviderFactory, import_object,
                       known_kinds, lookup)
from .validation import Problem, format_validation_error, problems_of

MODES = {"main": "MAIN", "worker": "WORKER", "ps": "PS"}

Path = tuple[str | int, ...]
Warn = Callable[[str], None]  # hears each warning (one line naming file, YAML path and line)

log = logging.getLogger(__name__)


# ================================================================================================
# Reading: YAML text → data + the line of every path
# ================================================================================================
@dataclass
class SpecSource:
    """Where a spec came from and the 1-based line of every YAML path (``("spec", "cluster")``)."""

    name: str
    lines: dict[Path, int]

    def line_of(self, path: Path) -> int | None:
        """Line of ``path``, or of its nearest ancestor present in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def error(self, path: Path, message: str) -> str:
        line = self.line_of(path)
        where = f", line {line}" if line else ""
        return f"{self.name}: {format_path(path)}: {message}{where}"


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# A spec is a few hundred YAML values in a few KiB. Both bounds are far above any real spec and
# keep a hostile one cheap to refuse: the size is checked before parsing, and the number of values
# the document expands to (every alias counted as a copy of what it points at: a "billion laughs"
# alias bomb of a few hundred bytes expands to 10^8 values) while composing, before anything walks it.
MAX_SPEC_BYTES = 1024 * 1024
MAX_SPEC_VALUES = 100_000


def _check_size(name: str, size: int, *, known: bool = True) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{name}: {'' if known else 'more than '}{size if known else MAX_SPEC_BYTES} "
                        f"bytes; a spec may hold at most {MAX_SPEC_BYTES} bytes (1 MiB), refused")


class SpecExpansionError(Exception):
    """Raised by :class:`_BoundedLoader` (becomes a SpecError naming the file)."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that knows, while composing, how many values each node expands to (aliases
    included) and refuses a document past :data:`MAX_SPEC_VALUES` or an alias to itself."""

    def __init__(self, stream):
        super().__init__(stream)
        self._values: dict[int, int] = {}  # id(node) → values it expands to (nodes live until the end)

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        node = super().compose_node(parent, index)
        size = self._values.get(id(node))
        if size is None:
            if alias:  # an alias to a collection still being composed: infinite when expanded
                raise yaml.composer.ComposerError(None, None, "an alias refers to the collection "
                                                  "that contains it (recursive alias)",
                                                  node.start_mark)
            size = 1
            if isinstance(node, yaml.SequenceNode):
                size += sum(self._values[id(item)] for item in node.value)
            elif isinstance(node, yaml.MappingNode):
                size += sum(self._values[id(k)] + self._values[id(v)] for k, v in node.value)
            if size > MAX_SPEC_VALUES:
                raise SpecExpansionError(node.start_mark.line + 1)
            self._values[id(node)] = size
        return node


def _index_lines(node: yaml.Node, path: Path, lines: dict[Path, int], duplicates: list) -> None:
    """Fill ``lines``; ``duplicates`` gets ``(path, first line, line)`` of every repeated key (the
    last value wins, as in PyYAML and oracle-ads: the lines below the first one are forgotten)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append((path + (key,), seen[key], line))
                below = path + (key,)
                for stale in [p for p in lines if p[:len(below)] == below]:
                    del lines[stale]
            seen[key] = line
            lines[path + (key,)] = line
            _index_lines(value_node, path + (key,), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), lines, duplicates)


MAX_WARNINGS = 20  # of one kind per spec; the rest are counted (--strict lists every one)


def tell(warn: Warn | None, messages: list[str], more: str) -> None:
    """``messages`` to ``warn`` (default: this module's logger), the first :data:`MAX_WARNINGS`
    of them and then one line counting the rest (``more``: what they are)."""
    warn = warn or log.warning
    for message in messages[:MAX_WARNINGS]:
        warn(message)
    if len(messages) > MAX_WARNINGS:
        warn(f"{more}: {len(messages) - MAX_WARNINGS} not shown (--strict lists them all)")


def read_text(path_or_text: str | os.PathLike) -> tuple[str, str]:
    """(source name, YAML text). A path (or fsspec URI) is read; text with a newline is used as is.
    A file larger than :data:`MAX_SPEC_BYTES` is refused before it is read."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return "<spec>", path_or_text
    path = os.fspath(path_or_text)
    try:
        if "://" in path:
            import fsspec

            f = fsspec.open(path, "rb").open()
            size = getattr(f, "size", None)
        elif not os.path.isfile(path):
            raise SpecError(f"{path}: no such file")
        else:
            f = open(path, "rb")
            size = os.fstat(f.fileno()).st_size
        with f:
            _check_size(path, size or 0)
            data = f.read(MAX_SPEC_BYTES + 1)
        _check_size(path, len(data), known=False)  # grew while read, or storage that did not say
        return path, data.decode("utf-8")
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise SpecError(f"{path}: cannot read the spec ({e})") from None


def parse_yaml(name: str, text: str, *, strict: bool = True,
               warn: Warn | None = None) -> tuple[Any, SpecSource]:
    """The YAML document as plain data and its :class:`SpecSource`; syntax errors → SpecError.
    A key repeated in a mapping is an error when ``strict``; else the last value wins (as in
    oracle-ads) and ``warn`` hears of it with the lines of both."""
    _check_size(name, len(text.encode("utf-8", errors="replace")))
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise SpecError(f"{name}: not valid YAML: {what}{where}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{name}: not valid YAML: {e}") from None
    except SpecExpansionError as e:
        raise SpecError(f"{name}: the YAML expands to more than {MAX_SPEC_VALUES} values (aliases "
                        f"repeating large collections?), refused, line {e.line}") from None
    except RecursionError:
        raise SpecError(f"{name}: the YAML is nested too deeply, refused") from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    duplicates: list = []
    if root is not None:
        lines[()] = root.start_mark.line + 1
        _index_lines(root, (), lines, duplicates)
    source = SpecSource(name, lines)
    if duplicates and strict:
        raise SpecError("\n".join(f"{name}: {format_path(p)}: duplicate key (first at line {first}), "
                                  f"line {line}" for p, first, line in duplicates))
    tell(warn, [f"{name}: {format_path(p)}: duplicate key (first at line {first}): the last one "
                f"wins, line {line}" for p, first, line in duplicates], f"{name}: more keys repeated")
    if not isinstance(data, dict):
        raise SpecError(f"{name}: the spec must be a YAML mapping (kind: distributed, apiVersion, spec)")
    return data, source


# ------------------------------------------------------------------------------------------------
# ${VAR} placeholders
# ------------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_placeholders(data: Any, environ: Mapping[str, str], source: SpecSource,
                         path: Path = ()) -> Any:
    """``data`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string value."""
    missing: list[str] = []
    out = _resolve(data, environ, source, path, missing)
    if missing:
        raise SpecError("\n".join(missing))
    return out


def _resolve(data, environ, source, path, missing):
    if isinstance(data, dict):
        return {k: _resolve(v, environ, source, path + (k,), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve(v, environ, source, path + (i,), missing) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def sub(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(source.error(path, f"${{{name}}} is not set in the environment"))
        return m.group(0)

    return _PLACEHOLDER.sub(sub, data)


# ================================================================================================
# The models (field aliases are the YAML keys, so error locations are YAML paths)
# ================================================================================================
class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _scalar_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (str, int, float, bool)):
        return str(v)
    raise ValueError(f"must be a string or a number (got a {type(v).__name__})")


def _scalar_list(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list):
        return [_scalar_text(x) for x in v]
    raise ValueError("must be a list of strings")


_ANY_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}
Scalar = Annotated[str, BeforeValidator(_scalar_text), WithJsonSchema(_ANY_SCALAR)]
ScalarList = Annotated[list[str] | None, BeforeValidator(_scalar_list),
                       WithJsonSchema({"anyOf": [{"type": "array", "items": _ANY_SCALAR},
                                                 {"type": "string"}, {"type": "null"}]})]
ArgList = Annotated[list[str] | str | None, BeforeValidator(_scalar_list),
                    WithJsonSchema({"anyOf": [{"type": "array", "items": _ANY_SCALAR},
                                              {"type": "string"}, {"type": "null"}]})]


def _kwargs(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict):
        return {str(k): _scalar_text(x) for k, x in v.items()}
    raise ValueError("must be a string (--key value ...) or a mapping")


Kwargs = Annotated[str | dict[str, str] | None, BeforeValidator(_kwargs),
                   WithJsonSchema({"anyOf": [{"type": "string"},
                                             {"type": "object", "additionalProperties": _ANY_SCALAR},
                                             {"type": "null"}]})]

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


def _policy_name(v: Any) -> Any:
    """Kubeflow's ``restartPolicy`` spellings in any case (``onFailure``, ``exit_code``...), as the
    nodes read ``OCI__RESTART_POLICY``; anything else is left for the type to refuse."""
    if isinstance(v, str):
        key = v.strip().lower().replace("_", "").replace("-", "")
        return {"never": "Never", "onfailure": "OnFailure", "exitcode": "ExitCode"}.get(key, v)
    return v


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):  # YAML's true/false would otherwise count as 1/0
        raise ValueError(f"must be a whole number (got {str(v).lower()})")
    return v


RestartPolicy = Annotated[Literal["Never", "OnFailure", "ExitCode"] | None, BeforeValidator(_policy_name)]
WholeNumber = Annotated[int | None, BeforeValidator(_no_bool)]
# Run-wide recovery keys (Kubeflow's runPolicy): a node group names them only to be refused.
RUN_WIDE = {"backoff_limit": "backoffLimit", "active_deadline_seconds": "activeDeadlineSeconds"}


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
    # cluster) / OnFailure / ExitCode; the restarts the whole cluster may take; its whole life.
    restart_policy: RestartPolicy = None
    backoff_limit: WholeNumber = Field(None, ge=0, le=10_000)
    active_deadline_seconds: WholeNumber = Field(None, ge=1)
    # The stall watchdog (fsm_cluster.observe.stall): seconds without output or progress on every node.
    stall_timeout: Annotated[float | None, BeforeValidator(_no_bool)] = Field(None, gt=0, allow_inf_nan=False)
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
        from .clock import parse_duration

        try:
            parse_duration(v)
        except ValueError:
            raise ValueError(f"not a duration: {v!r} (examples: 45s, 30m, 2h, 1d)") from None
        return str(v).strip()

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
        known = known_cluster_kinds()
        if v.upper() not in known:
            raise ValueError(f"unknown cluster kind {v!r} (known: {', '.join(known)})")
        return v.upper()


class ShapeConfig(_Model):
    ocpus: float = Field(gt=0)
    memory_in_gbs: float = Field(gt=0, alias="memoryInGBs")


def _empty_is_none(v):
    """An infrastructure value left empty is unset: `subnetId: ${SUBNET_OCID:-}` → no subnet."""
    return None if v == "" else v


Unset = Annotated[str | None, BeforeValidator(_empty_is_none)]


class InfraSpec(_Model):
    """``spec.infrastructure.spec``: where the job runs (ignored by ``fsm-cluster local``)."""

    compartment_id: Unset = None
    project_id: Unset = None
    display_name: Unset = None
    log_group_id: Unset = None
    log_id: Unset = None
    subnet_id: Unset = None
    shape_name: Unset = None
    shape_config_details: Annotated[ShapeConfig | None, BeforeValidator(_empty_is_none)] = None
    block_storage_size: Annotated[int | None, BeforeValidator(_empty_is_none)] = Field(None, ge=50)


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


# ================================================================================================
# The cluster image: --image, or oracle-ads' "@image" from config.ini
# ================================================================================================
IMAGE_PATH: Path = ("spec", "cluster", "spec", "image")
ADS_INI = "config.ini"  # what `ads opctl distributed-training build-image` writes where it runs
ADS_INI_SECTION = "main"
ADS_INI_KEYS = ("registry", "tag")


class ImageUnresolved(Exception):
    """An ``@`` image whose ``config.ini`` is missing or lacks what it needs; ``short`` is the
    reason in a few words (for a dry run's placeholder)."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short


def image_from_ini(path: str) -> str:
    """``<registry>:<tag>`` from the ``[main]`` section of oracle-ads' ``config.ini`` at ``path``
    (read with the same ConfigParser settings as oracle-ads); else :class:`ImageUnresolved`."""
    if not os.path.isfile(path):
        raise ImageUnresolved(f"{path} not found", f"{ADS_INI} not found")
    ini = configparser.ConfigParser(allow_no_value=True)
    try:
        ini.read(path, encoding="utf-8")
        if not ini.has_section(ADS_INI_SECTION):
            raise ImageUnresolved(f"{path} has no [{ADS_INI_SECTION}] section",
                                  f"no [{ADS_INI_SECTION}] in {ADS_INI}")
        values = {k: ini.get(ADS_INI_SECTION, k, fallback=None) for k in ADS_INI_KEYS}
    except (configparser.Error, OSError, ValueError) as e:  # ValueError: not UTF-8
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageUnresolved(f"{path} cannot be read ({first})", f"{ADS_INI} unreadable") from None
    missing = [k for k, v in values.items() if not (v or "").strip()]
    if missing:
        keys = " and ".join(missing)
        raise ImageUnresolved(f"{path} has no {keys} in [{ADS_INI_SECTION}]",
                              f"no {keys} in {ADS_INI}")
    return f"{values['registry'].strip()}:{values['tag'].strip()}"


@dataclass(frozen=True)
class ImageChoice:
    """How ``submit`` settles ``spec.cluster.spec.image``.

    ``override`` (``--image``) replaces it. Else an image starting with ``@`` (oracle-ads'
    ``"@image"``) is ``<registry>:<tag>`` from ``config.ini`` in ``directory`` (default: the
    current directory, where oracle-ads looks), as ``ads opctl`` resolves it. When it cannot be:
    with ``placeholder`` (a dry run) the plan shows ``<@image: reason>`` and a warning is given;
    without, a SpecError names the file and what it lacks.
    """

    override: str | None = None
    directory: str | None = None
    placeholder: bool = False

    def settle(self, data: dict, source: SpecSource, warn: Warn) -> bool:
        """Set the image in ``data`` (a validated spec as plain data) in place; True if changed."""
        body = data["spec"]["cluster"]["spec"]
        if self.override is not None:
            body["image"] = self.override
            return True
        image = body.get("image")
        if not isinstance(image, str) or not image.startswith("@"):
            return False
        ini = os.path.join(self.directory or os.getcwd(), ADS_INI)
        try:
            body["image"] = image_from_ini(ini)
        except ImageUnresolved as e:
            why = (f"{image!r} stands for the image `ads opctl distributed-training build-image` "
                   f"named in {ADS_INI} ([{ADS_INI_SECTION}] {' and '.join(ADS_INI_KEYS)}); {e}")
            if not self.placeholder:
                raise SpecError(source.error(IMAGE_PATH, f"{why}: pass --image IMAGE, or submit "
                                                         f"from the folder holding {ADS_INI}")) from None
            body["image"] = f"<{image}: {e.short}>"
            warn(source.error(IMAGE_PATH, f"{why}: planned with a placeholder"))
        return True


# ================================================================================================
# Loading
# ================================================================================================
def load_spec(path_or_text: str | os.PathLike, environ: Mapping[str, str] | None = None,
              ignore: Iterable[Path] = (), *, strict: bool = True, image: ImageChoice | None = None,
              warn: Warn | None = None) -> ClusterSpec:
    """A validated :class:`ClusterSpec` from a file (path or fsspec URI) or YAML text.

    ``${VAR}`` placeholders resolve from ``environ`` (default ``os.environ``); the cluster kind's
    spec builder then adds its environment. The YAML paths in ``ignore`` are dropped before
    anything else (a local run ignores the infrastructure: its placeholders need not be set).
    Any problem → :class:`SpecError` naming file, path, line.

    ``strict=False`` reads a spec as oracle-ads does: an unknown key is ignored and a repeated key
    takes its last value, each told to ``warn`` (default: this module's logger) with its line and a
    "did you mean". ``image`` settles the cluster image as ``submit`` does (:class:`ImageChoice`:
    ``--image``, oracle-ads' ``@image``); without it the image is read as written.
    """
    name, text = read_text(path_or_text)
    return load_spec_text(text, name=name, environ=environ, ignore=ignore, strict=strict, image=image,
                          warn=warn)


def load_spec_text(text: str, name: str = "<spec>", environ: Mapping[str, str] | None = None,
                   ignore: Iterable[Path] = (), *, strict: bool = True,
                   image: ImageChoice | None = None, warn: Warn | None = None) -> ClusterSpec:
    warn = warn or log.warning
    data, source = parse_yaml(name, text, strict=strict, warn=warn)
    for path in ignore:
        _drop(data, path)
    data = resolve_placeholders(data, os.environ if environ is None else environ, source)
    spec = validate_spec(data, source, strict=strict, warn=warn)
    if image is not None and image.settle(data, source, warn):
        spec = validate_spec(data, source)
    builder = FrameworkSpecBuilderFactory.get(spec.cluster_type)(data)
    try:
        built = builder.update()
    except SpecFieldError as e:
        raise SpecError(source.error(e.path, e.message)) from None
    except SpecError:
        raise
    except Exception as e:  # a builder's bug must still end in one clear message
        raise SpecError(f"{name}: the {spec.cluster_type} spec builder failed: {type(e).__name__}: {e}") from e
    if built is not data or builder.changed:
        spec = validate_spec(built, source)
    return spec


def _drop(data: Any, path: Path) -> None:
    """Remove ``path`` from ``data`` when it is there (an absent step: nothing)."""
    for part in path[:-1]:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return
    if isinstance(data, dict):
        data.pop(path[-1], None)


# Pydantic names every unknown key in one pass, except inside a value it could not read at all; a
# few more rounds cover that, and the bound keeps a pathological spec cheap.
_MAX_ROUNDS = 8


def validate_spec(data: dict, source: SpecSource, *, strict: bool = True,
                  warn: Warn | None = None) -> ClusterSpec:
    """``data`` as a :class:`ClusterSpec` (any problem → SpecError naming path and line). Not
    ``strict``: an unknown key is dropped from ``data`` and told to ``warn`` instead."""
    rounds = 0
    while True:
        try:
            spec = ClusterSpec.model_validate(data)
            break
        except ValidationError as e:
            unknown = [] if strict else [p for p in spec_problems(e) if p.type == "extra_forbidden"]
            if not unknown or rounds == _MAX_ROUNDS:
                raise SpecError(format_errors(e, source)) from None
        unknown.sort(key=lambda p: source.line_of(p.loc) or 0)
        tell(warn, [source.error(p.loc, f"{p.message}: ignored") for p in unknown],
             f"{source.name}: more unknown keys ignored")
        for p in unknown:
            _drop(data, p.loc)
        rounds += 1
    spec._source = source
    problems = list(semantic_problems(spec))
    if problems:
        raise SpecError("\n".join(source.error(p, m) for p, m in problems))
    return spec


def semantic_problems(spec: ClusterSpec):
    """(path, message) for what the field types alone cannot say."""
    c = ("spec", "cluster", "spec")
    body = spec.cluster
    if body.main.replicas not in (None, 1):
        yield c + ("main", "replicas"), f"must be 1: a cluster has exactly one MAIN (got {body.main.replicas})"
    for role in MODES:
        group = body.group(role)
        for attr, key in RUN_WIDE.items():
            if group is not None and attr in group.model_fields_set:
                yield c + (role, key), (f"is run-wide (as in Kubeflow's runPolicy): set it once as "
                                        f"spec.cluster.spec.{key}; a role may only override restartPolicy")
    if body.ps is not None and body.ps.count() > 0 and ":" not in spec.cluster_type \
            and not FrameworkSpecBuilderFactory.accepts_ps(spec.cluster_type):
        with_ps = " / ".join(FrameworkSpecBuilderFactory.kinds_with_ps())
        yield c + ("ps",), (f"parameter servers are a {with_ps} feature, not {spec.cluster_type}" if with_ps
                            else f"{spec.cluster_type} clusters have no parameter servers")
    rt = spec.runtime
    r = ("spec", "runtime")
    if rt.type and rt.spec.type and rt.type != rt.spec.type:
        yield r + ("spec", "type"), f"contradicts spec.runtime.type ({rt.type!r} vs {rt.spec.type!r})"
    kind = rt.runtime_type
    if kind in ("git", "remote") and not rt.spec.uri:
        yield r + ("spec", "uri"), f"required when the runtime type is {kind}"
    if kind != "git":
        for key in ("branch", "commit", "gitSecretId"):
            if getattr(rt.spec, {"gitSecretId": "git_secret_id"}.get(key, key)):
                yield r + ("spec", key), f"only meaningful for a git runtime (type is {kind})"
    if kind == "python" and rt.spec.uri:
        yield r + ("spec", "uri"), "only meaningful for a git or remote runtime (set spec.runtime.type)"


# ================================================================================================
# Framework spec builders (the seed's AbstractFrameworkSpecBuilder) and their registry
# ================================================================================================
def update_env_vars(config: dict, env_vars: list[dict]) -> dict:
    """Set ``env_vars`` (``[{"name": "X", "value": ...}]``) in the spec's runtime env.

    ``config`` is the spec as a dict (``kind: distributed``); a name already present is replaced,
    others are appended. The runtime env goes into the job definition. Returns ``config``.
    """
    for item in env_vars:
        if not isinstance(item, Mapping) or "name" not in item:
            raise SpecError(f"update_env_vars: expected {{'name': ..., 'value': ...}}, got {item!r}")
    spec = config.setdefault("spec", {})
    runtime = spec.get("runtime") or {}
    spec["runtime"] = runtime
    rspec = runtime.get("spec") or {}
    runtime["spec"] = rspec
    env = list(rspec.get("env") or [])
    index = {e.get("name"): i for i, e in enumerate(env) if isinstance(e, Mapping)}
    for item in env_vars:
        entry = {"name": str(item["name"]), "value": _scalar_text(item.get("value"))}
        if entry["name"] in index:
            env[index[entry["name"]]] = entry
        else:
            index[entry["name"]] = len(env)
            env.append(entry)
    rspec["env"] = env
    return config


class SpecFieldError(SpecError):
    """A spec builder's finding at one YAML path; the loader adds the file name and the line."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{format_path(path)}: {message}")
        self.path = tuple(path)
        self.message = message


class AbstractFrameworkSpecBuilder(metaclass=ABCMeta):
    """Adds a framework's environment variables to a spec (on the laptop, never on a node).

    ``config`` is the spec as a dict. Subclasses override ``_add_framework_envs(new_env_vars)``
    (the seed's hook) and return the list with their ``{"name", "value"}`` items added. Variables
    the user already set (runtime env or cluster ``config.env``) win over the builder's. A problem
    with one YAML path is a :class:`SpecFieldError` (``load_spec`` names the file and line).
    Set ``accepts_ps = True`` for a framework that uses parameter servers.
    """

    accepts_ps = False

    def __init__(self, config: dict):
        self.config = config
        self.changed = False

    def update(self) -> dict:
        added = self._add_framework_envs([])
        if not added:
            return self.config
        user = set(self._user_env_names())
        added = [e for e in added if e.get("name") not in user]
        self.changed = bool(added)
        return update_env_vars(self.config, added)

    def _add_framework_envs(self, new_env_vars: list) -> list:
        """Override: append the framework's variables to ``new_env_vars`` and return it."""
        return new_env_vars

    def _user_env_names(self):
        spec = self.config.get("spec") or {}
        cluster = ((spec.get("cluster") or {}).get("spec") or {})
        runtime = (spec.get("runtime") or {}).get("spec") or {}
        for items in ((cluster.get("config") or {}).get("env"), runtime.get("env")):
            for e in items or []:
                if isinstance(e, Mapping):
                    yield e.get("name")


class FrameworkSpecBuilderFactory:
    """Cluster kind → spec builder class: ``register``, the built-in engines' builders, the
    entry-point group ``fsm_cluster.spec_builders`` (``DASK = "pkg.module:Builder"``), else the
    no-op base builder (:func:`fsm_cluster.registry.lookup`)."""

    registry: dict[str, type] = {}

    @classmethod
    def register(cls, kind: str, builder: type) -> None:
        cls.registry[kind.strip().upper()] = builder

    @classmethod
    def get(cls, kind: str) -> type:
        k = (kind or "").strip().upper()
        if k in cls.registry:
            return cls.registry[k]
        spec = lookup(k, BUILTIN_SPEC_BUILDERS, SPEC_BUILDERS_GROUP)
        if spec is None:
            return AbstractFrameworkSpecBuilder
        try:
            builder = import_object(spec)
        except Exception as e:
            raise SpecError(f"spec builder for {k} ({spec}) cannot be loaded: {e}") from None
        cls.registry[k] = builder
        return builder

    @classmethod
    def known(cls) -> list[str]:
        return sorted(set(cls.registry) | known_kinds(BUILTIN_SPEC_BUILDERS, SPEC_BUILDERS_GROUP))

    @classmethod
    def accepts_ps(cls, kind: str) -> bool:
        return bool(getattr(cls.get(kind), "accepts_ps", False))

    @classmethod
    def kinds_with_ps(cls) -> list[str]:
        """The known kinds whose builder accepts parameter servers (one that cannot be loaded: not)."""
        out = []
        for kind in cls.known():
            try:
                if cls.accepts_ps(kind):
                    out.append(kind)
            except SpecError:
                continue
        return out


def known_cluster_kinds() -> list[str]:
    return sorted(set(ClusterProviderFactory.known()) | set(FrameworkSpecBuilderFactory.known()))


# ================================================================================================
# Spec → job definition + runs (the seed's ClusterConfigToJobSpecConverter)
# ================================================================================================
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
            OCI__STALL_TIMEOUT: _text(c.stall_timeout),
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


@dataclass(frozen=True)
class NodePlan:
    """One node to start: its name (a spec's run name; once ``fsm-cluster local`` has finalized
    the plan, the display name, log name and run id: ``worker-1``), mode, rank and environment."""

    name: str
    mode: str
    rank: int
    env: dict[str, str]

    @property
    def node_id(self) -> str:
        """ADS file-name stem: ``MAIN`` or ``<mode>_<JOB_RUN_OCID>`` (set when finalized)."""
        return "MAIN" if self.mode == "MAIN" else f"{self.mode}_{self.env[JOB_RUN_OCID]}"


def node_environments(spec: ClusterSpec) -> list[NodePlan]:
    """Every node's plan with its full environment (job def + run), MAIN first (what
    ``fsm-cluster local`` starts)."""
    conv = ClusterConfigToJobSpecConverter(spec)
    base = conv.job_def_info()["envVars"]
    return [NodePlan(r["name"], r["mode"], r["rank"], {**base, **r["envVars"]})
            for r in conv.run_infos()]
