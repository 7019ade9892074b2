"""Object storage addressed by URI: ``file://`` directories and ``s3://`` buckets.

Every layer of the lake goes through :class:`Storage`, so the pipeline code
never knows which backend it talks to. Keys are ``/``-separated and relative to
the lake root (``metrics/date=2026-09-01/part-0.parquet``).

Writes are atomic for readers: the local backend writes a hidden temporary file
beside the target and renames it into place, and S3 makes an object visible
only once its upload completes. A reader therefore sees the previous complete
object or the new complete object, never a partial one.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# Characters allowed in one path segment built from data (entity, metric,
# group names). Anything else is percent-escaped, so a host called
# ``../../models/current`` cannot address a key outside its partition.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]")


def escape_segment(value: str) -> str:
    """Escape one key segment so that it can never contain ``/`` or be ``..``.

    >>> escape_segment("node-1")
    'node-1'
    >>> escape_segment("../../models/current")
    '%2E%2E%2F%2E%2E%2Fmodels%2Fcurrent'
    """
    if value in ("", ".", ".."):
        return "".join(f"%{ord(c):02X}" for c in value) or "%00"
    escaped = "".join(c if _SAFE_SEGMENT.match(c) else _percent(c) for c in value)
    # A leading dot would make the object hidden to pyarrow and DuckDB readers.
    if escaped.startswith(".") or escaped.startswith("_"):
        escaped = _percent(escaped[0]) + escaped[1:]
    return escaped


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _check_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"Invalid storage key {key!r}: keys are relative, '/'-separated and "
            "contain no empty, '.' or '..' segments."
        )
    return key


class Storage:
    """A lake rooted at one URI. Subclasses implement the byte-level calls."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Return the keys under ``prefix`` (recursively), sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{_check_key(key)}"

    # Parquet helpers shared by both backends.

    def write_parquet(self, key: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.write_bytes(key, buffer.getvalue())

    def read_parquet(self, key: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(key)))

    def replace_prefix(self, prefix: str, files: dict[str, bytes]) -> None:
        """Make ``files`` (names relative to ``prefix``) the whole content of ``prefix``.

        New files are written first, then files of an earlier run that are not
        part of the new set are deleted, so a rerun never leaves stale rows
        beside fresh ones and a reader never sees the prefix empty.
        """
        prefix = prefix.rstrip("/")
        old = set(self.list(prefix + "/"))
        for name, data in files.items():
            self.write_bytes(f"{prefix}/{name}", data)
        for key in sorted(old - {f"{prefix}/{name}" for name in files}):
            self.delete(key)


class LocalStorage(Storage):
    """A lake in a local directory (``file:///abs/path``)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri_of(key)} does not exist") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name starts with a dot so that dataset readers skip it.
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        directory = base if prefix.endswith("/") or base.is_dir() else base.parent
        if not directory.is_dir():
            return []
        keys = []
        for path in directory.rglob("*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3Storage(Storage):
    """A lake in an S3 bucket, through boto3's standard configuration.

    The endpoint comes from ``endpoint_url`` when given, else from boto3's own
    settings (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the config file);
    credentials come from boto3's credential chain. Retries use boto3's
    ``standard`` mode unless ``AWS_RETRY_MODE`` says otherwise.
    """

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client=None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"Invalid S3 URI {uri!r}: expected s3://BUCKET or s3://BUCKET/PREFIX.")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or make_s3_client(endpoint_url)
        self.endpoint = self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        _check_key(key)
        return posixpath.join(self.prefix, key) if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.uri_of(key)} does not exist") from None
        return response["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        # One PUT: S3 shows the object only once it is complete.
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
        if not prefix:
            full = f"{self.prefix}/" if self.prefix else ""
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                if not posixpath.basename(key).startswith("."):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def make_s3_client(endpoint_url: str | None = None):
    """Create a boto3 S3 client with standard retries and a checked endpoint."""
    import boto3
    from botocore.config import Config

    if endpoint_url is not None and not re.match(r"^https?://", endpoint_url):
        raise ValueError(
            f"Invalid S3 endpoint {endpoint_url!r}: give the scheme too, "
            "for example http://127.0.0.1:9000."
        )
    retry_mode = os.environ.get("AWS_RETRY_MODE", "standard")
    max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))
    config = Config(
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        connect_timeout=float(os.environ.get("LSTMAE_S3_CONNECT_TIMEOUT", "5")),
        read_timeout=float(os.environ.get("LSTMAE_S3_READ_TIMEOUT", "60")),
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    endpoint = client.meta.endpoint_url
    if not re.match(r"^https?://", endpoint or ""):
        raise ValueError(f"Invalid S3 endpoint {endpoint!r}: set AWS_ENDPOINT_URL with its scheme.")
    return client


def open_storage(uri: str, **options) -> Storage:
    """Open the lake at ``uri`` (``file:///path``, a plain path, or ``s3://bucket/prefix``)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Storage(uri, **options)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"Invalid file URI {uri!r}: use file:///absolute/path.")
        return LocalStorage(parsed.path)
    if parsed.scheme == "":
        return LocalStorage(uri)
    raise ValueError(
        f"Unsupported lake URI {uri!r}: use file:///absolute/path, a local path, or s3://bucket/prefix."
    )


def new_id() -> str:
    """Return a short unique id for temporary keys and versions."""
    return uuid.uuid4().hex[:12]
