"""A local cluster whose work dir is an object store (a loopback moto S3 server)."""

from __future__ import annotations

import json

import pytest

from .clihelp import cli, clean_env

pytestmark = [pytest.mark.integration, pytest.mark.s3]


@pytest.fixture(scope="module")
def s3_env():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="clusters")
    try:
        yield clean_env(AWS_ENDPOINT_URL=url, AWS_ENDPOINT_URL_S3=url, **creds), client
    finally:
        server.stop()


def test_local_cluster_on_s3_uploads_logs_and_status_reads_it(s3_env, tmp_path):
    env, client = s3_env
    r = cli("local", "--no-progress", "--workers", "1", "--run-on", "all", "--work-dir", "s3://clusters/wd",
            "--cluster-id", "c1", "--", "sh", "-c", 'echo "hi from $RANK"', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "logs uploaded to s3://clusters/wd/c1/logs/" in r.stdout
    log = client.get_object(Bucket="clusters", Key="wd/c1/logs/worker-1.log")["Body"].read().decode()
    assert "hi from 1" in log
    stop = json.loads(client.get_object(Bucket="clusters", Key="wd/c1/stop")["Body"].read())
    assert stop["outcome"] == "complete"

    s = cli("status", "s3://clusters/wd", "--json", env=env)
    assert s.returncode == 0, s.stderr
    doc = json.loads(s.stdout)
    assert doc["work_dir"] == "s3://clusters/wd/c1"
    assert [(n["node"], n["state"]) for n in doc["nodes"]] == [("MAIN", "stopped"), ("WORKER_worker-1", "stopped")]

    again = cli("stop", "s3://clusters/wd/c1", env=env)
    assert again.returncode == 0 and "already there" in again.stdout
