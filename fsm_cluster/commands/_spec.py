"""How ``submit`` and ``local -f`` read a cluster spec: leniently, as oracle-ads does (an unknown
key is ignored, a repeated key takes its last value, each with a warning on stderr naming the file,
the YAML path and the line), or, with ``--strict``, refusing both."""

from __future__ import annotations

import sys
from typing import Callable

STRICT_HELP = ("refuse unknown keys and keys repeated in a mapping (default: ignore them with a "
               "warning naming the line, as oracle-ads reads specs)")


def add_strict_option(parser) -> None:
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)


def warning_printer(command: str) -> Callable[[str], None]:
    """Prints each warning about the spec on stderr, one line per warning."""

    def warn(message: str) -> None:
        print(f"fsm-cluster {command}: warning: {message}", file=sys.stderr, flush=True)

    return warn


def reading(args, command: str) -> dict:
    """The ``strict`` / ``warn`` keywords of ``load_spec`` for the parsed ``args``."""
    return {"strict": args.strict, "warn": warning_printer(command)}
