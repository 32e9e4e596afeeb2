"""Ten ``kind: distributed`` specs in the shapes of the oracle-ads documentation and of
oracle-samples' distributed_training guides (tests/spec/ads_docs/, written here with our own values),
each planned by the real CLI: ``fsm-cluster submit --dry-run -f <spec>`` in a subprocess, from a
working directory of its own (where oracle-ads' config.ini is looked up).

Three of them were refused before specs were read as oracle-ads reads them: the samples' PyTorch
spec (``spec.name``), the docs' TensorFlow parameter-server spec (``spec:`` written twice) and the
Ray spec (``image: "@image"``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.cli.clihelp import cli

DOCS = Path(__file__).parent / "ads_docs"
REGISTRY, TAG = "iad.ocir.io/acme/built-here", "v_3"  # what build-image would have written


@dataclass
class Expect:
    kind: str
    names: list[str]  # run names, MAIN first
    entry: str
    ps: int = 0
    image: str | None = None  # None: the built image of config.ini (written for this spec)
    env: dict[str, str] = field(default_factory=dict)  # more of the job's variables
    run_env: dict[str, str] = field(default_factory=dict)  # in every run
    warnings: list[str] = field(default_factory=list)  # each line after "warning: <file>: "

    @property
    def workers(self) -> int:
        return len(self.names) - 1 - self.ps


PLACEHOLDER = "<@image: config.ini not found>"
IMAGE_WARNING = ("spec.cluster.spec.image: '@image' stands for the image `ads opctl distributed-training "
                 "build-image` named in config.ini ([main] registry and tag); {ini} not found: planned "
                 "with a placeholder, line {line}")
TLS = "--tls-ca-file /code/ca.pem --tls-cert /code/node-cert.pem --tls-key /code/node-key.pem"

EXPECT = {
    "dask_gridsearch.yaml": Expect(
        "DASK", ["main", "worker_0", "worker_1", "worker_2"], "search.py",
        image="iad.ocir.io/acme/dask-grid:1.4",
        env={"OCI__ENTRY_SCRIPT_KWARGS": "--folds 4", "SAMPLES": "2500"}),
    "dask_tls.yaml": Expect(
        "DASK", ["main", "worker_0"], "boosted_trees.py", image="phx.ocir.io/acme/dask-tls:2.0",
        env={"OCI__CERTIFICATE_OCID": "ocid1.certificate.oc1.phx.example",
             "OCI__CA_DOWNLOAD_LOCATION": "/code/ca.pem", "ROWS": "400000"},
        run_env={"OCI__START_ARGS": TLS}),
    "pytorch_docs.yaml": Expect(
        "PYTORCH", ["resnet-main", "resnet-worker_0", "resnet-worker_1"], "ddp_train.py",
        image="fra.ocir.io/acme/resnet-ddp:0.9",
        env={"OCI__ENTRY_SCRIPT_ARGS": "--epochs 12 --backend gloo", "NCCL_DEBUG": "WARN"}),
    "pytorch_samples_named.yaml": Expect(
        "PYTORCH", ["Sentiment-main", "Sentiment-worker_0", "Sentiment-worker_1", "Sentiment-worker_2"],
        "/code/sentiment.py", image=PLACEHOLDER,
        env={"OCI__ENTRY_SCRIPT_ARGS": "--data /home/datascience/reviews --timeout 10",
             "NCCL_ASYNC_ERROR_HANDLING": "1"},
        warnings=["spec.name: unknown field: ignored, line 6", IMAGE_WARNING.format(ini="{ini}", line=24)]),
    "tensorflow_multiworker.yaml": Expect(
        "TENSORFLOW", ["chief", "worker_0", "worker_1"], "/code/mnist.py",
        image="iad.ocir.io/acme/tf-mnist:3", env={"WORKER_PORT": "23456", "SYNC_ARTIFACTS": "0"}),
    "tensorflow_ps_duplicate.yaml": Expect(
        "TENSORFLOW", ["coordinator", "worker_0", "worker_1", "ps_0"], "/code/census.py", ps=1,
        image=PLACEHOLDER, env={"WORKSPACE": "artifacts", "WORKSPACE_PREFIX": "tf/census"},
        warnings=["spec.runtime.spec: duplicate key (first at line 48): the last one wins, line 49",
                  IMAGE_WARNING.format(ini="{ini}", line=23)]),
    "horovod_pytorch.yaml": Expect(
        "HOROVOD", ["scheduler", "worker_0", "worker_1", "worker_2"], "/code/hvd_train.py",
        image="iad.ocir.io/acme/hvd-torch:5",
        env={"HOROVOD_ARGS": "--verbose", "START_TIMEOUT": "900", "WORKSPACE_PREFIX": "horovod/torch"}),
    "horovod_tf.yaml": Expect(
        "HOROVOD", ["worker-main", "worker-0_0"], "/code/hvd_tf.py", image="iad.ocir.io/acme/hvd-tf:2",
        env={"OCI__ENTRY_SCRIPT_ARGS": "--data-file /code/data/digits.npz", "SYNC_ARTIFACTS": "0"}),
    "ray_gridsearch.yaml": Expect(
        "RAY", ["main", "worker_0", "worker_1", "worker_2", "worker_3"], "tune.py", image=None,
        env={"OCI__ENTRY_SCRIPT_KWARGS": "--trials 20", "TRIAL_ROWS": "800"}),
    "pytorch_git.yaml": Expect(
        "PYTORCH", ["main", "worker_0"], "examples/ddp.py", image="iad.ocir.io/acme/ddp-base:1",
        env={"OCI__RUNTIME_TYPE": "git", "OCI__RUNTIME_URI": "git@github.com:acme/ddp-examples.git",
             "OCI__RUNTIME_GIT_BRANCH": "release", "OCI__RUNTIME_GIT_COMMIT": "4f2c9e1",
             "OCI__RUNTIME_GIT_SECRET_ID": "ocid1.vaultsecret.oc1.iad.example"}),
}


def test_the_set_is_ten_specs_each_expected():
    assert sorted(EXPECT) == sorted(p.name for p in DOCS.glob("*.yaml"))
    assert len(EXPECT) == 10


def write_ini(folder: Path, registry: str = REGISTRY, tag: str = TAG) -> None:
    (folder / "config.ini").write_text(f"[main]\ntag = {tag}\nregistry = {registry}\n"
                                       "dockerfile = Dockerfile\nsource_folder = .\n")


def dry_run(spec: Path, cwd: Path, *more) -> tuple[dict, list[str]]:
    """The planned job and runs, and the warnings (exit 0 and no traceback asserted)."""
    r = cli("submit", "--dry-run", "-f", spec, *more, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    prefix = f"fsm-cluster submit: warning: {spec}: "
    warnings = [line.removeprefix(prefix) for line in r.stderr.splitlines() if line.startswith(prefix)]
    assert len(warnings) == len(r.stderr.splitlines()), r.stderr  # nothing else on stderr
    return yaml.safe_load(r.stdout), warnings


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_submit_dry_run_plans_the_docs_spec(name, tmp_path):
    want = EXPECT[name]
    if want.image is None:
        write_ini(tmp_path)
    plan, warnings = dry_run(DOCS / name, tmp_path)
    job, runs = plan["job"], plan["runs"]
    assert [r["name"] for r in runs] == want.names
    assert [r["mode"] for r in runs] == ["MAIN"] + ["WORKER"] * want.workers + ["PS"] * want.ps
    assert [r["envVars"]["RANK"] for r in runs] == [str(i) for i in range(len(want.names))]
    env = job["envVars"]
    assert env["OCI__CLUSTER_TYPE"] == want.kind
    assert env["OCI__WORKER_COUNT"] == str(want.workers)
    assert env["OCI__PS_COUNT"] == str(want.ps)
    assert env["OCI__ENTRY_SCRIPT"] == want.entry
    assert {k: env.get(k) for k in want.env} == want.env
    for run in runs:
        assert {k: run["envVars"].get(k) for k in want.run_env} == want.run_env
    assert job["image"] == (want.image or f"{REGISTRY}:{TAG}")
    ini = tmp_path / "config.ini"
    assert warnings == [w.format(ini=ini) for w in want.warnings]
