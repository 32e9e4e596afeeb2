"""``fsm-cluster diagram``: render the node lifecycle from fsm_cluster.node.lifecycle."""

from __future__ import annotations

import sys

DEFAULT_DIR = "state_diagrams"


def register(sub) -> None:
    p = sub.add_parser(
        "diagram", help="render the node lifecycle state machine",
        description="Render the node lifecycle from the transition table the code runs. Without "
                    "--out/--check: print one mode's diagram (mermaid by default) to stdout or --output.")
    p.add_argument("--mode", default="MAIN", type=str.upper, choices=["MAIN", "WORKER", "PS"],
                   help="which node's machine to print (default MAIN)")
    p.add_argument("--format", default="mermaid", choices=["mermaid", "dot", "svg", "png"],
                   help="mermaid (no binary needed), dot source, or svg/png through graphviz `dot`")
    p.add_argument("-o", "--output", help="write the single diagram to this file instead of stdout")
    p.add_argument("--out", metavar="DIR", nargs="?", const=DEFAULT_DIR,
                   help=f"regenerate the committed set (mermaid + SVG per mode, README) in DIR "
                        f"(default {DEFAULT_DIR}/)")
    p.add_argument("--check", action="store_true",
                   help=f"exit non-zero listing what in DIR (--out, default {DEFAULT_DIR}/) differs "
                        "from the code")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import os

    from ..cli import os_errors_name
    from ..errors import FsmClusterError
    from ..observe import diagrams

    if args.check:
        directory = args.out or DEFAULT_DIR
        if not os.path.isdir(directory):
            raise FsmClusterError(f"{directory}/ does not exist (run from the repository root, or pass "
                                  "--out DIR)")
        problems = diagrams.check_set(directory)
        if problems:
            print(f"state diagrams in {directory}/ are out of date:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            print(f"regenerate with: fsm-cluster diagram --out {directory}", file=sys.stderr)
            return 1
        print(f"state diagrams in {directory}/ match fsm_cluster/node/lifecycle.py")
        return 0

    if args.out:
        with os_errors_name(f"--out {args.out}"):
            written, missing = diagrams.write_set(args.out)
        for path in written:
            print(f"wrote {path}")
        if missing:
            print(f"fsm-cluster diagram: error: {missing}", file=sys.stderr)
            return diagrams.GraphvizMissing.exit_code
        return 0

    if args.format == "mermaid":
        data = diagrams.mermaid(args.mode).encode()
    elif args.format == "dot":
        data = diagrams.dot_source(args.mode).encode()
    else:
        data = diagrams.render(diagrams.dot_source(args.mode), args.format)
    write_output(data, args.output, binary=args.format == "png")
    return 0


def write_output(data: bytes, output: str | None, *, binary: bool) -> None:
    from ..cli import os_errors_name
    from ..errors import FsmClusterError

    if output:
        with os_errors_name(f"-o {output}"), open(output, "wb") as f:
            f.write(data)
        print(f"wrote {output}", file=sys.stderr)
    elif binary and sys.stdout.isatty():
        raise FsmClusterError("refusing to write PNG to a terminal; use -o FILE")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
