"""Put on an entry script's PYTHONPATH by its node (see :func:`fsm_cluster.runtime.stacks.arm_faulthandler`)
where py-spy may be unable to read the code's stacks: every Python process of the entry script
registers :mod:`faulthandler` on SIGUSR2, writing all threads' Python stacks to
``$FSM_CLUSTER_FAULTHANDLER_DIR/<pid>.txt``, and marks itself ready (``<pid>.ready``: the node
signals only processes that did). Then this folder leaves ``sys.path`` and a ``sitecustomize``
of the environment, if any, is imported as it would have been."""

import os
import sys


def _arm() -> None:
    folder = os.environ.get("FSM_CLUSTER_FAULTHANDLER_DIR")
    if not folder or not os.path.isdir(folder):
        return
    import faulthandler
    import signal

    pid = os.getpid()
    out = open(os.path.join(folder, f"{pid}.txt"), "w")
    faulthandler.register(signal.SIGUSR2, file=out, all_threads=True, chain=False)
    globals()["_out"] = out  # kept open for the process's life
    open(os.path.join(folder, f"{pid}.ready"), "w").close()


try:
    _arm()
except Exception:  # noqa: BLE001 - diagnostics never stop the code from starting
    pass

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
# (this module is imported as "sitecustomize" by site; a process may also find it under another
# name, or run it twice: nothing to remove then)
if sys.modules.get("sitecustomize") is sys.modules.get(__name__):
    sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401 - the environment's own, if it has one
except ImportError:
    pass
