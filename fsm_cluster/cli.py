"""``fsm-cluster`` (also ``python -m fsm_cluster``).

Each sub-command lives in ``fsm_cluster/commands/<name>.py`` with ``register(subparsers)`` which
adds its parser and sets ``handler`` (``handler(args) -> int``). Only the module of the command
being run is imported, so ``fsm-cluster run`` (the node bootstrap) stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from contextlib import contextmanager

from .errors import FsmClusterError

COMMANDS = {
    "run": "Run one node of a cluster (the bootstrap inside every container).",
    "local": "Run a whole cluster on this machine as subprocesses.",
    "status": "Show every node of a cluster, read from its work dir.",
    "timeline": "Draw a cluster's life: one lane per node over time (svg, png or html).",
    "dump": "Ask every live node for the stacks of its running code (py-spy), without stopping it.",
    "stop": "Write the stop marker: the cluster tears down.",
    "diagram": "Render the node lifecycle state machine.",
    "submit": "Create an OCI Data Science job and one run per node from a cluster spec.",
    "schema": "Print the JSON schema of cluster specs.",
    "init": "Write a starter cluster spec, entry script and Dockerfile.",
}


@contextmanager
def os_errors_name(what: str):
    """An OSError inside (read-only, a file where a folder should be, no such parent) becomes one
    FsmClusterError naming ``what`` (the option and its value) and the path, not a traceback."""
    try:
        yield
    except OSError as e:
        path = f" {e.filename}" if e.filename else ""
        hint = (" (a file is in the way: a folder is needed)"
                if isinstance(e, (FileExistsError, NotADirectoryError)) else "")
        raise FsmClusterError(f"{what}: cannot write{path}: {e.strerror or e}{hint}") from None


def _load(name: str):
    try:
        return importlib.import_module(f"fsm_cluster.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"fsm_cluster.commands.{name}":
            return None
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fsm-cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fsm-cluster {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        module = _load(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except FsmClusterError as e:
        print(f"fsm-cluster {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
