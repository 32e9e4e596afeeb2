"""Secrets stay out of logs: a ``logging.Filter`` that masks secret values before any handler
formats a record.

What counts as a secret:
* the value of every environment variable whose name looks secret (``SECRET_NAME``: KEY, SECRET,
  TOKEN, PASSWORD, PASSPHRASE, CREDENTIAL, PRIVATE, AUTH, SESSION, SIGNATURE — but not names that
  only point at one, like ``*_LOCATION``, ``*_PATH``, ``*_FILE``, ``*_OCID``), when it is at least
  ``MIN_SECRET`` characters long (``1``/``true`` are not secrets, and masking them would garble
  every line);
* PEM blocks (``-----BEGIN … PRIVATE KEY-----`` … ``-----END …-----``, also when cut off);
* the password of a URL (``https://user:password@host``);
* the value of a command-line argument whose name looks secret (the same ``SECRET_NAME`` rule, on
  the name without its dashes, ``-`` read as ``_``): ``--api-key=X``, ``--token X``,
  ``password=X`` (a command line as the node logs it, or in a stacks file).

``install_log_redaction(environ)`` adds the filter to every handler of the root logger (the node
bootstrap calls it once the handlers exist); ``redact(text)`` masks one string,
``redact_argv(argv)`` one command line given as a list.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, Mapping

MASK = "***"
MIN_SECRET = 6
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|AUTH|SESSION|SIGNATURE)",
                         re.IGNORECASE)
NOT_SECRET_NAME = re.compile(r"(_LOCATION|_PATH|_FILE|_DIR|_OCID|_TYPE|_PROFILE|_REGION|_URL|_URI)$", re.IGNORECASE)
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
# A command line's arguments in a text: ``--name=value`` / ``--name value`` (a value that is not
# another option), and ``name=value``; a value may be quoted (shlex.join).
_VALUE = r"""(?P<value>'[^']*'|"[^"]*"|[^\s'"]+)"""
ARG_OPTION = re.compile(r"(?<![\w-])(?P<name>--?[A-Za-z][\w.-]*)(?:=|\s+(?!-))" + _VALUE)
ARG_ASSIGN = re.compile(r"(?<![\w.-])(?P<name>[A-Za-z_][\w.-]*)=" + _VALUE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


def is_secret_argument(name: str) -> bool:
    """``--api-key`` / ``-p`` / ``db.password``: whether an argument of that name carries a secret."""
    return is_secret_name(name.lstrip("-").replace("-", "_").replace(".", "_"))


def _mask_argument(m: re.Match) -> str:
    if not is_secret_argument(m["name"]):
        return m[0]
    return m[0][: m.start("value") - m.start()] + MASK


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret-looking arguments masked: ``--api-key=X``,
    ``--token X`` (the next item), ``password=X``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and is_secret_argument(argv[i - 1]) and argv[i - 1].startswith("-") and "=" not in argv[i - 1] \
                and not arg.startswith("-"):
            out.append(MASK)
            continue
        name, eq, value = arg.partition("=")
        out.append(f"{name}={MASK}" if eq and value and is_secret_argument(name) else arg)
    return out


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking variables, longest first (so a secret containing another is masked
    whole)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and isinstance(v, str) and len(v) >= MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    if not text:
        return text
    text = PEM.sub("[PEM block redacted]", text)
    text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = ARG_ASSIGN.sub(_mask_argument, ARG_OPTION.sub(_mask_argument, text))
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback (it never drops a record)."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the formatter's problem
            return True
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def install_log_redaction(environ: Mapping[str, str] | None = None,
                          logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter (secrets read from ``environ`` now) to every handler of ``logger``
    (the root logger by default); handlers that already have one get theirs refreshed."""
    logger = logger or logging.getLogger()
    flt = RedactingFilter(secret_values(environ))
    for h in logger.handlers:
        for old in [f for f in h.filters if isinstance(f, RedactingFilter)]:
            h.removeFilter(old)
        h.addFilter(flt)
    return flt
