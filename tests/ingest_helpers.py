"""Helpers of the ingest tests: a configuration, a run, and the curated and quarantined rows as plain tuples."""

from __future__ import annotations

import gzip
import json

import pandas as pd

from lstmae.config import config_from_dict
from lstmae.ingest import METRICS, QUARANTINE, ingest_interval
from lstmae.lake import read_days

DAY = pd.Timestamp("2026-09-01", tz="UTC")
NEXT_DAY = DAY + pd.Timedelta(days=1)
EPOCH = 1788220800  # DAY in Unix seconds


def make_config(timezone: str | None = None, **ingest):
    data = {"ingest": ingest}
    if timezone is not None:
        data["timezone"] = timezone
    return config_from_dict(data)


def gz(text: str | bytes) -> bytes:
    return gzip.compress(text.encode() if isinstance(text, str) else text, mtime=0)


def ingest(storage, config=None, start=DAY, end=NEXT_DAY):
    """Run ingest and check the count identity that every run must keep."""
    report = ingest_interval(storage, config or make_config(), start, end)
    assert report.rows_read == report.rows_curated + report.rows_deduplicated + report.rows_quarantined
    return report


def curated_rows(storage, start=DAY, end=NEXT_DAY) -> list[tuple]:
    """``(iso time, entity, metric, value, labels, source)`` of the curated partitions, in file order."""
    table = read_days(storage, METRICS, start, end, time_column="timestamp")
    if table is None:
        return []
    rows = []
    for row in table.to_pylist():
        value = row["value"]
        rows.append((_iso(row["timestamp"]), row["entity"], row["metric"], value, row["labels"], row["source"]))
    return rows


def values(storage, start=DAY, end=NEXT_DAY) -> list[tuple]:
    """``(iso time, entity, metric, value)`` of the curated rows."""
    return [row[:4] for row in curated_rows(storage, start, end)]


def quarantined(storage, day=DAY) -> list[tuple]:
    """``(source name, line, reason, raw)`` of the quarantine partition of ``day``."""
    table = read_days(storage, QUARANTINE, day, day + pd.Timedelta(days=1))
    if table is None:
        return []
    return [(row["source"].rsplit("/", 1)[-1], row["line"], row["reason"], row["raw"]) for row in table.to_pylist()]


def labels(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _iso(stamp) -> str:
    return pd.Timestamp(stamp).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
