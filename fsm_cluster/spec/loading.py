"""Loading a spec: file or text → a validated :class:`~fsm_cluster.spec.models.ClusterSpec`.

:func:`load_spec` does, in order: read and parse the YAML with every node's line
(:mod:`~fsm_cluster.spec.reading`), drop the ignored paths, replace ``${VAR}`` placeholders,
validate (:func:`validate_spec`: the models, then :func:`semantic_problems`), settle the cluster
image for ``submit`` (:mod:`~fsm_cluster.spec.images`), and let the cluster kind's spec builder
add its environment (:mod:`~fsm_cluster.spec.kinds`), validating again what it changed.

``strict`` (the library's default; ``--strict`` on the command line) refuses an unknown key (with a
"did you mean") and a key repeated in a mapping. Lenient, as oracle-ads reads specs (the command
line's default), the unknown key is ignored and the repeated key takes its last value, each with a
warning naming the file, the YAML path and the line(s).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from ..errors import SpecError
from .builders import SpecFieldError
from .images import ImageChoice
from .kinds import FrameworkSpecBuilderFactory
from .models import MODES, RUN_WIDE, ClusterSpec, format_errors, spec_problems
from .reading import Path, SpecSource, Warn, log, parse_yaml, read_text, resolve_placeholders, tell


def load_spec(path_or_text: str | os.PathLike, environ: Mapping[str, str] | None = None,
              ignore: Iterable[Path] = (), *, strict: bool = True, image: ImageChoice | None = None,
              warn: Warn | None = None) -> ClusterSpec:
    """A validated :class:`ClusterSpec` from a file (path or fsspec URI) or YAML text.

    ``${VAR}`` placeholders resolve from ``environ`` (default ``os.environ``); the cluster kind's
    spec builder then adds its environment. The YAML paths in ``ignore`` are dropped before
    anything else (a local run ignores the infrastructure: its placeholders need not be set).
    Any problem → :class:`SpecError` naming file, path, line.

    ``strict=False`` reads a spec as oracle-ads does: an unknown key is ignored and a repeated key
    takes its last value, each told to ``warn`` (default: the logger ``fsm_cluster.jobspec``) with
    its line and a "did you mean". ``image`` settles the cluster image as ``submit`` does
    (:class:`ImageChoice`: ``--image``, oracle-ads' ``@image``); without it the image is read as
    written.
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
