"""The user's entry script as a command: where it is, how it runs, with what in front of it.

``OCI__ENTRY_SCRIPT`` is looked up in OCI__CODE_DIR, then the working directory; a ``.py`` file
runs with the node's own Python, anything else by its shebang (it must be executable). The
command is ``PROFILE_CMD`` (when PROFILE is on) + the engine's launcher around the script (an
engine's ``wrap_entry``: ``torchrun …``, ``horovodrun …``) + the script and its arguments
(``OCI__ENTRY_SCRIPT_ARGS`` then ``OCI__ENTRY_SCRIPT_KWARGS``).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable

from ..env import Settings
from ..errors import NodeFailure


def script_path(s: Settings) -> str | None:
    """The entry script's path, None without one; a NodeFailure naming OCI__ENTRY_SCRIPT when it
    is missing or cannot be run."""
    if not s.entry_script:
        return None
    script = s.entry_script
    if not os.path.isabs(script):
        in_code = os.path.join(s.code_dir, script)
        script = in_code if os.path.exists(in_code) else os.path.abspath(script)
    if not os.path.isfile(script):
        raise NodeFailure(f"OCI__ENTRY_SCRIPT: no such file: {s.entry_script} "
                          f"(looked in OCI__CODE_DIR={s.code_dir} and {os.getcwd()})")
    if not script.endswith(".py") and not os.access(script, os.X_OK):
        raise NodeFailure(f"OCI__ENTRY_SCRIPT: {script} is not executable (chmod +x, or use a .py file)")
    return script


def profile_prefix(s: Settings) -> list[str]:
    if not s.profile:
        return []
    from ..runtime.profile import profile_cmd

    return profile_cmd(s)


def command(s: Settings, wrap: Callable[[list[str]], list[str]], profile: list[str]) -> list[str] | None:
    """``profile`` + ``wrap(script command + arguments)``; None without an entry script."""
    script = script_path(s)
    if script is None:
        return None
    args = shlex.split(s.entry_script_args) + shlex.split(s.entry_script_kwargs)
    cmd = [sys.executable, script] if script.endswith(".py") else [script]
    return profile + wrap(cmd + args)


def environment(s: Settings, base: dict[str, str]) -> dict[str, str]:
    """The entry script's environment: ``base`` plus OCI__RUNTIME_PYTHON_PATH entries."""
    env = dict(base)
    if s.runtime_python_path:
        from ..runtime.code import entry_environment

        env = entry_environment(s, env)
    return env
