"""``python tests/faults/s3server.py PORT [SNAPSHOT.json]``: moto's S3 server (``moto.server.main``,
what ``moto_server`` runs) on 127.0.0.1:PORT, loaded with SNAPSHOT *before* it listens.

moto keeps objects in memory, so a plain restart comes back empty — not what an S3 outage looks
like. The fault tests snapshot the objects, ``kill -9`` the server, and start it again from the
snapshot: clients never see a half-restored server. Snapshot format: {bucket: {key: base64}}.
"""

from __future__ import annotations

import base64
import json
import sys


def main(argv: list[str]) -> None:
    port = argv[0]
    if len(argv) > 1:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        with open(argv[1]) as f:
            snapshot = json.load(f)
        for bucket, objects in snapshot.items():
            backend.create_bucket(bucket, "us-east-1")
            for key, data in objects.items():
                backend.put_object(bucket, key, base64.b64decode(data))
    from moto.server import main as serve

    serve(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main(sys.argv[1:])
