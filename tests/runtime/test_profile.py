"""Profiling: PROFILE=1 really wraps the entry command in PROFILE_CMD, split like a shell."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fsm_cluster.errors import SettingsError
from fsm_cluster.runtime.profile import profile_cmd, wrap


def test_off_by_default(make_settings):
    assert profile_cmd(make_settings()) == []
    assert profile_cmd(make_settings(PROFILE=0, PROFILE_CMD="nsys profile")) == []
    assert wrap(make_settings(), ["python", "x.py"]) == ["python", "x.py"]


def test_split_like_a_shell(make_settings):
    s = make_settings(PROFILE=1, PROFILE_CMD="nsys profile -o '/opt/ml/my profile' --stats=true")
    assert profile_cmd(s) == ["nsys", "profile", "-o", "/opt/ml/my profile", "--stats=true"]


def test_wrapper_really_runs(make_settings, tmp_path):
    """A shell wrapper records that it ran and its arguments, then execs the entry command."""
    marker = tmp_path / "profile.out"
    s = make_settings(PROFILE="true", PROFILE_CMD=(
        "sh -c 'printf \"%s|\" \"$@\" > \"$0\"; exec \"$@\"' " + str(marker)))
    entry = [sys.executable, "-c", "import sys; print('entry ran with', sys.argv[1:])", "a b", "c"]
    out = subprocess.run(wrap(s, entry), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "entry ran with ['a b', 'c']"
    assert marker.read_text() == "|".join(entry) + "|"


def test_wrapper_exit_code_is_the_entry_exit_code(make_settings, tmp_path):
    s = make_settings(PROFILE=1, PROFILE_CMD="env PROFILED=1")
    p = subprocess.run(wrap(s, [sys.executable, "-c",
                                "import os, sys; sys.exit(7 if os.environ['PROFILED'] == '1' else 1)"]))
    assert p.returncode == 7


def test_empty_or_malformed_profile_cmd_is_one_clear_error(make_settings):
    with pytest.raises(SettingsError, match="PROFILE=1 but PROFILE_CMD is empty"):
        profile_cmd(make_settings(PROFILE=1))
    with pytest.raises(SettingsError, match="PROFILE=1 but PROFILE_CMD is empty"):
        profile_cmd(make_settings(PROFILE=1, PROFILE_CMD="   "))
    with pytest.raises(SettingsError, match="PROFILE_CMD: cannot split .*No closing quotation"):
        profile_cmd(make_settings(PROFILE=1, PROFILE_CMD="nsys profile -o 'unterminated"))
