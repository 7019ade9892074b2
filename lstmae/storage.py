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

import errno
import io
import logging
import os
import posixpath
import re
import shutil
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
    '%2E.%2F..%2Fmodels%2Fcurrent'
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

    def write_parquet(self, key: str, table: pa.Table, **options) -> None:
        """Write ``table`` as one Parquet object, zstd-compressed unless ``options`` set ``compression``.

        Args:
            options: further keyword arguments of ``pyarrow.parquet.write_table``.
        """
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **{"compression": "zstd", **options})
        self.write_bytes(key, buffer.getvalue())

    def read_parquet(self, key: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(key)))

    def open_input(self, key: str) -> pa.NativeFile:
        """Open ``key`` for reading as a pyarrow file, for example for ``pyarrow.parquet.read_table``.

        The local backend reads the file from disk as it is needed, so a
        reader that skips row groups or columns never reads the whole file.
        This default reads the whole object into memory.
        """
        return pa.BufferReader(self.read_bytes(key))

    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Publish the finished local file ``path`` as ``key``, in one atomic write.

        The local backend moves the file into place when it can, so ``path``
        may be gone afterwards; the caller removes it if it still exists.
        This default reads the whole file into memory; backends override it
        to stream.
        """
        self.write_bytes(key, Path(path).read_bytes())

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

    def _publish(self, key: str, fill) -> None:
        """Make ``key`` appear complete: ``fill(handle, temporary)`` writes a hidden file beside it, then a rename.

        The temporary name starts with a dot so that dataset readers skip it.
        ``fill`` gets the open descriptor and the path of that file and must
        close the descriptor. A failure removes the temporary file.
        """
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            fill(handle, temporary)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        def fill(handle: int, temporary: str) -> None:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())

        self._publish(key, fill)

    def open_input(self, key: str) -> pa.NativeFile:
        path = self._path(key)
        try:
            return pa.OSFile(str(path), mode="r")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri_of(key)} does not exist") from None

    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())

        def fill(handle: int, temporary: str) -> None:
            # The file becomes the hidden temporary file by a rename within
            # one file system, else by a copy.
            os.close(handle)
            try:
                os.replace(path, temporary)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                with open(temporary, "wb") as stream, open(path, "rb") as source:
                    shutil.copyfileobj(source, stream, 1 << 20)
                    stream.flush()
                    os.fsync(stream.fileno())

        self._publish(key, fill)

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


class StorageError(OSError):
    """Raised when the lake cannot be reached or refuses a request.

    The message names the operation, the object and the endpoint actually
    used, and what to check; it never contains a credential.
    """


# Error codes that mean the credentials were refused, not that the request failed.
_CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "403",
}


def redact_url(url: str | None) -> str:
    """``url`` without user information and query string, safe to log.

    >>> redact_url("http://user:secret@minio:9000/?X-Amz-Signature=abc")
    'http://minio:9000/'
    """
    if not url:
        return str(url)
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parsed.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    return parsed._replace(netloc=netloc, query="", fragment="", params="").geturl()


class S3Storage(Storage):
    """A lake in an S3 bucket, through boto3's standard configuration.

    The endpoint comes from ``endpoint_url`` when given, else from boto3's own
    settings (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the config file);
    credentials come from boto3's credential chain. Requests are retried in
    boto3's ``standard`` retry mode (3 attempts, or ``AWS_MAX_ATTEMPTS``) and
    every retry is logged. Failures raise
    :class:`StorageError` naming the endpoint; a missing key raises
    :class:`FileNotFoundError`.
    """

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client=None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"Invalid S3 URI {uri!r}: expected s3://BUCKET or s3://BUCKET/PREFIX.")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or make_s3_client(endpoint_url)
        self.endpoint = redact_url(self.client.meta.endpoint_url)
        self.endpoint_source = getattr(self.client, "_lstmae_endpoint_source", None) or "the client passed in"
        install_retry_logging(self.client)

    def _key(self, key: str) -> str:
        _check_key(key)
        return posixpath.join(self.prefix, key) if self.prefix else key

    def _call(self, operation: str, key: str, function, **kwargs):
        """Run one client call and turn botocore failures into :class:`StorageError`."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return function(Bucket=self.bucket, **kwargs)
        except ClientError as error:
            raise self._client_error(operation, key, error) from error
        except NoCredentialsError:
            raise StorageError(
                f"S3 {operation} of {self._where(key)} failed: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance or task role."
            ) from None
        except BotoCoreError as error:
            attempts = _max_attempts(self.client)
            raise StorageError(
                f"S3 {operation} of {self._where(key)} failed after {attempts} attempt(s): {_short(error)}. "
                f"Check that the endpoint {self.endpoint} (from {self.endpoint_source}) is right, with scheme, host "
                "and port, and that the server is reachable."
            ) from error

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def _client_error(self, operation: str, key: str, error) -> Exception:
        info = error.response.get("Error", {})
        code = str(info.get("Code", "unknown"))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = _short(info.get("Message") or "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(f"{self._where(key)} does not exist")
        if code == "NoSuchBucket":
            return StorageError(
                f"S3 bucket {self.bucket!r} does not exist at {self.endpoint} (from {self.endpoint_source}). "
                "Create it, or fix the lake URI."
            )
        if code in _CREDENTIAL_ERRORS or status == 403:
            return StorageError(
                f"S3 {operation} of {self._where(key)} was rejected by {self.endpoint} (from {self.endpoint_source}): "
                f"{code} {message}. Check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or the role) and the "
                "bucket policy."
            )
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        return StorageError(
            f"S3 {operation} of {self._where(key)} at {self.endpoint} failed after {attempts} attempt(s): "
            f"{status} {code} {message}".rstrip()
            + (". The server is throttling requests; the task can be retried later." if code in ("SlowDown", "503") else ".")
        )

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        full = self._key(key)
        attempts = _max_attempts(self.client)
        for attempt in range(1, attempts + 1):
            response = self._call("GetObject", key, self.client.get_object, Key=full)
            expected = response.get("ContentLength")
            try:
                data = response["Body"].read()
            except (BotoCoreError, OSError) as error:
                problem = _short(error)
            else:
                if expected is None or len(data) == expected:
                    return data
                problem = f"received {len(data)} of {expected} bytes"
            if attempt == attempts:
                raise StorageError(
                    f"S3 GetObject of {self._where(key)} at {self.endpoint} failed after {attempts} attempt(s): "
                    f"the body was cut off ({problem}). Check the network to the endpoint."
                )
            log.info("Retrying S3 GetObject of %s (attempt %d of %d): the body was cut off (%s)",
                        self._where(key), attempt + 1, attempts, problem)
        raise AssertionError("unreachable")

    def write_bytes(self, key: str, data: bytes) -> None:
        # One PUT: S3 shows the object only once it is complete.
        self._call("PutObject", key, self.client.put_object, Key=self._key(key), Body=data)

    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        # One PUT that streams the file from disk; botocore rewinds it on a retry.
        with open(path, "rb") as stream:
            self._call("PutObject", key, self.client.put_object, Key=self._key(key), Body=stream)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
        if not prefix:
            full = f"{self.prefix}/" if self.prefix else ""
        keys = []
        token = None
        while True:
            arguments = {"Prefix": full, **({"ContinuationToken": token} if token else {})}
            page = self._call("ListObjectsV2", prefix, self.client.list_objects_v2, **arguments)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                if not posixpath.basename(key).startswith("."):
                    keys.append(key)
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("DeleteObject", key, self.client.delete_object, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("HeadObject", key, self.client.head_object, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True


_USERINFO = re.compile(r"(\w+://)[^/@\s\"']+@")
_SIGNED_QUERY = re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE)


def _short(error) -> str:
    """First line of an error message, without user information or signatures in URLs."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = _SIGNED_QUERY.sub(r"\1REDACTED", _USERINFO.sub(r"\1", text))
    return text[:300].rstrip(".")


def _max_attempts(client) -> int:
    """Attempts per request, counting the first one."""
    retries = getattr(client.meta.config, "retries", None) or {}
    if retries.get("total_max_attempts"):
        return int(retries["total_max_attempts"])
    if retries.get("max_attempts") is not None:
        return int(retries["max_attempts"]) + 1  # botocore's max_attempts counts retries only
    return 3


def install_retry_logging(client) -> None:
    """Log every retry of ``client``'s requests (botocore itself logs them only at DEBUG).

    A failed attempt is stored in the request context. When botocore's retry
    handler sends the request again, one INFO line names the operation, the
    attempt and the failure that caused it.
    """
    events = client.meta.events
    attempts = _max_attempts(client)

    def remember_failure(request_dict=None, response=None, caught_exception=None, **_):
        if request_dict is None:
            return None
        if caught_exception is not None:
            failure = _short(caught_exception)
        elif response is not None and response[0].status_code >= 400:
            error = (response[1] or {}).get("Error", {})
            failure = f"{response[0].status_code} {error.get('Code', '')}".strip()
        else:
            return None
        request_dict["context"]["lstmae_failure"] = failure
        return None

    def log_retry(request=None, operation_name=None, **_):
        context = getattr(request, "context", None) or {}
        attempt = context.get("retries", {}).get("attempt", 1)
        if attempt > 1:
            log.info(
                "Retrying S3 %s (attempt %d of %d) after: %s",
                operation_name, attempt, attempts, context.get("lstmae_failure", "an error"),
            )

    events.register_first("needs-retry.s3", remember_failure, unique_id="lstmae-remember-failure")
    events.register("request-created.s3", log_retry, unique_id="lstmae-log-retry")


def _endpoint_setting(endpoint_url: str | None) -> tuple[str | None, str]:
    """The endpoint that boto3 will use and where it comes from."""
    if endpoint_url is not None:
        return endpoint_url, "the endpoint_url argument"
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name], f"${name}"
    return None, "the AWS configuration (default endpoint)"


def make_s3_client(endpoint_url: str | None = None):
    """Create a boto3 S3 client with standard retries, short timeouts and a checked endpoint.

    Settings from the environment: ``AWS_RETRY_MODE`` (default ``standard``),
    ``AWS_MAX_ATTEMPTS`` (default 3, counting the first request),
    ``LSTMAE_S3_CONNECT_TIMEOUT`` (seconds, default 3) and
    ``LSTMAE_S3_READ_TIMEOUT`` (seconds, default 60).

    Raises:
        ValueError: the endpoint has no ``http://`` or ``https://`` scheme, or
            a setting is not a number.
    """
    import boto3
    from botocore.config import Config

    endpoint, source = _endpoint_setting(endpoint_url)
    if endpoint is not None and not re.match(r"^https?://[^/]", endpoint):
        shown = redact_url(endpoint) if "://" in endpoint else endpoint.split("@")[-1]
        raise ValueError(f"Invalid S3 endpoint {shown!r} from {source}: give the scheme too, for example http://127.0.0.1:9000.")
    if endpoint is not None and "@" in urlparse(endpoint).netloc:
        # boto3 would log such a URL at DEBUG level, secret included, and never use it to sign.
        raise ValueError(
            f"Invalid S3 endpoint {redact_url(endpoint)!r} from {source}: it contains user information. "
            "Remove it and give the credentials as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE."
        )
    retry_mode = os.environ.get("AWS_RETRY_MODE", "standard")
    try:
        max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "3"))
        connect_timeout = float(os.environ.get("LSTMAE_S3_CONNECT_TIMEOUT", "3"))
        read_timeout = float(os.environ.get("LSTMAE_S3_READ_TIMEOUT", "60"))
    except ValueError as error:
        raise ValueError(
            f"Invalid S3 client setting: {error}. AWS_MAX_ATTEMPTS is an integer, "
            "LSTMAE_S3_CONNECT_TIMEOUT and LSTMAE_S3_READ_TIMEOUT are seconds."
        ) from None
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    used = client.meta.endpoint_url
    if not re.match(r"^https?://", used or ""):
        raise ValueError(f"Invalid S3 endpoint {redact_url(used)!r} from {source}: set it with its scheme.")
    client._lstmae_endpoint_source = source
    install_retry_logging(client)
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
