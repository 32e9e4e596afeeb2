"""Every example runs with the one command written in its README."""

from __future__ import annotations

import re

import pytest

from .clihelp import REPO, cli

pytestmark = pytest.mark.integration


def readme_command(example: str) -> list[str]:
    text = (REPO / "examples" / example / "README.md").read_text()
    m = re.search(r"```bash\n(fsm-cluster local [^\n]+)\n```", text)
    assert m, f"examples/{example}/README.md has no `fsm-cluster local` command block"
    return m.group(1).split()[1:]


def test_command_example(tmp_path):
    args = readme_command("command")
    assert args == ["local", "-f", "examples/command/cluster.yaml"]
    r = cli(*args, "--no-progress", "--work-dir", tmp_path, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank, name in enumerate(["main", "worker-1", "worker-2"]):
        assert f"[{name}]".ljust(11) + f"node rank {rank} of 3: I am 127.0.0.1, MAIN is at 127.0.0.1" in r.stdout
        assert f"[{name}]".ljust(11) + "greeting: hello from examples/command" in r.stdout
    assert "cluster complete" in r.stdout
    assert "image and infrastructure are ignored locally" in r.stdout
