"""Issue 24, M3 (argv): the values of command-line arguments whose names look secret (the
environment's rule, security.SECRET_NAME) are masked in log lines and stacks files."""

from __future__ import annotations

import logging

import pytest

from fsm_cluster.runtime.security import MASK, RedactingFilter, redact, redact_argv


@pytest.mark.parametrize("text, shown", [
    ("python t.py --api-key=SUPERSECRET-ARGV --epochs 3", "python t.py --api-key=*** --epochs 3"),
    ("python t.py --token TOKEN-VALUE --verbose", "python t.py --token *** --verbose"),
    ("python t.py password=PW-VALUE", "python t.py password=***"),
    ("run --db.password 'two words' next", "run --db.password *** next"),
    ("env AWS_SECRET_ACCESS_KEY=abcdef123 x", "env AWS_SECRET_ACCESS_KEY=*** x"),
    # not secrets: names that point at one, options without a value, other names
    ("python t.py --key-file /etc/k --token --verbose", "python t.py --key-file /etc/k --token --verbose"),
    ("transition node=MAIN init -> configuring reason=-", "transition node=MAIN init -> configuring reason=-"),
    ("python t.py --epochs=3 --lr 0.1", "python t.py --epochs=3 --lr 0.1"),
])
def test_secret_arguments_in_a_text(text, shown):
    assert redact(text) == shown


def test_secret_arguments_in_an_argv():
    argv = ["python", "t.py", "--api-key=S1", "--token", "T2", "password=P3", "--epochs", "3",
            "--key-file", "/k", "--auth-token", "--x", "-p", "v"]
    assert redact_argv(argv) == ["python", "t.py", f"--api-key={MASK}", "--token", MASK, f"password={MASK}",
                                 "--epochs", "3", "--key-file", "/k", "--auth-token", "--x", "-p", "v"]


def test_the_log_filter_masks_a_logged_command_line():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "starting entry script: %s", ("t.py --token SECRET-T",),
                               None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "starting entry script: t.py --token ***"
