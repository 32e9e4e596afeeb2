"""A small ``kind: distributed`` spec for the engine tests: a kind, node counts, cluster env."""

from __future__ import annotations


def spec(kind: str, workers: int = 2, ps: int = 0, env: dict | None = None, run_on: str | None = None) -> str:
    env_yaml = "".join(f"\n          - name: {k}\n            value: \"{v}\"" for k, v in (env or {}).items())
    run_on_yaml = f"\n      runOn: {run_on}" if run_on else ""
    ps_yaml = f"\n      ps:\n        replicas: {ps}" if ps else ""
    return f"""kind: distributed
apiVersion: v1.0
spec:
  cluster:
    kind: {kind}
    apiVersion: v1.0
    spec:
      workDir: /tmp/wd{run_on_yaml}
      config:
        env:{env_yaml or ' []'}
      main:
        replicas: 1
      worker:
        replicas: {workers}{ps_yaml}
  runtime:
    kind: python
    apiVersion: v1.0
    spec:
      entryPoint: train.py
"""


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of ``text`` holding ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)
