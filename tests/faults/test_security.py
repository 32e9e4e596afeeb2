"""Secrets in a node's environment never reach its log lines or the work dir; hostile shared
files are refused (see test_faults for LD_PRELOAD through MAIN_config.json)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from fsm_cluster.runtime.security import RedactingFilter, install_log_redaction, is_secret_name, redact, secret_values

PEM_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx7\nabc/def+ghi==\n-----END RSA PRIVATE KEY-----"


def test_secret_names_and_values():
    env = {"HF_TOKEN": "hf_abcdefgh", "OCI__RUNTIME_GIT_SECRET_ID": "ocid1.vaultsecret.oc1..aaa",
           "DB_PASSWORD": "hunter2!!", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "API_KEY": "1",
           "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": "/etc/certs/key.pem", "PATH": "/usr/bin"}
    assert is_secret_name("OCI_PRIVATE_KEY_PASSPHRASE") and not is_secret_name("OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION")
    # Values shorter than 6 characters are not masked ("1", "true"); paths to keys are not secrets.
    assert set(secret_values(env)) == {"hf_abcdefgh", "ocid1.vaultsecret.oc1..aaa", "hunter2!!", "wJalrXUtnFEMI"}
    text = f"token hf_abcdefgh pw hunter2!! url https://bob:s3cretpw@git.example.com/r.git key {PEM_KEY} end"
    out = redact(text, secret_values(env))
    for s in ("hf_abcdefgh", "hunter2!!", "s3cretpw", "MIIEowIBAAKCAQEAx7"):
        assert s not in out
    assert "https://bob:***@git.example.com/r.git" in out and "[PEM block redacted]" in out and out.endswith(" end")
    assert "BEGIN" not in redact("cut off: -----BEGIN PRIVATE KEY-----\nMIIEv", [])


def test_filter_masks_messages_args_and_tracebacks(caplog):
    logger = logging.getLogger("fsm_cluster.test_security")
    handler = logging.StreamHandler(stream=open(os.devnull, "w"))
    logger.addHandler(handler)
    records = []
    handler.emit = records.append  # what the handler would write, after its filters
    try:
        install_log_redaction({"MY_API_TOKEN": "tok-1234567"}, logger=logger)
        logger.error("cloning with %s", "tok-1234567")
        try:
            raise RuntimeError("auth failed for tok-1234567")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == "cloning with ***"
    assert "tok-1234567" not in records[1].exc_text and "auth failed for ***" in records[1].exc_text
    assert any(isinstance(f, RedactingFilter) for f in handler.filters)


@pytest.mark.integration
def test_secrets_stay_out_of_node_logs_and_the_work_dir(clusters):
    secret = "hf_SuperSecretValue42"
    c = clusters("file", workers=1, run_on="main",
                 env={"HF_TOKEN": secret, "OCI__ENTRY_SCRIPT_ARGS": f"--hf-token {secret}",
                      "OCI_KEY_PASSPHRASE": "pass-phrase-99", "FAULT_FAIL": "0:3"})
    c.start()
    codes = c.wait()
    assert all(code != 0 for code in codes), c.dump()  # MAIN's entry script exits 3
    logs = "\n".join(n.log.read_text() for n in c.nodes)
    assert "starting entry script" in logs and "--hf-token ***" in logs, logs
    assert secret not in logs and "pass-phrase-99" not in logs
    root = Path(c.workdir.root)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, "the work dir has the cluster's files"
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data and b"pass-phrase-99" not in data, p
        # Local work-dir files are for the owner only.
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))
    assert stat.S_IMODE(root.stat().st_mode) & 0o077 == 0
