"""The value types of spec fields: how a YAML value becomes a field's value, and what the JSON
schema says it may be.

YAML writes ``value: 12345`` or ``replicas: true`` where the spec means a string or a whole
number; these annotated types say which spellings a field takes (a number or boolean becomes a
string in :data:`Scalar`, a boolean is refused where a number is meant, Kubeflow's restart policy
in any case, an infrastructure value left empty is unset) and keep the schema saying so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, WithJsonSchema

from .reading import scalar_text


def _scalar_list(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list):
        return [scalar_text(x) for x in v]
    raise ValueError("must be a list of strings")


_ANY_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}
_SCALARS_OR_TEXT = WithJsonSchema({"anyOf": [{"type": "array", "items": _ANY_SCALAR},
                                             {"type": "string"}, {"type": "null"}]})
Scalar = Annotated[str, BeforeValidator(scalar_text), WithJsonSchema(_ANY_SCALAR)]
ScalarList = Annotated[list[str] | None, BeforeValidator(_scalar_list), _SCALARS_OR_TEXT]
ArgList = Annotated[list[str] | str | None, BeforeValidator(_scalar_list), _SCALARS_OR_TEXT]


def _kwargs(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict):
        return {str(k): scalar_text(x) for k, x in v.items()}
    raise ValueError("must be a string (--key value ...) or a mapping")


Kwargs = Annotated[str | dict[str, str] | None, BeforeValidator(_kwargs),
                   WithJsonSchema({"anyOf": [{"type": "string"},
                                             {"type": "object", "additionalProperties": _ANY_SCALAR},
                                             {"type": "null"}]})]


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
Seconds = Annotated[float | None, BeforeValidator(_no_bool)]  # a number; true/false refused


def empty_is_none(v):
    """An infrastructure value left empty is unset: `subnetId: ${SUBNET_OCID:-}` → no subnet."""
    return None if v == "" else v


Unset = Annotated[str | None, BeforeValidator(empty_is_none)]
