"""Ingest: landing objects of a data interval → curated Parquet partitions by date.

Landing layout: ``landing/date=YYYY-MM-DD/<name>.<ext>``, one folder per day
the exporter wrote. Supported objects: wide CSV (a timestamp column plus one
column per metric, entity from the file name) and long CSV (``timestamp,
entity, metric, value``), each optionally gzip-compressed.

Every input row ends up in exactly one place: a curated partition, or the
quarantine table with its reason. An object that cannot be parsed at all is
quarantined whole. Duplicate ``(entity, metric, timestamp)`` rows keep the
last one in file order and are counted in the report.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import posixpath
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from lstmae import schema
from lstmae.lake import day_slices, partition, read_days, utc as _utc, write_slice
from lstmae.config import Config
from lstmae.storage import Storage

log = logging.getLogger(__name__)

LANDING = "landing"
METRICS = "metrics"
QUARANTINE = "quarantine"


class ParseError(ValueError):
    """Raised when a whole landing object cannot be read; the object is quarantined."""


@dataclass
class Parsed:
    """Rows parsed from one object: curated-shaped rows plus rejected lines."""

    rows: pd.DataFrame  # timestamp (UTC), entity, metric, value, labels
    rejected: list[tuple[int | None, str, str | None]] = field(default_factory=list)  # line, reason, raw


def landing_prefix(day: pd.Timestamp) -> str:
    return f"{LANDING}/date={day.strftime('%Y-%m-%d')}/"


def decompress(key: str, data: bytes) -> bytes:
    """Return the bytes of ``data``, gunzipped when it is gzip (by magic bytes)."""
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ParseError(f"corrupt or truncated gzip: {error}") from None
    if key.endswith(".gz"):
        raise ParseError("name ends in .gz but the content is not gzip")
    return data


def parse_timestamps(values: pd.Series, timezone: str | None) -> tuple[pd.Series, pd.Series]:
    """Parse timestamps to UTC.

    Accepts ISO 8601 strings with an offset or ``Z`` (offsets may change within
    a file) and epoch numbers (seconds, or milliseconds when above 1e11).
    Naive strings are localised to ``timezone`` when configured, else rejected.

    Returns:
        ``(timestamps, reasons)``: UTC timestamps (NaT where rejected) and the
        rejection reason per row (None where accepted).
    """
    text = values.astype("string").str.strip()
    reasons = pd.Series([None] * len(text), index=text.index, dtype=object)
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")

    numeric = pd.to_numeric(text, errors="coerce")
    is_number = numeric.notna()
    if is_number.any():
        numbers = numeric[is_number]
        unit_ms = numbers.abs() > 1e11
        seconds = numbers.where(~unit_ms, numbers / 1000.0)
        result[is_number] = pd.to_datetime(seconds, unit="s", utc=True)

    strings = text[~is_number & text.notna() & (text != "")]
    if len(strings):
        has_zone = strings.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
        aware = strings[has_zone]
        if len(aware):
            parsed = pd.to_datetime(aware, utc=True, errors="coerce", format="ISO8601")
            result[aware.index] = parsed
            reasons[parsed[parsed.isna()].index] = "unparseable timestamp"
        naive = strings[~has_zone]
        if len(naive):
            if timezone is None:
                reasons[naive.index] = "naive timestamp without a configured time zone (set 'timezone')"
            else:
                parsed = pd.to_datetime(naive, errors="coerce", format="ISO8601")
                bad = parsed.isna()
                reasons[parsed[bad].index] = "unparseable timestamp"
                local = parsed[~bad].dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
                reasons[local[local.isna()].index] = f"local time does not exist or is ambiguous in {timezone}"
                result[local.index] = local.dt.tz_convert("UTC")
    missing = text.isna() | (text == "")
    reasons[missing] = "missing timestamp"
    result[reasons.notna()] = pd.NaT
    return result, reasons


def parse_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse metric values; empty and ``NaN`` become null, ``±Inf`` and text are rejected."""
    text = values.astype("string").str.strip().str.replace(",", "", regex=False)
    number = pd.to_numeric(text, errors="coerce")
    empty = text.isna() | (text == "") | text.str.lower().isin(["nan", "null", "none"])
    reasons = pd.Series([None] * len(text), index=text.index, dtype=object)
    reasons[number.isna() & ~empty] = "value is not a number"
    infinite = np.isinf(number.astype("float64").fillna(0.0))
    reasons[infinite] = "value is infinite"
    number = number.astype("float64").where(reasons.isna() & ~empty)
    return number, reasons


def _read_csv(text: bytes) -> pd.DataFrame:
    if not text.strip():
        raise ParseError("empty object (zero bytes or only whitespace)")
    head = text[:512].lstrip().lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        raise ParseError("content is an HTML page, not CSV (an error page saved as an export?)")
    try:
        return pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise ParseError(f"not a readable CSV: {error}") from None


def entity_from_key(key: str) -> str:
    name = posixpath.basename(key)
    for suffix in (".gz", ".csv", ".tsv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def parse_csv(key: str, data: bytes, config: Config, timestamp_column: str = "timestamp") -> Parsed:
    """Parse a wide or long CSV export (long when it has entity, metric and value columns)."""
    frame = _read_csv(decompress(key, data))
    columns = {c.strip().lower(): c for c in frame.columns}
    if timestamp_column not in columns:
        raise ParseError(f"no {timestamp_column!r} column; columns are {list(frame.columns)[:10]}")
    line = pd.Series(np.arange(len(frame), dtype=np.int64) + 2, index=frame.index)  # header is line 1
    raw = frame.astype(str).agg(",".join, axis=1)
    timestamps, time_reasons = parse_timestamps(frame[columns[timestamp_column]], config.timezone)
    rejected: list[tuple[int | None, str, str | None]] = []
    bad_time = time_reasons.notna()
    for index in frame.index[bad_time]:
        rejected.append((int(line[index]), str(time_reasons[index]), raw[index]))

    if {"entity", "metric", "value"} <= set(columns):
        values, value_reasons = parse_values(frame[columns["value"]])
        long = pd.DataFrame(
            {
                "timestamp": timestamps,
                "entity": frame[columns["entity"]].astype(str),
                "metric": frame[columns["metric"]].astype(str),
                "value": values,
                "line": line,
                "reason": value_reasons,
                "raw": raw,
            }
        )[~bad_time]
    else:
        metric_columns = [c for c in frame.columns if c != columns[timestamp_column]]
        if not metric_columns:
            raise ParseError("no metric columns next to the timestamp column")
        entity = entity_from_key(key)
        pieces = []
        for column in metric_columns:
            values, value_reasons = parse_values(frame[column])
            pieces.append(
                pd.DataFrame(
                    {
                        "timestamp": timestamps,
                        "entity": entity,
                        "metric": column.strip(),
                        "value": values,
                        "line": line,
                        "reason": value_reasons,
                        "raw": raw,
                    }
                )[~bad_time]
            )
        long = pd.concat(pieces, ignore_index=True)
    bad_value = long["reason"].notna()
    for row in long[bad_value].itertuples():
        rejected.append((int(row.line), f"{row.reason} (metric {row.metric!r})", row.raw))
    rows = long[~bad_value][["timestamp", "entity", "metric", "value"]].copy()
    rows["labels"] = None
    return Parsed(rows=rows.reset_index(drop=True), rejected=rejected)


def parse_object(key: str, data: bytes, config: Config) -> Parsed:
    """Parse one landing object by its name; raise :class:`ParseError` when unusable."""
    name = posixpath.basename(key)
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".csv"):
        return parse_csv(key, data, config)
    raise ParseError(f"unsupported export format {name!r}; supported: .csv, .csv.gz")


@dataclass
class IngestReport:
    """Counts of one ingest run, written next to each partition as JSON."""

    start: str
    end: str
    objects: int = 0
    objects_quarantined: int = 0
    rows_read: int = 0
    rows_curated: int = 0
    rows_deduplicated: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add_reason(self, reason: str, count: int = 1) -> None:
        key = reason.split(" (metric")[0]
        self.quarantined_by_reason[key] = self.quarantined_by_reason.get(key, 0) + count


def ingest_interval(storage: Storage, config: Config, start, end) -> IngestReport:
    """Ingest the landing objects of ``[start, end)`` and publish one partition per day.

    Reads ``landing/date=D/`` for every day D the interval touches, keeps rows
    whose timestamp is inside the interval, and replaces ``metrics/date=D/``
    (a zero-row Parquet file for a day without data). Rows outside the
    interval and unparseable rows go to ``quarantine/date=D/``.
    """
    started = time.monotonic()
    start, end = _utc(start), _utc(end)
    slices = day_slices(start, end)
    days = [day for day, _, _ in slices]
    report = IngestReport(start=start.isoformat(), end=end.isoformat())
    frames = []
    rejected_rows: list[dict] = []

    for day in days:
        for key in storage.list(landing_prefix(day)):
            report.objects += 1
            if "/_temporary/" in f"/{key}" or posixpath.basename(key).startswith("_"):
                rejected_rows.append({"source": key, "line": None, "reason": "temporary or marker object, not an export", "raw": None})
                report.objects_quarantined += 1
                report.add_reason("temporary or marker object, not an export")
                continue
            try:
                parsed = parse_object(key, storage.read_bytes(key), config)
            except ParseError as error:
                log.warning("Quarantined %s: %s", key, error)
                rejected_rows.append({"source": key, "line": None, "reason": str(error), "raw": None})
                report.objects_quarantined += 1
                report.add_reason(str(error))
                continue
            rows = parsed.rows
            rows["source"] = key
            report.rows_read += len(rows) + len(parsed.rejected)
            for line, reason, raw in parsed.rejected:
                rejected_rows.append({"source": key, "line": line, "reason": reason, "raw": raw})
                report.add_reason(reason)
            outside = (rows["timestamp"] < start) | (rows["timestamp"] >= end)
            for row in rows[outside].itertuples():
                reason = "timestamp outside the data interval"
                rejected_rows.append({"source": key, "line": None, "reason": reason, "raw": f"{row.timestamp.isoformat()},{row.entity},{row.metric},{row.value}"})
                report.add_reason(reason)
            frames.append(rows[~outside])

    curated = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["timestamp", "entity", "metric", "value", "labels", "source"])
    before = len(curated)
    curated = curated.drop_duplicates(["entity", "metric", "timestamp"], keep="last")
    report.rows_deduplicated = before - len(curated)
    report.rows_quarantined = len(rejected_rows) - report.objects_quarantined
    curated = curated.sort_values(["timestamp", "entity", "metric"], kind="stable")

    for day, slice_start, slice_end in slices:
        in_slice = curated[(curated["timestamp"] >= slice_start) & (curated["timestamp"] < slice_end)]
        table = curated_table(in_slice)
        write_slice(storage, METRICS, day, slice_start, slice_end, table)
        report.partitions[day.strftime("%Y-%m-%d")] = table.num_rows
    report.rows_curated = int(sum(report.partitions.values()))

    quarantine_table = pa.Table.from_pylist(rejected_rows, schema=schema.QUARANTINE)
    write_slice(storage, QUARANTINE, days[0], start, min(end, days[0] + pd.Timedelta(days=1)), quarantine_table)
    report.seconds = round(time.monotonic() - started, 3)
    report_json = json.dumps(report.__dict__, indent=2).encode()
    for day, slice_start, _ in slices:
        clock = slice_start.strftime("%H%M%S")
        storage.write_bytes(f"{partition(METRICS, day)}/_ingest_report-{clock}.json", report_json)
    log.info(
        "Ingested %s..%s: %d objects, %d rows read, %d curated, %d deduplicated, %d quarantined %s in %.1f s",
        start, end, report.objects, report.rows_read, report.rows_curated, report.rows_deduplicated,
        report.rows_quarantined, report.quarantined_by_reason, report.seconds,
    )
    return report


def curated_table(frame: pd.DataFrame) -> pa.Table:
    """Convert curated rows to the fixed :data:`schema.CURATED` schema."""
    frame = frame.reset_index(drop=True)
    return pa.table(
        {
            "timestamp": pa.array(pd.to_datetime(frame["timestamp"], utc=True), type=schema.TIMESTAMP),
            "entity": pa.array(frame["entity"].astype(str).tolist(), type=pa.string()),
            "metric": pa.array(frame["metric"].astype(str).tolist(), type=pa.string()),
            "value": pa.array(frame["value"].astype("float64"), type=pa.float64(), from_pandas=True),
            "labels": pa.array(frame["labels"].tolist() if "labels" in frame else [None] * len(frame), type=pa.string()),
            "source": pa.array(frame["source"].astype(str).tolist(), type=pa.string()),
        },
        schema=schema.CURATED,
    )


def read_curated(storage: Storage, start, end, entities=None, metrics=None) -> pd.DataFrame:
    """Read curated rows with ``start <= timestamp < end`` from the daily partitions.

    Days never ingested have no files and yield no rows; callers that need
    complete data look for gaps on the grid.
    """
    start, end = _utc(start), _utc(end)
    table = read_days(storage, METRICS, start, end)
    if table is None:
        return pd.DataFrame(
            {"timestamp": pd.Series(dtype="datetime64[ms, UTC]"), "entity": pd.Series(dtype=str),
             "metric": pd.Series(dtype=str), "value": pd.Series(dtype="float64")}
        )
    frame = table.select(["timestamp", "entity", "metric", "value"]).to_pandas()
    mask = (frame["timestamp"] >= start) & (frame["timestamp"] < end)
    if entities is not None:
        mask &= frame["entity"].isin(list(entities))
    if metrics is not None:
        mask &= frame["metric"].isin(list(metrics))
    return frame[mask].reset_index(drop=True)
