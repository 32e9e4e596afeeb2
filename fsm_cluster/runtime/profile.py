"""Profiling: PROFILE=1 wraps the entry command in PROFILE_CMD, split the way a POSIX shell would.

Example: ``PROFILE_CMD="nsys profile -o /opt/ml/profile"`` turns ``python train.py`` into
``nsys profile -o /opt/ml/profile python train.py``.
"""

from __future__ import annotations

import logging
import shlex
from typing import Sequence

from ..env import PROFILE, PROFILE_CMD
from ..errors import SettingsError

log = logging.getLogger(__name__)


def profile_cmd(settings) -> list[str]:
    """The profiler prefix for the entry command: ``[]`` unless PROFILE=1."""
    if not settings.profile:
        return []
    raw = (settings.profile_cmd or "").strip()
    if not raw:
        raise SettingsError(f"{PROFILE}=1 but {PROFILE_CMD} is empty: set it to the profiler "
                            "command, e.g. 'nsys profile -o /opt/ml/profile' or "
                            "'py-spy record -o /opt/ml/profile.svg --'")
    try:
        cmd = shlex.split(raw)
    except ValueError as e:
        raise SettingsError(f"{PROFILE_CMD}: cannot split {raw!r} like a shell would ({e})") from None
    log.info("profiler on: %s", shlex.join(cmd))
    return cmd


def wrap(settings, command: Sequence[str]) -> list[str]:
    """``command`` prefixed by the profiler when PROFILE=1."""
    return [*profile_cmd(settings), *command]
