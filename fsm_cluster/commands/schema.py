"""``fsm-cluster schema``: the JSON schema of cluster specs (for editors)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON schema of cluster specs",
                       description="Print the JSON schema of cluster specs (kind: distributed). "
                                   "Editors validate specs with it, e.g. with the YAML language "
                                   "server: `# yaml-language-server: $schema=fsm-cluster.schema.json`.")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import json

    from ..errors import FsmClusterError
    from ..spec.models import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if not args.output:
        print(text, end="")
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise FsmClusterError(f"--output {args.output}: {e.strerror or e}") from None
    return 0
