"""Hostile specs are refused cheaply with one SpecError naming the file: too large (checked before
parsing), YAML aliases expanding past a value budget ("billion laughs"), recursive aliases, absurd
nesting. Ordinary aliases still load. (The alias bomb itself, which hangs an unbounded loader, is
run through the CLI in a subprocess: tests/cli/test_hostile_input.py.)"""

from __future__ import annotations

import pytest

from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import MAX_SPEC_BYTES, MAX_SPEC_VALUES, load_spec, load_spec_text, parse_yaml

HEAD = "kind: distributed\napiVersion: v1.0\nspec:\n  cluster:\n    kind: COMMAND\n    spec:\n      workDir: /tmp/x\n"


def test_a_spec_larger_than_the_limit_is_refused_before_parsing_with_its_size(tmp_path):
    spec = tmp_path / "huge.yaml"
    # not even YAML past the head: parsing it would be a different error
    spec.write_bytes(HEAD.encode() + b"# " + b"x" * MAX_SPEC_BYTES + b"\n: : [\n")
    size = spec.stat().st_size
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert str(e.value) == (f"{spec}: {size} bytes; a spec may hold at most {MAX_SPEC_BYTES} bytes "
                            "(1 MiB), refused")


def test_yaml_text_larger_than_the_limit_is_refused():
    with pytest.raises(SpecError, match=r"^<spec>: \d+ bytes; a spec may hold at most"):
        load_spec_text(HEAD + "#" * MAX_SPEC_BYTES + "\n")


def test_aliases_expanding_past_the_budget_are_refused_while_composing():
    # 3 levels of 60 copies: 216 000 values from a few hundred bytes (the bomb of the issue has 9)
    text = ("a: &a [" + ",".join(["x"] * 60) + "]\n"
            "b: &b [" + ",".join(["*a"] * 60) + "]\n"
            "c: &c [" + ",".join(["*b"] * 60) + "]\n")
    with pytest.raises(SpecError) as e:
        parse_yaml("bomb.yaml", text)
    assert str(e.value) == (f"bomb.yaml: the YAML expands to more than {MAX_SPEC_VALUES} values "
                            "(aliases repeating large collections?), refused, line 3")


def test_a_recursive_alias_is_refused():
    with pytest.raises(SpecError, match=r"^loop.yaml: not valid YAML: an alias refers to the collection "
                                        r"that contains it \(recursive alias\), line 1"):
        parse_yaml("loop.yaml", "a: &a [1, *a]\n")


def test_absurd_nesting_is_refused_not_a_recursion_traceback():
    with pytest.raises(SpecError, match=r"^deep.yaml: the YAML is nested too deeply, refused$"):
        parse_yaml("deep.yaml", "[" * 5000 + "]" * 5000 + "\n")


def test_ordinary_aliases_still_load():
    text = HEAD + ("      config:\n        env: &env\n          - name: A\n            value: '1'\n"
                   "      main:\n        config: {env: *env}\n      worker:\n        replicas: 2\n"
                   "        config: {env: *env}\n")
    spec = load_spec_text(text, environ={})
    assert spec.cluster.worker.conf.env_vars == {"A": "1"} == spec.cluster.main.conf.env_vars


def test_ignored_paths_are_dropped_before_placeholders_resolve():
    """`fsm-cluster local` ignores the infrastructure and images: their ${VAR}s need not be set."""
    text = (HEAD.replace("      workDir", "      image: ${IMAGE}\n      workDir")
            + "  infrastructure:\n    spec:\n      projectId: ${PROJECT_OCID}\n")
    with pytest.raises(SpecError, match=r"\$\{PROJECT_OCID\} is not set"):
        load_spec_text(text, environ={})
    spec = load_spec_text(text, environ={}, ignore=[("spec", "infrastructure"),
                                                    ("spec", "cluster", "spec", "image")])
    assert spec.spec.infrastructure is None and spec.cluster.image is None
