"""Parsers of the metric export formats that land in ``landing/``.

:func:`parse_object` takes one landing object (its key and bytes), unpacks
gzip, recognises the format and returns the samples in the curated shape plus
the rejected samples with their reasons. An object that is not an export at
all raises :class:`ParseError` and is quarantined whole.

Recognised formats, by name and then by content:

========================  ===========================================  ===================
format                    typical object                               module
========================  ===========================================  ===================
``csv``                   ``node-1.csv``, ``metrics.tsv.gz``           :mod:`.delimited`
``prometheus``            ``query_range`` JSON (also Thanos, VM)       :mod:`.prometheus`
``victoriametrics``       ``/api/v1/export`` JSON lines                :mod:`.prometheus`
``cloudwatch``            Metric Streams JSON from Firehose, gzip      :mod:`.cloudwatch`
``influx``                Telegraf line protocol (``.lp``, ``.influx``) :mod:`.influx`
``parquet``               long-form Parquet                            :mod:`.parquet`
========================  ===========================================  ===================
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import io
import logging
import os
import posixpath
import re
import zlib

from isal import isal_zlib

from lstmae.formats.common import PARSER_FAILURE, ParseError, Parsed, Rejects, finish, format_extension

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "ParseError", "Parsed", "Rejects", "decompress", "detect_format", "parse_object"]

FORMATS = ("csv", "prometheus", "victoriametrics", "cloudwatch", "influx", "parquet")
_CSV_EXTENSIONS = ("csv", "tsv")
_JSON_EXTENSIONS = ("json", "jsonl", "ndjson")
_INFLUX_EXTENSIONS = ("lp", "line", "influx")
_PARQUET_EXTENSIONS = ("parquet", "pq")
_MARKUP = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<error", b"<title")


_COMPRESSION = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
MAX_LAYERS = 3
# Unpacked bytes allowed per object; ``$LSTMAE_INGEST_MAX_UNPACKED_BYTES`` overrides it.
DEFAULT_MAX_UNPACKED_BYTES = 2 << 30
TOO_MANY_LAYERS = f"too many nested compression layers (max {MAX_LAYERS})"
TOO_LARGE_UNPACKED = "unpacked size over the limit"


def max_unpacked_bytes() -> int:
    """Return the maximum bytes one compression layer may unpack to: ``$LSTMAE_INGEST_MAX_UNPACKED_BYTES``, default 2 GiB.

    Raises:
        ValueError: the variable is set but is no positive integer.
    """
    setting = os.environ.get("LSTMAE_INGEST_MAX_UNPACKED_BYTES")
    if not setting:
        return DEFAULT_MAX_UNPACKED_BYTES
    try:
        limit = int(setting)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ValueError(
            f"Invalid LSTMAE_INGEST_MAX_UNPACKED_BYTES {setting!r}: expected a positive number of bytes, e.g. 4294967296 for 4 GiB."
        )
    return limit


def decompress(key: str, data: bytes, limit: int | None = None) -> bytes:
    """Return ``data`` unpacked when it starts with the magic bytes of gzip, bzip2, xz or zstd.

    The name does not matter, and up to three nested layers are unpacked
    (a gzip export that a delivery stream compressed once more).

    Args:
        key: the landing key (for messages only).
        data: the object's bytes.
        limit: maximum bytes any layer may unpack to; None for
            :func:`max_unpacked_bytes` (2 GiB by default).

    Raises:
        ParseError: the compressed stream is corrupt or truncated, unpacks to
            more than ``limit`` bytes, has more than three layers, or the
            object is a ZIP archive.
    """
    limit = max_unpacked_bytes() if limit is None else limit
    for layer in range(MAX_LAYERS + 1):
        kind = next((name for magic, name in _COMPRESSION if data.startswith(magic)), None)
        if kind is None:
            break
        if layer == MAX_LAYERS:
            raise ParseError(TOO_MANY_LAYERS, f"{posixpath.basename(key)!r} is still {kind}-compressed after {MAX_LAYERS} layers; unpack it before landing")
        size = len(data)
        try:
            data = _unpack(kind, data, limit)
        except (OSError, EOFError, ValueError, zlib.error, isal_zlib.error, lzma.LZMAError) as error:
            raise ParseError(f"corrupt or truncated {kind}", str(error).splitlines()[0][:200]) from None
        if len(data) > limit:
            raise ParseError(
                TOO_LARGE_UNPACKED,
                f"{size:,} {kind} bytes unpack to more than {limit:,} bytes (a decompression bomb, or an export too large "
                "for one object): split the export, or raise LSTMAE_INGEST_MAX_UNPACKED_BYTES",
            )
    if data.startswith(b"PK\x03\x04"):
        raise ParseError("ZIP archive instead of an export", "unpack it before landing; gzip, bzip2, xz and zstd are read")
    if key.lower().endswith(".gz") and data[:2] != b"\x1f\x8b":
        log.debug("%s is named .gz but is no longer gzip-compressed; reading it as it is", key)
    return data


def _unpack(kind: str, data: bytes, limit: int) -> bytes:
    """Unpack one layer, reading at most ``limit + 1`` bytes so that a bomb stops early."""
    if kind == "gzip":
        return _gunzip(data, limit)
    if kind == "bzip2":
        return _read_limited(bz2.BZ2File(io.BytesIO(data)), limit)
    if kind == "xz":
        return _read_limited(lzma.LZMAFile(io.BytesIO(data)), limit)
    import pyarrow as pa

    with pa.input_stream(pa.BufferReader(data), compression="zstd") as stream:
        return stream.read(limit + 1)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Unpack every member of a gzip stream, as :class:`gzip.GzipFile` reads them, up to ``limit + 1`` bytes.

    One call per member to ISA-L's inflate, which took about 40 % less time
    than zlib's on the ingest benchmark's exports, without the file object's
    chunked reads. NUL padding after a member is skipped; anything else after
    it must be another gzip member. Unlike zlib, ISA-L accepts the reserved
    bits of the header's flag byte; the data's CRC and length are checked.

    Raises:
        EOFError: the stream ends inside a member.
        OSError: bytes after a member are no gzip member.
        isal_zlib.error: a member is corrupt (bad data, CRC or length).
    """
    parts = []
    size = 0
    rest = memoryview(data)
    while True:
        inflater = isal_zlib.decompressobj(31)  # wbits 31: gzip header and trailer, CRC and length checked
        part = inflater.decompress(rest, limit + 1 - size)
        parts.append(part)
        size += len(part)
        if size > limit:
            break
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        rest = inflater.unused_data.lstrip(b"\x00")
        if not rest:
            break
        if rest[:2] != b"\x1f\x8b":
            raise gzip.BadGzipFile(f"Not a gzipped file ({rest[:2]!r})")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_limited(stream, limit: int) -> bytes:
    with stream:
        return stream.read(limit + 1)


def _utf8(text: bytes) -> bytes:
    """Re-encode UTF-16 text (recognised by its byte order mark) as UTF-8; other text stays as it is."""
    if text[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return text.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as error:
            raise ParseError("not UTF-8 text", f"invalid UTF-16 text: {error}") from None
    return text


def detect_format(key: str, text: bytes, config) -> str:
    """Return the format of decompressed ``text`` (one of :data:`FORMATS`).

    Raises:
        ParseError: the content is empty, markup, binary or no known format.
    """
    if not text.strip():
        raise ParseError("empty object", "zero bytes" if not text else "only whitespace")
    if text[:4] == b"PAR1":
        return "parquet"
    extension = format_extension(key)
    head = text[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] == b"<" and head[:16].lower().startswith(_MARKUP):
        title = head[:200].decode("utf-8", "replace").replace("\n", " ")
        raise ParseError("HTML or XML page instead of an export", f"content starts with {title[:120]!r}")
    if extension in _PARQUET_EXTENSIONS:
        raise ParseError("unreadable Parquet", "the object does not start with the Parquet magic bytes PAR1")
    # A NUL byte in the first line means binary content (an archive or image under a text name).
    # NUL bytes further down are left to the parsers, which reject only the records they spoil.
    if b"\x00" in head.split(b"\n", 1)[0]:
        raise ParseError("binary content", f"the first line of {posixpath.basename(key)!r} contains NUL bytes; no text export does")
    if extension in _CSV_EXTENSIONS:
        return "csv"
    if extension in _INFLUX_EXTENSIONS:
        return "influx"
    if extension in _JSON_EXTENSIONS or head[:1] in (b"{", b"["):
        return "json"
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    separators = "[" + re.escape(config.ingest.delimiter) + ",;\t|]"
    columns = {name.strip().strip('"').lower() for name in re.split(separators, first)}
    if config.ingest.timestamp_column.lower() in columns:
        return "csv"
    from lstmae.formats.influx import _LINE, _fields

    match = _LINE.match(first.strip())
    if match and _fields(match.group("fields")):
        return "influx"
    raise ParseError(
        "unsupported format",
        f"cannot tell the export format of {posixpath.basename(key)!r}; supported: CSV/TSV, Prometheus query_range "
        "JSON, VictoriaMetrics export, CloudWatch Metric Streams JSON, InfluxDB line protocol, Parquet",
    )


def parse_object(key: str, data: bytes, config) -> Parsed:
    """Parse one landing object.

    Args:
        key: the landing key (its name decides the entity of wide CSV exports
            and hints at the format).
        data: the object's bytes, gzip-compressed or not.
        config: the :class:`~lstmae.config.Config`.

    Raises:
        ParseError: the object as a whole is unusable; it is quarantined. A
            parser bug is raised as the reason :data:`PARSER_FAILURE` with
            ``rows`` set to the records the object held where they can be
            counted (lines of text, rows of Parquet).
    """
    if not data:
        raise ParseError("empty object", "zero bytes")
    text = _utf8(decompress(key, data))
    kind = detect_format(key, text, config)
    try:
        return finish(_parse(key, text, kind, config))
    except ParseError:
        raise
    except Exception as error:  # a parser bug must not stop the other objects, nor hide how many rows it held
        log.exception("Parser failed on %s", key)
        rows = _count_records(kind, text)
        held = f"; the object held {rows:,} records, none of them read" if rows is not None else ""
        raise ParseError(PARSER_FAILURE, f"{type(error).__name__}: {error}"[:400] + held, rows=rows) from None


def _parse(key: str, text: bytes, kind: str, config) -> Parsed:
    if kind == "parquet":
        from lstmae.formats.parquet import parse_parquet

        return parse_parquet(key, text, config)
    if kind == "csv":
        from lstmae.formats.delimited import parse_csv

        return parse_csv(key, text, config)
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ParseError("not UTF-8 text", str(error)[:200]) from None
    if kind == "influx":
        from lstmae.formats.influx import parse_influx

        return parse_influx(key, decoded, config)
    return _parse_json(key, decoded, config)


def _count_records(kind: str, text: bytes) -> int | None:
    """Count the records of an object a parser failed on: Parquet rows, else non-blank lines (less a CSV header)."""
    try:
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            return pq.ParquetFile(pa.BufferReader(text)).metadata.num_rows
        lines = sum(1 for line in text.splitlines() if line.strip())
        return max(lines - 1, 0) if kind == "csv" else lines
    except Exception:  # the count is a courtesy; the failure itself is already reported
        return None


def _parse_json(key: str, text: str, config) -> Parsed:
    from lstmae.formats.cloudwatch import parse_cloudwatch
    from lstmae.formats.prometheus import parse_query_range, parse_victoriametrics

    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, list):
        raise ParseError("unsupported JSON", "a top-level JSON array; expected a Prometheus response or JSON lines")
    if isinstance(document, dict):
        if "data" in document or "status" in document:
            return parse_query_range(key, document, config)
        records = [(1, document, text.strip())]
    else:
        records = list(json_records(text))
    first = next((record for _, record, _ in records if isinstance(record, dict)), None)
    if first is None:
        line, _, raw = records[0] if records else (None, None, "")
        raise ParseError("invalid JSON", f"line {line} is no JSON object: {raw[:120]!r}")
    if {"metric", "values", "timestamps"} <= set(first):
        return parse_victoriametrics(key, records, config)
    if "metric_name" in first and "namespace" in first:
        return parse_cloudwatch(key, records, config)
    raise ParseError("unsupported JSON", f"records with keys {sorted(first)[:10]} match no supported export")


def json_records(text: str):
    """Yield ``(line, object or None, raw)`` for JSON lines, including objects written back to back.

    >>> [(line, record) for line, record, _ in json_records('{"a": 1}{"a": 2}\\n\\nnot json\\n')]
    [(1, {'a': 1}), (1, {'a': 2}), (3, None)]
    """
    decoder = json.JSONDecoder()
    for line, content in enumerate(text.splitlines(), start=1):
        content = content.strip()
        position = 0
        while position < len(content):
            try:
                record, end = decoder.raw_decode(content, position)
            except ValueError:
                yield line, None, content[position:]
                break
            yield line, record, content[position:end]
            position = end
            while position < len(content) and content[position] in " \t,":
                position += 1
