"""Pydantic validation errors in plain words: the one formatter behind the environment (env.py),
the shared files (workdir.py) and cluster specs (jobspec.py).

:func:`format_validation_error` turns each error into a :class:`Problem` — its place (pydantic's
type tags removed), its type and a message in one vocabulary (:func:`message`: "required",
"must be ≥ 0 (got -1)", "unknown field (did you mean 'replicas'?)") — and joins the caller's lines
for them (each caller names a place its own way: a variable, a file's field, a YAML path and line).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pydantic import BaseModel, ValidationError

# Union members and validator wrappers pydantic adds to a location (``int``, ``function-after[...]``).
_TYPE_TAGS = re.compile(r"^(str|int|float|bool|list|dict|none)(\[.*\])?$|^function-")
_SHOWN = 80  # the longest input quoted in a message


@dataclass(frozen=True)
class Problem:
    """One validation error: ``loc`` the field's path, ``type`` pydantic's error type
    (``missing``, ``extra_forbidden``, ``json_invalid``, ...), ``message`` in plain words."""

    loc: tuple
    type: str
    message: str

    @property
    def path(self) -> str:
        return ".".join(str(p) for p in self.loc)


def format_validation_error(e: ValidationError, line: Callable[[Problem], str], *, sep: str = "; ",
                            model: type[BaseModel] | None = None, patterns: Mapping[str, str] | None = None,
                            order: Callable[[Problem], Any] | None = None) -> str:
    """The caller's ``line`` for every problem, duplicates once, joined by ``sep`` (sorted by
    ``order`` when given). ``model`` lets an unknown field suggest the closest allowed one;
    ``patterns`` names the regular expressions of the fields (``{ENV_VAR_NAME: "environment
    variable name"}``)."""
    problems = problems_of(e, model=model, patterns=patterns)
    if order is not None:
        problems.sort(key=order)
    return sep.join(dict.fromkeys(line(p) for p in problems))


def problems_of(e: ValidationError, *, model: type[BaseModel] | None = None,
                patterns: Mapping[str, str] | None = None) -> list[Problem]:
    """Every error of ``e`` as a :class:`Problem` (see :func:`format_validation_error`)."""
    problems = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _TYPE_TAGS.match(p)))
        fields = fields_at(model, loc) if model is not None and err["type"] == "extra_forbidden" else []
        problems.append(Problem(loc, err["type"], message(err, fields, patterns)))
    return problems


def message(err: dict, fields: Sequence[str] = (), patterns: Mapping[str, str] | None = None) -> str:
    """One pydantic error in plain words; a scalar input is quoted (shortened) after the rule it
    broke, never after a validator's own message (it names what it needs: inputs may be secrets)."""
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    shown = ""
    if isinstance(got, (str, int, float, bool)) or got is None:
        text = repr(got)
        shown = f" (got {text if len(text) <= _SHOWN else text[:_SHOWN - 1] + '…'})"
    if t == "missing":
        return "required"
    if t == "extra_forbidden":
        import difflib  # only for an error's hint

        close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if t == "json_invalid":
        return f"not valid JSON ({ctx['error']})" if ctx.get("error") else "not valid JSON"
    if t == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')}{shown}"
    if t == "greater_than":
        bound = ctx.get("gt")
        return f"must be > {int(bound) if isinstance(bound, float) and bound.is_integer() else bound}{shown}"
    if t == "less_than_equal":
        return f"must be ≤ {ctx.get('le')}{shown}"
    if t == "literal_error":
        return f"must be {ctx.get('expected')}{shown}"
    if t in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{shown}"
    if t in ("float_parsing", "float_type"):
        return f"must be a number{shown}"
    if t == "finite_number":
        return f"must be a finite number{shown}"
    if t in ("bool_parsing", "bool_type"):
        return f"must be true or false{shown}"
    if t == "string_type":
        return f"must be a string{shown}"
    if t == "string_too_short":
        return "must not be empty"
    if t == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        named = (patterns or {}).get(pattern)
        return f"not a valid {named}{shown}" if named else f"must match {pattern}{shown}"
    if t == "list_type":
        return "must be a list"
    if t in ("model_type", "dict_type", "model_attributes_type"):
        return "must be a mapping"
    return err["msg"].removeprefix("Value error, ")


def fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys (aliases) ``model`` allows where ``loc`` points (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = next((f for n, f in current.model_fields.items() if f.alias == part or n == part), None)
        if field is None:
            return []
        ann = field.annotation
        nxt = None
        for c in typing.get_args(ann) or (ann,):
            for inner in (c, *typing.get_args(c)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []
