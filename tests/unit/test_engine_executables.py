"""Engine launchers come from the node's own Python environment, activated (on PATH) or not.

A venv used as ``.venv/bin/fsm-cluster`` or ``.venv/bin/python -m fsm_cluster`` is not on PATH:
the launcher must still be found next to the interpreter, else started as ``python -m <module>``;
PATH is the last resort, and a missing engine names the extra to install.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from types import SimpleNamespace

import pytest

from fsm_cluster.errors import NodeFailure
from fsm_cluster.frameworks import _common
from fsm_cluster.frameworks._common import engine_command
from fsm_cluster.frameworks.dask import dask_cli
from fsm_cluster.frameworks.pytorch import torchrun_command
from fsm_cluster.frameworks.ray import RayProvider

# (launcher, extra, module of `python -m`), as the providers ask for them
ENGINES = [("dask", "dask", "dask"), ("torchrun", "pytorch", "torch.distributed.run"),
           ("ray", "ray", "ray.scripts.scripts"), ("horovodrun", "horovod", "horovod.runner.launch")]


def executable(path, text: str = "#!/bin/sh\nexit 0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """This process looks like it runs from an unactivated venv at tmp_path/venv (its bin not on
    PATH); PATH holds only tmp_path/path. Returns (venv bin, PATH dir)."""
    bin_dir, path_dir = tmp_path / "venv" / "bin", tmp_path / "path"
    bin_dir.mkdir(parents=True)
    path_dir.mkdir()
    real_get_path = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path",
                        lambda name, *a, **k: str(bin_dir) if name == "scripts" else real_get_path(name, *a, **k))
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(path_dir))
    return bin_dir, path_dir


@pytest.mark.parametrize("program,extra,module", ENGINES)
def test_launcher_next_to_the_interpreter_is_used_without_path(fake_env, program, extra, module):
    bin_dir, path_dir = fake_env
    mine = executable(bin_dir / program)
    executable(path_dir / program)  # another environment's launcher on PATH loses
    assert engine_command(program, extra, module) == [str(mine)]


def test_the_directory_of_sys_executable_counts_too(fake_env, tmp_path, monkeypatch):
    """Debian's system Python: scripts dir /usr/local/bin, interpreter in /usr/bin."""
    other = tmp_path / "usr" / "bin"
    monkeypatch.setattr(sys, "executable", str(other / "python3"))
    launcher = executable(other / "dask")
    assert engine_command("dask", "dask", "dask") == [str(launcher)]


def test_providers_build_their_commands_from_the_interpreters_launchers(fake_env):
    bin_dir, _ = fake_env
    for program, *_ in ENGINES:
        executable(bin_dir / program)
    assert dask_cli() == [str(bin_dir / "dask")]
    cmd = torchrun_command(nnodes=2, node_rank=0, nproc=1, master_addr="127.0.0.1", master_port=29400,
                           script=[sys.executable, "/code/train.py"])
    assert cmd[0] == str(bin_dir / "torchrun") and cmd[-1] == "/code/train.py"
    # Ray's `ray start` runs in the node's own interpreter (its command line, behind the node's waits)
    ray = RayProvider._ray(SimpleNamespace(ip="127.0.0.1"), "--head")
    assert ray[:5] == [sys.executable, "-m", "fsm_cluster.frameworks._ray_start", "--", "start"]
    assert ray[5] == "--head"


def test_without_a_launcher_script_the_module_runs_with_this_interpreter(fake_env, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fsm_fake_engine"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('looking the launcher up must not import it')\n")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "run.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _, path_dir = fake_env
    executable(path_dir / "fakerun")  # PATH comes after the module
    assert engine_command("fakerun", "fake", "fsm_fake_engine.cli.run") == \
        [sys.executable, "-m", "fsm_fake_engine.cli.run"]
    assert "fsm_fake_engine" not in sys.modules
    # a module that is not there (the package is, the submodule not) falls through to PATH
    assert engine_command("fakerun", "fake", "fsm_fake_engine.cli.nope") == [str(path_dir / "fakerun")]


@pytest.mark.parametrize("program,extra,module", ENGINES)
def test_a_missing_engine_names_the_extra_to_install(fake_env, tmp_path, monkeypatch, program, extra, module):
    monkeypatch.setattr(sys, "path", [str(tmp_path / "empty")])  # no engine module importable
    with pytest.raises(NodeFailure, match=rf"{program} not found .* pip install 'fsm_cluster\[{extra}\]'"):
        engine_command(program, extra, module)


@pytest.mark.parametrize("program,extra,module", ENGINES[:3])
def test_installed_engines_resolve_from_this_environment_with_a_bare_path(program, extra, module, monkeypatch):
    """The real launchers of this environment (.venv), found and started with PATH=/usr/bin:/bin."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{program} not installed in this environment: pip install 'fsm_cluster[{extra}]'")
    minimal = "/usr/bin:/bin"
    monkeypatch.setenv("PATH", minimal)
    cmd = engine_command(program, extra, module)
    assert cmd[0] in {os.path.join(d, program) for d in _common.scripts_dirs()} or \
        cmd[:3] == [sys.executable, "-m", module], cmd
    done = subprocess.run(cmd + ["--help"], env={**os.environ, "PATH": minimal}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower(), done.stdout[-2000:]
