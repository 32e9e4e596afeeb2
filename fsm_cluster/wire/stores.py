"""Which storage a work-dir URI names, how it is opened, and which of its failures are worth a retry.

* A bare path or a ``file://`` / ``local://`` URL is the local disk: the node reads, writes and
  lists it through :mod:`.localdisk` (no link followed) and never imports fsspec (with the asyncio
  it loads, ~30 ms of every node's start). Any other scheme is opened with fsspec's
  ``url_to_fs`` and the options below.
* A URI that names no bucket, or nothing at all, is a StorageError naming it (:func:`split_uri`).
* :func:`is_transient` tells network trouble, 5xx and throttling (retried inside ``WorkDir``'s one
  budget) from missing files and denials (never retried), by the exception's fields.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..errors import StorageError

_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
              NotADirectoryError, ValueError, TypeError, KeyError, NotImplementedError)
_TRANSIENT_ERRNO = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                    errno.ENETUNREACH, errno.EAGAIN, errno.EBUSY, errno.EIO, errno.EPIPE,
                    errno.ECONNABORTED}

# Retries belong to ``WorkDir._call`` (one budget, one backoff, logged): the storage library's own
# retry loops would hide an outage inside a single call for many seconds (s3fs retries 5 times on
# top of botocore's 5 attempts: 7-12 s per call against a dead endpoint), beyond the budget and
# the heartbeat interval. Reads must see the store, not a cache: s3fs' ``cat_file`` first asks
# for the size (``max_concurrency`` > 1), answered from the listings cache, so after a listing a
# file written since (MAIN_config.json) stayed "missing" until the next listing, one heartbeat
# interval later; ``max_concurrency=1`` makes a read one GET, and no listings cache means every
# answer comes from the server. Explicit ``storage_options`` override these.
_S3_OPTIONS = {"config_kwargs": {"retries": {"max_attempts": 1}}, "max_concurrency": 1,
               "use_listings_cache": False}
_DEFAULT_OPTIONS: dict[str, dict] = {"s3": _S3_OPTIONS, "s3a": _S3_OPTIONS}
_LIBRARY_RETRIES = {"s3": 1, "s3a": 1}  # s3fs' own loop (an attribute, not an option)

_PERMANENT_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "NoSuchBucket", "NoSuchKey", "NotFound", "Forbidden", "InvalidBucketName",
                    "NotAuthorizedOrNotFound", "BucketNotFound", "ObjectNotFound", "NotAuthenticated"}

def _status_and_code(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and service error code carried by an SDK exception, read from its fields
    (botocore ``response``, oci ``status``/``code``, aiohttp ``status``), never from its text:
    a URL in the message may well contain "403"."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        return (int(status) if status is not None else None), error.get("Code")
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    return (status if isinstance(status, int) else None), (code if isinstance(code, str) else None)

def is_transient(exc: BaseException) -> bool:
    """Worth retrying: network trouble, 5xx, throttling. Missing files and denials are not."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNO or exc.errno is None
    module = type(exc).__module__ or ""
    if module.startswith(("aiohttp", "botocore", "urllib3", "requests", "oci")):
        status, code = _status_and_code(exc)
        if code in _PERMANENT_CODES:
            return False
        if status is not None:
            return status >= 500 or status in (408, 409, 429)
        return True  # no response at all: connection refused/reset, timeouts, closed sockets
    return type(exc).__name__ in ("ClientOSError", "ServerDisconnectedError", "EndpointConnectionError")

_BUCKETS = {"s3", "s3a", "gs", "gcs", "oci", "az", "abfs", "abfss", "adl"}  # <scheme>://<bucket>/<path>

def split_uri(uri: str) -> tuple[str, str]:
    """``s3://b/p`` → ("s3", "s3://b/p"); a bare path → ("file", abspath). A URI that names no
    bucket (``s3://``, ``s3:///p``) or nothing at all (``file://``) is a StorageError naming it."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        bucket = scheme.lower() in _BUCKETS
        if not scheme or not rest.strip("/") or (bucket and rest.startswith("/")):
            shape = ("<bucket>@<namespace>/<path>" if scheme.lower() == "oci" else "<bucket>/<path>") if bucket \
                else "<path>"
            raise StorageError(f"work dir {uri!r}: {'no bucket' if bucket else 'no path'} after '{scheme}://' "
                               f"(give {scheme or '<scheme>'}://{shape})")
        return scheme, uri.rstrip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))

_LOCAL = {"file", "local"}  # fsspec's names of the local disk

def local_path(full: str) -> str:
    """The folder of a local work dir given as a path or a ``file://`` / ``local://`` URL."""
    return os.path.abspath(os.path.expanduser(full.split("://", 1)[1] if "://" in full else full))


def open_store(uri: str, fs: Any = None, storage_options: dict | None = None) -> tuple[str, Any, str]:
    """``(protocol, fs, path)`` of the work dir ``uri``: ``fs`` None for the local disk (unless one
    was given), else the fsspec filesystem (given, or opened with the defaults above and
    ``storage_options`` over them); ``path`` is the folder in it. A URI that names no bucket, or
    storage fsspec cannot open, is a StorageError naming the URI."""
    protocol, full = split_uri(uri)
    if fs is not None:
        return protocol, fs, fs._strip_protocol(full)
    if protocol in _LOCAL:
        return protocol, None, local_path(full)
    import fsspec

    try:
        options = {**_DEFAULT_OPTIONS.get(protocol, {}), **(storage_options or {})}
        fs, path = fsspec.core.url_to_fs(full, **options)
    except (ImportError, ValueError) as e:
        raise StorageError(f"work dir {uri!r}: cannot open this kind of storage ({e})") from None
    if protocol in _LIBRARY_RETRIES and hasattr(fs, "retries"):
        fs.retries = _LIBRARY_RETRIES[protocol]
    return protocol, fs, path
