"""Helpers of the ingest tests: a configuration, a run, the curated and quarantined rows as plain tuples, and a curated fleet."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd

from lstmae.config import config_from_dict
from lstmae.ingest import METRICS, QUARANTINE, ingest_interval
from lstmae.lake import day_slices, read_days, write_slice

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


def write_curated_sine(storage, start: pd.Timestamp, entities: dict[str, int], days: int,
                       cpu_spikes: dict[str, tuple[pd.Timestamp, pd.Timestamp]] | None = None) -> None:
    """Write curated cpu and memory rows on a 5-minute grid, one slice per day, without ingest.

    Each entity's values are a daily sine shifted by its seed plus noise from
    ``numpy.random.default_rng(seed)`` (cpu around 0.5, memory around 0.3).
    ``cpu_spikes`` adds 2.0 to an entity's cpu in ``[begin, end)``.
    """
    from lstmae.ingest import curated_table

    index = pd.date_range(start, periods=days * 288, freq="5min")
    phase = 2 * np.pi * (index.hour * 60 + index.minute) / 1440
    rows = []
    for entity, seed in entities.items():
        rng = np.random.default_rng(seed)
        for metric, level in (("cpu", 0.5), ("memory", 0.3)):
            values = level + 0.1 * np.sin(phase + seed) + rng.normal(0, 0.01, len(index))
            if metric == "cpu" and entity in (cpu_spikes or {}):
                begin, end = cpu_spikes[entity]
                values = np.where((index >= begin) & (index < end), values + 2.0, values)
            rows.append(pd.DataFrame({"timestamp": index, "entity": entity, "metric": metric, "value": values,
                                      "labels": None, "source": "test"}))
    frame = pd.concat(rows, ignore_index=True)
    for day, slice_start, slice_end in day_slices(start, start + pd.Timedelta(days=days)):
        part = frame[(frame["timestamp"] >= slice_start) & (frame["timestamp"] < slice_end)]
        write_slice(storage, METRICS, day, slice_start, slice_end, curated_table(part))
