"""Specs read as oracle-ads reads them, through the real CLI: an unknown key and a repeated key are
warnings naming the file, the YAML path and the line(s) (``--strict``: one clear error, exit 2, on
``submit`` and ``local -f``); ``image: "@image"`` comes from ./config.ini like ``ads opctl``;
``--image`` overrides; a dry run plans an unresolvable ``@image`` with a visible placeholder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.cli.clihelp import cli

DOCS = Path(__file__).resolve().parents[1] / "spec" / "ads_docs"
DASK = (DOCS / "dask_gridsearch.yaml").read_text()
RAY = (DOCS / "ray_gridsearch.yaml").read_text()


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of ``text`` containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def spec_file(folder: Path, text: str, name: str = "train.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def warnings_of(stderr: str, command: str = "submit") -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"fsm-cluster {command}: warning: ")]


def one_error(r, command: str = "submit") -> str:
    """The one line of a refused command (exit 2, no traceback, nothing planned)."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"fsm-cluster {command}: error: ")
    return lines[0].removeprefix(f"fsm-cluster {command}: error: ")


def planned(r) -> dict:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return yaml.safe_load(r.stdout)


def dry_run(folder: Path, text: str, *more) -> tuple[Path, dict, list[str]]:
    """``submit --dry-run`` of ``text`` (written to folder/train.yaml) run in ``folder``: the spec's
    path, the plan, the warnings."""
    spec = spec_file(folder, text)
    r = cli("submit", "--dry-run", *more, "-f", spec, cwd=folder)
    return spec, planned(r), warnings_of(r.stderr)


# ------------------------------------------------------------------------------------------------
# unknown keys
# ------------------------------------------------------------------------------------------------
MISSPELT = DASK.replace("          replicas: 3\n", "          replica: 3\n")


def test_a_misspelt_key_is_ignored_with_a_warning_naming_line_and_the_close_key(tmp_path):
    spec, plan, warnings = dry_run(tmp_path, MISSPELT)
    assert warnings == [
        f"fsm-cluster submit: warning: {spec}: spec.cluster.spec.worker.replica: unknown field "
        f"(did you mean 'replicas'?): ignored, line {line_of(MISSPELT, 'replica: 3')}"]
    # ignored as oracle-ads ignores it: the worker group falls back to one replica
    assert plan["job"]["envVars"]["OCI__WORKER_COUNT"] == "1"
    assert [run["mode"] for run in plan["runs"]] == ["MAIN", "WORKER"]


def test_unknown_keys_at_several_depths_are_each_named_in_file_order(tmp_path):
    text = DASK.replace("spec:\n  infrastructure:\n", "spec:\n  name: grid\n  infrastructure:\n", 1)
    text = text.replace("      entryPoint: \"search.py\"\n",
                        "      entryPoint: \"search.py\"\n      entrypoint: other.py\n")
    spec, plan, warnings = dry_run(tmp_path, text)
    assert warnings == [
        f"fsm-cluster submit: warning: {spec}: spec.name: unknown field: ignored, line {line_of(text, 'name: grid')}",
        f"fsm-cluster submit: warning: {spec}: spec.runtime.spec.entrypoint: unknown field (did you mean "
        f"'entryPoint'?): ignored, line {line_of(text, 'entrypoint: other.py')}"]
    assert plan["job"]["envVars"]["OCI__ENTRY_SCRIPT"] == "search.py"


def test_many_unknown_keys_warn_twenty_then_count_the_rest(tmp_path):
    extra = "".join(f"  extra{i}: {i}\n" for i in range(27))
    text = DASK.replace("spec:\n  infrastructure:\n", f"spec:\n{extra}  infrastructure:\n", 1)
    spec, plan, warnings = dry_run(tmp_path, text)
    assert warnings[:20] == [f"fsm-cluster submit: warning: {spec}: spec.extra{i}: unknown field: ignored, "
                             f"line {line_of(text, f'extra{i}: ')}" for i in range(20)]
    assert warnings[20:] == [f"fsm-cluster submit: warning: {spec}: more unknown keys ignored: 7 not "
                             "shown (--strict lists them all)"]
    assert plan["job"]["envVars"]["OCI__CLUSTER_TYPE"] == "DASK"


def test_strict_refuses_an_unknown_key_with_one_clear_message(tmp_path):
    spec = spec_file(tmp_path, MISSPELT)
    r = cli("submit", "--dry-run", "--strict", "-f", spec, cwd=tmp_path)
    assert one_error(r) == (f"{spec}: spec.cluster.spec.worker.replica: unknown field (did you mean "
                            f"'replicas'?), line {line_of(MISSPELT, 'replica: 3')}")
    assert r.stdout == ""


def test_a_real_problem_stays_an_error_next_to_an_ignored_key(tmp_path):
    text = MISSPELT.replace("blockStorageSize: 60", "blockStorageSize: 10")
    spec = spec_file(tmp_path, text)
    r = cli("submit", "--dry-run", "-f", spec, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert errors == [f"fsm-cluster submit: error: {spec}: spec.infrastructure.spec.blockStorageSize: "
                      f"must be ≥ 50 (got 10), line {line_of(text, 'blockStorageSize')}"]
    assert len(warnings_of(r.stderr)) == 1 and "worker.replica:" in warnings_of(r.stderr)[0]


# ------------------------------------------------------------------------------------------------
# keys repeated in a mapping
# ------------------------------------------------------------------------------------------------
TWICE = DASK.replace("          replicas: 3\n", "          replicas: 3\n          replicas: 5\n")


def test_a_repeated_key_takes_the_last_value_with_a_warning_naming_both_lines(tmp_path):
    spec, plan, warnings = dry_run(tmp_path, TWICE)
    first, last = line_of(TWICE, "replicas: 3"), line_of(TWICE, "replicas: 5")
    assert warnings == [
        f"fsm-cluster submit: warning: {spec}: spec.cluster.spec.worker.replicas: duplicate key "
        f"(first at line {first}): the last one wins, line {last}"]
    assert plan["job"]["envVars"]["OCI__WORKER_COUNT"] == "5"
    assert len(plan["runs"]) == 6


def test_strict_refuses_a_repeated_key_naming_both_lines(tmp_path):
    spec = spec_file(tmp_path, TWICE)
    r = cli("submit", "--dry-run", "--strict", "-f", spec, cwd=tmp_path)
    assert one_error(r) == (f"{spec}: spec.cluster.spec.worker.replicas: duplicate key (first at line "
                            f"{line_of(TWICE, 'replicas: 3')}), line {line_of(TWICE, 'replicas: 5')}")


def test_a_repeated_mapping_is_replaced_whole_and_errors_name_the_kept_lines(tmp_path):
    """The first value's keys are gone (PyYAML keeps only the last mapping), and a problem in the
    kept one is reported at its own line, not at the forgotten one's."""
    text = DASK.replace("      worker:\n          config:\n          replicas: 3\n",
                        "      worker:\n          replicas: 3\n      worker:\n          replicas: -2\n")
    spec = spec_file(tmp_path, text)
    r = cli("submit", "--dry-run", "-f", spec, cwd=tmp_path)
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert r.returncode == 2
    assert errors == [f"fsm-cluster submit: error: {spec}: spec.cluster.spec.worker.replicas: must be ≥ 0 "
                      f"(got -2), line {line_of(text, 'replicas: -2')}"]


# ------------------------------------------------------------------------------------------------
# local -f reads the same way
# ------------------------------------------------------------------------------------------------
LOCAL = """\
kind: distributed
apiVersion: v1.0
spec:
  name: quick
  cluster:
    kind: COMMAND
    spec:
      workDir: oci://unused@ns/local
      main:
        replicas: 1
      worker:
        replicas: 0
  runtime:
    kind: python
    spec:
      entryPoint: entry.sh
"""


def test_local_strict_refuses_an_unknown_key_and_starts_nothing(tmp_path):
    spec = spec_file(tmp_path, LOCAL)
    r = cli("local", "--strict", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path)
    assert one_error(r, "local") == f"{spec}: spec.name: unknown field, line 4"
    assert not (tmp_path / "wd").exists() or not any((tmp_path / "wd").iterdir())


def test_local_runs_a_spec_with_an_unknown_key_after_a_warning(tmp_path):
    spec = spec_file(tmp_path, LOCAL)
    (tmp_path / "entry.sh").write_text("#!/bin/sh\necho entry ran on $OCI__MODE\n")
    (tmp_path / "entry.sh").chmod(0o755)
    r = cli("local", "--no-progress", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert warnings_of(r.stderr, "local") == [
        f"fsm-cluster local: warning: {spec}: spec.name: unknown field: ignored, line 4"]
    assert "cluster complete" in r.stdout


# ------------------------------------------------------------------------------------------------
# image: "@image", --image
# ------------------------------------------------------------------------------------------------
IMAGE_LINE = line_of(RAY, 'image: "@image"')


def write_ini(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "config.ini"
    ini.write_text(body)
    return ini


@pytest.mark.parametrize("registry, tag", [("iad.ocir.io/acme/tune", "v_1"),
                                           ("fra.ocir.io/other/ray-img", "2024.06")])
def test_at_image_is_registry_and_tag_of_config_ini_in_the_working_directory(tmp_path, registry, tag):
    (tmp_path / "specs").mkdir()
    spec = spec_file(tmp_path / "specs", RAY)
    work = tmp_path / "work"
    write_ini(work, f"[main]\nregistry = {registry}\ntag = {tag}\ndockerfile = Dockerfile\n"
                    "source_folder = .\noci_key_mnt = ~/.oci:/home/oci_dist_training/.oci\n")
    r = cli("submit", "--dry-run", "-f", spec, cwd=work)
    plan = planned(r)
    assert plan["job"]["image"] == f"{registry}:{tag}"
    assert warnings_of(r.stderr) == []
    # where oracle-ads looks: the current directory, not the spec's folder
    write_ini(tmp_path / "specs", f"[main]\nregistry = {registry}\ntag = {tag}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert planned(cli("submit", "--dry-run", "-f", spec, cwd=elsewhere))["job"]["image"] == \
        "<@image: config.ini not found>"


def test_dry_run_without_config_ini_plans_a_visible_placeholder_and_warns(tmp_path):
    spec, plan, warnings = dry_run(tmp_path, RAY)
    assert plan["job"]["image"] == "<@image: config.ini not found>"
    assert warnings == [
        f"fsm-cluster submit: warning: {spec}: spec.cluster.spec.image: '@image' stands for the image "
        f"`ads opctl distributed-training build-image` named in config.ini ([main] registry and tag); "
        f"{tmp_path / 'config.ini'} not found: planned with a placeholder, line {IMAGE_LINE}"]


@pytest.mark.parametrize("body, short, long", [
    ("[main]\nregistry = iad.ocir.io/acme/tune\n", "no tag in config.ini", "has no tag in [main]"),
    ("[main]\ntag = v1\nregistry =\n", "no registry in config.ini", "has no registry in [main]"),
    ("[main]\ndockerfile = Dockerfile\n", "no registry and tag in config.ini",
     "has no registry and tag in [main]"),
    ("[build]\nregistry = r\ntag = t\n", "no [main] in config.ini", "has no [main] section"),
    ("registry = r\n", "config.ini unreadable", "cannot be read (File contains no section headers."),
])
def test_an_incomplete_config_ini_is_named(tmp_path, body, short, long):
    spec = spec_file(tmp_path, RAY)
    ini = write_ini(tmp_path, body)
    r = cli("submit", "--dry-run", "-f", spec, cwd=tmp_path)
    assert planned(r)["job"]["image"] == f"<@image: {short}>"
    [warning] = warnings_of(r.stderr)
    assert f"{ini} {long}" in warning
    real = one_error(cli("submit", "-f", spec, cwd=tmp_path))
    assert real.startswith(f"{spec}: spec.cluster.spec.image: '@image' stands for the image")
    assert f"{ini} {long}" in real


def test_a_real_submit_refuses_an_unresolvable_at_image_before_any_network(tmp_path):
    spec = spec_file(tmp_path, RAY)
    r = cli("submit", "-f", spec, "--oci-config", tmp_path / "no-oci-config", cwd=tmp_path)
    assert one_error(r) == (
        f"{spec}: spec.cluster.spec.image: '@image' stands for the image `ads opctl "
        f"distributed-training build-image` named in config.ini ([main] registry and tag); "
        f"{tmp_path / 'config.ini'} not found: pass --image IMAGE, or submit from the folder holding "
        f"config.ini, line {IMAGE_LINE}")


def test_image_option_overrides_at_image_and_config_ini(tmp_path):
    write_ini(tmp_path, "[main]\nregistry = iad.ocir.io/acme/tune\ntag = v1\n")
    _, plan, warnings = dry_run(tmp_path, RAY, "--image", "phx.ocir.io/acme/pinned:42")
    assert plan["job"]["image"] == "phx.ocir.io/acme/pinned:42"
    assert warnings == []


def test_image_option_overrides_a_concrete_image_and_lets_a_real_submit_pass_the_spec(tmp_path):
    _, plan, _ = dry_run(tmp_path, DASK, "--image", "sjc.ocir.io/a/b:c")
    assert plan["job"]["image"] == "sjc.ocir.io/a/b:c"
    # without config.ini, --image alone settles "@image": the real submit gets as far as OCI's config
    ray = spec_file(tmp_path, RAY, "ray.yaml")
    r = cli("submit", "--image", "sjc.ocir.io/a/b:c", "-f", ray, "--oci-config",
            tmp_path / "no-oci-config", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and re.match(r"fsm-cluster submit: error: OCI_IAM_TYPE=api_key: OCI config ",
                                         errors[0]), r.stderr


@pytest.mark.parametrize("value", ["", "@image"])
def test_a_bad_image_option_is_one_clear_error(tmp_path, value):
    spec = spec_file(tmp_path, RAY)
    assert one_error(cli("submit", "--dry-run", "--image", value, "-f", spec, cwd=tmp_path)) == (
        f"--image {value!r}: expected an image's registry URI (region.ocir.io/tenancy/repo:tag)")
