"""The package's shape holds: imports run only down the layers (docs/CORE.md), no module over 500
lines, ClusterProvider's module under 400, and every module says what it holds."""

from __future__ import annotations

import ast
import os

import fsm_cluster

ROOT = os.path.dirname(fsm_cluster.__file__)
# the layers of docs/CORE.md, lowest first: a module may import its own layer and those below
LAYERS = [
    {"errors", "validation", "clock", "registry"},
    {"wire"},
    {"env"},
    {"runtime"},
    {"node"},
    {"provider", "runner"},
    {"spec"},
    {"frameworks", "observe"},
    {"jobspec", "launch"},
    {"commands", "cli", "testing", "__init__", "__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules():
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                yield path, os.path.relpath(path, ROOT)[:-3].split(os.sep)


def _imported(tree, package: list[str]):
    """``(line, top-level part of fsm_cluster)`` of every import of the package in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                name = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            else:
                name = (node.module or "").split(".")
            if name[:1] != ["fsm_cluster"]:
                continue
            if len(name) > 1:
                yield node.lineno, name[1]
            else:
                yield from ((node.lineno, a.name) for a in node.names if a.name in LEVEL)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "fsm_cluster" and len(parts) > 1:
                    yield node.lineno, parts[1]


def test_imports_only_run_down_the_layers():
    upward = []
    for path, rel in _modules():
        top = rel[0]
        assert top in LEVEL, f"{'/'.join(rel)}.py: not in any layer of docs/CORE.md"
        package = ["fsm_cluster"] + rel[:-1]
        for line, target in _imported(ast.parse(open(path).read()), package):
            if target != top and LEVEL.get(target, -1) > LEVEL[top]:
                upward.append(f"{'/'.join(rel)}.py:{line} ({top}) imports {target}")
    assert upward == []


def test_module_sizes():
    sizes = {"/".join(rel): sum(1 for _ in open(path)) for path, rel in _modules()}
    assert {m: n for m, n in sizes.items() if n > 500} == {}
    assert sizes["provider"] < 400


def test_every_module_opens_with_a_docstring():
    missing = [("/".join(rel)) for path, rel in _modules()
               if not ast.get_docstring(ast.parse(open(path).read())) and rel[-1] != "__main__"]
    assert missing == []
