"""Cluster specs (the ``kind: distributed`` YAML of oracle-ads' distributed training) → one job
definition + one run per node. One concern per module, in the order a spec goes through them:

* :mod:`.reading` — YAML text → plain data with the line of every YAML path, size bounds,
  ``${VAR}`` placeholders, warnings;
* :mod:`.fields` — the value types of spec fields (how YAML scalars become field values);
* :mod:`.models` — the pydantic models, the JSON schema, validation errors naming path and line;
* :mod:`.images` — the cluster image ``submit`` sends (``--image``, oracle-ads' ``"@image"``);
* :mod:`.builders` — the framework spec builders' base class and ``update_env_vars``;
* :mod:`.kinds` — which builder a cluster kind gets (a name over :mod:`fsm_cluster.registry`);
* :mod:`.loading` — ``load_spec``: all of the above in order, strict or lenient, semantic checks;
* :mod:`.converter` — a spec → the job definition, the runs and each node's environment.

Nothing is imported here: the engines import :mod:`.builders` without the rest.
:mod:`fsm_cluster.jobspec` re-exports the public names (oracle-ads' import path).
"""
