"""ClusterRunner (oracle-ads' name): settings → provider → the node's life → exit code.

The life itself reads top to bottom in :func:`fsm_cluster.node.drive.drive`. A runner subclass
with its own ``run()`` in oracle-ads' shape drives the provider's hooks itself; the provider then
adopts that (:mod:`fsm_cluster.node.adoption`). A user's provider (not one of fsm_cluster's own)
finds in the node's ``os.environ`` what oracle-ads' runner and provider put there
(:func:`ads_environment`), for the children its own ``subprocess.run(cmd)`` starts.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from contextlib import contextmanager

from .errors import FsmClusterError
from .node.drive import drive, form, own_process
from .registry import builtin_provider

log = logging.getLogger(__name__)

__all__ = ["ClusterRunner", "drive", "form"]


def _takes(cls, keyword: str) -> bool:
    """Whether ``cls(...)`` accepts ``keyword`` (explicitly or through ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def ads_environment(provider, environ) -> None:
    """What oracle-ads puts into the node process's environment and a user's oracle-ads-style
    provider relies on, its own ``subprocess.run(cmd)`` children inheriting it: GLOO_SOCKET_IFNAME
    / NCCL_SOCKET_IFNAME naming the interface of the node's address (its ``find_self_ip``) and
    OCI__CODE_DIR (its ``fetch_code``); JOB_OCID / JOB_RUN_OCID are the runner's (below). A value
    the environment already has wins. fsm_cluster's own engines give their children these through
    ``child_env()`` instead: the node's environment stays theirs."""
    from .env import OCI__CODE_DIR

    for name, value in provider.socket_env().items():
        environ.setdefault(name, value)
    environ.setdefault(OCI__CODE_DIR, provider.settings.code_dir)


@contextmanager
def _built_for_good():
    """Python's cyclic garbage collector paused while a node's own process builds the node (its
    settings, the provider and their imports: pydantic's machinery and models, fsspec), then what
    was built frozen (``gc.freeze``: never walked by a collection again) and the collector on as
    before for the life. Every collection during the build walked the same long-lived objects
    again: ~20 ms of CPU per node, ~9 % of a trivial life's (issue 26 item 2). A collector the
    caller turned off stays off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class ClusterRunner:
    """Seed API: ``ClusterRunner(cluster_provider=None, cluster_key=None).run()``."""

    def __init__(self, cluster_provider=None, cluster_key=None, environ=None):
        self.environ = os.environ if environ is None else environ
        self.cluster_key = cluster_key or self.environ.get("OCI__CLUSTER_TYPE") or "COMMAND"
        # oracle-ads' ClusterRunner has these public attributes; code written for it may read them.
        self.mode = self.environ.get("OCI__MODE")
        self.ephemeral = self.environ.get("OCI__EPHEMERAL", "1")
        self.work_dir = self.environ.get("OCI__WORK_DIR")
        self._cluster = cluster_provider
        if cluster_provider is not None and not builtin_provider(type(cluster_provider)):
            ads_environment(cluster_provider, getattr(cluster_provider, "environ", self.environ))

    @property
    def cluster(self):
        if self._cluster is None:
            from .env import Settings
            from .registry import ClusterProviderFactory

            settings = Settings.from_env(self.environ)
            # oracle-ads' runner puts these defaults into the environment; its providers read them.
            self.environ.setdefault("JOB_OCID", settings.job_ocid)
            self.environ.setdefault("JOB_RUN_OCID", settings.job_run_ocid)
            cls = ClusterProviderFactory.get_provider_class(self.cluster_key)
            args = (settings.mode, settings.ephemeral, settings.life_span, settings.work_dir)
            if _takes(cls, "settings"):
                self._cluster = cls(*args, settings=settings, environ=self.environ)
            else:  # an oracle-ads subclass: __init__(self, mode, ephemeral, life_span, work_dir)
                self._cluster = cls(*args)
            log.info("cluster built: %r", self._cluster)
            if not builtin_provider(cls):
                ads_environment(self._cluster, getattr(self._cluster, "environ", self.environ))
            if type(self).run is not ClusterRunner.run:  # an oracle-ads-shaped run() drives the hooks
                self._prepare()
                own_process()
                self._cluster.adopt()
        return self._cluster

    def _prepare(self) -> None:
        """Logging (when the node is started by a user's run script, not the CLI) and the masking
        of secret values of the node's environment in every log line."""
        from .runtime.security import install_log_redaction

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        install_log_redaction(self.environ)
        # The node's thread may be interrupted anywhere with the cluster's ending (keeper, control
        # channel), also inside a log handler, which then swallows it (and is interrupted again):
        # no "--- Logging error ---" traceback for that.
        logging.raiseExceptions = False

    def execute(self, *, node_process: bool = False) -> int:
        """Run the node; return its exit code (SettingsError etc. propagate to the CLI). Secret
        values of the node's environment are masked in every log line from here on.
        ``node_process``: the process exists for this node alone (``fsm-cluster run``), so what the
        node builds before its life is kept for good (:func:`_built_for_good`)."""
        self._prepare()
        if node_process:
            with _built_for_good():
                provider = self.cluster
        else:
            provider = self.cluster
        return drive(provider)

    def run(self):
        """Seed behaviour: run the node and exit the process with its code."""
        own_process()
        try:
            code = self.execute()
        except FsmClusterError as e:
            print(f"fsm-cluster run: error: {e}", file=sys.stderr, flush=True)
            code = e.exit_code
        finally:
            own_process(False)
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    ClusterRunner().run()
