"""Partitioned Parquet tables of the lake, replaced slice by slice.

A table lives under ``<table>/date=YYYY-MM-DD[/group=NAME]/``. A run over the
data interval ``[start, end)`` cuts it into one *slice* per UTC day and writes
each slice as ``part-HHMMSS-HHMMSS.parquet`` (start and end time within the
day, ``240000`` for midnight). Writing a slice deletes the other files of the
partition whose time range overlaps it, so rerunning an interval, or scoring a
range at once after scoring it day by day, replaces rows instead of adding
them. A daily run writes exactly one file per day and partition.
"""

from __future__ import annotations

import logging
import re

import pandas as pd
import pyarrow as pa

from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)

_PART = re.compile(r"part-(\d{6})-(\d{6})\.parquet$")


def utc(value) -> pd.Timestamp:
    """Parse ``value`` as a time-zone-aware timestamp and convert it to UTC."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"Timestamp {value!r} has no time zone; give it in UTC, e.g. 2026-09-01T00:00:00Z.")
    return stamp.tz_convert("UTC")


def day_slices(start, end) -> list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]:
    """Cut ``[start, end)`` at UTC midnights into ``(day, slice_start, slice_end)``.

    >>> [(d.day, s.hour, e.hour) for d, s, e in day_slices("2026-09-01T12:00Z", "2026-09-02T06:00Z")]
    [(1, 12, 0), (2, 0, 6)]
    """
    start, end = utc(start), utc(end)
    if end <= start:
        raise ValueError(f"Empty data interval: start {start.isoformat()} is not before end {end.isoformat()}.")
    slices = []
    day = start.floor("D")
    while day < end:
        next_day = day + pd.Timedelta(days=1)
        slices.append((day, max(start, day), min(end, next_day)))
        day = next_day
    return slices


def partition(table: str, day: pd.Timestamp, group: str | None = None) -> str:
    prefix = f"{table}/date={day.strftime('%Y-%m-%d')}"
    return f"{prefix}/group={escape_segment(group)}" if group is not None else prefix


def _seconds_in_day(stamp: pd.Timestamp, day: pd.Timestamp) -> int:
    return int((stamp - day).total_seconds())


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}{seconds % 3600 // 60:02d}{seconds % 60:02d}"


def _parse_clock(text: str) -> int:
    return int(text[:2]) * 3600 + int(text[2:4]) * 60 + int(text[4:])


def write_slice(storage: Storage, table: str, day, slice_start, slice_end, data: pa.Table, group: str | None = None) -> str:
    """Publish ``data`` as the slice ``[slice_start, slice_end)`` of ``day``; return its key."""
    prefix = partition(table, day, group)
    first, last = _seconds_in_day(slice_start, day), _seconds_in_day(slice_end, day)
    key = f"{prefix}/part-{_clock(first)}-{_clock(last)}.parquet"
    storage.write_parquet(key, data)
    for other in storage.list(prefix + "/"):
        if other == key or "/" in other[len(prefix) + 1 :]:
            continue
        match = _PART.search(other)
        if match and _parse_clock(match.group(1)) < last and first < _parse_clock(match.group(2)):
            log.info("Replaced overlapping slice %s", other)
            storage.delete(other)
    return key


def read_days(storage: Storage, table: str, start, end, group: str | None = None) -> pa.Table | None:
    """Read every slice file of the days ``[start, end)`` touches (all groups when ``group`` is None)."""
    tables = []
    for day, _, _ in day_slices(start, end):
        prefix = partition(table, day, group)
        for key in storage.list(prefix + "/"):
            if _PART.search(key):
                tables.append(storage.read_parquet(key))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def missing_slices(storage: Storage, table: str, start, end, group: str | None = None) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Return the parts of ``[start, end)`` that no slice file of ``table`` covers, as ``(start, end)`` pairs.

    A slice written for a day, even with zero rows, counts as covered: it
    means the step ran for that time.

    >>> from lstmae.storage import LocalStorage
    >>> import tempfile
    >>> lake = LocalStorage(tempfile.mkdtemp())
    >>> _ = write_slice(lake, "metrics", utc("2026-09-01T00:00Z"), utc("2026-09-01T00:00Z"),
    ...                 utc("2026-09-01T12:00Z"), pa.table({"x": [1]}))
    >>> [(s.hour, e.day, e.hour) for s, e in missing_slices(lake, "metrics", "2026-09-01T00:00Z", "2026-09-02T06:00Z")]
    [(12, 2, 6)]
    """
    missing = []
    for day, slice_start, slice_end in day_slices(start, end):
        covered = []
        prefix = partition(table, day, group)
        for key in storage.list(prefix + "/"):
            match = _PART.search(key)
            if match and "/" not in key[len(prefix) + 1 :]:
                covered.append((day + pd.Timedelta(seconds=_parse_clock(match.group(1))),
                                day + pd.Timedelta(seconds=_parse_clock(match.group(2)))))
        cursor = slice_start
        for low, high in sorted(covered):
            if low > cursor:
                break
            cursor = max(cursor, high)
            if cursor >= slice_end:
                break
        if cursor < slice_end:
            if missing and missing[-1][1] == cursor:
                missing[-1] = (missing[-1][0], slice_end)
            else:
                missing.append((cursor, slice_end))
    return missing
