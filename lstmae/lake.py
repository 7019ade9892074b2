"""Partitioned Parquet tables of the lake, replaced slice by slice.

A table lives under ``<table>/date=YYYY-MM-DD[/group=NAME]/``. A run over the
data interval ``[start, end)`` cuts it into one *slice* per UTC day and writes
each slice as ``part-HHMMSS-HHMMSS.parquet`` (start and end time within the
day, ``240000`` for midnight). Writing a slice deletes the other files of the
partition whose time range overlaps it, so rerunning an interval, or scoring a
range at once after scoring it day by day, replaces rows instead of adding
them. A daily run writes exactly one file per day and partition.

Each file is published in one atomic write, but replacing overlapping slices
takes several. When the writer names the table's time column, the rows of an
older slice that lie outside the new one are first written as *remainder*
slices, then the new slice, and only then are the older files deleted. A
reader that names the time column (:func:`read_days`) takes each time from the
narrowest slice that covers it. It therefore sees, for every moment, either
the old rows or the new ones, also after a crash between the writes, and the
next run of the interval removes the leftovers.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def _slice_key(prefix: str, first: int, last: int) -> str:
    return f"{prefix}/part-{_clock(first)}-{_clock(last)}.parquet"


def _slices(storage: Storage, prefix: str) -> list[tuple[int, int, str]]:
    """``(first, last, key)`` of the slice files directly in the partition folder ``prefix``."""
    found = []
    for key in storage.list(prefix + "/"):
        if "/" in key[len(prefix) + 1 :]:
            continue
        match = _PART.search(key)
        if match:
            found.append((_parse_clock(match.group(1)), _parse_clock(match.group(2)), key))
    return found


def write_slice(
    storage: Storage,
    table: str,
    day,
    slice_start,
    slice_end,
    data: pa.Table | bytes | os.PathLike[str],
    group: str | None = None,
    time_column: str | None = None,
    parquet_options: dict | None = None,
) -> str:
    """Publish ``data`` as the slice ``[slice_start, slice_end)`` of ``day``; return its key.

    Args:
        data: the rows, or the path of a finished local Parquet file of them
            (as :class:`SliceWriter` writes), which is moved or copied, or
            the bytes of such a file, written as they are.
        time_column: the table's time column. When given, rows of an older
            slice that overlaps this one only in part are kept: the parts of
            it outside ``[slice_start, slice_end)`` are written as remainder
            slices before the older file is deleted. Without it an
            overlapping older slice is deleted whole.
        parquet_options: keyword arguments of ``pyarrow.parquet.write_table``
            for the new slice (zstd compression by default).
    """
    prefix = partition(table, day, group)
    first, last = _seconds_in_day(slice_start, day), _seconds_in_day(slice_end, day)
    key = _slice_key(prefix, first, last)
    overlapping = [
        (low, high, other) for low, high, other in _slices(storage, prefix) if other != key and low < last and first < high
    ]
    if time_column is not None:
        # Widest first, so that where remainders of two stale slices share a
        # name, the one from the narrower (newer) slice is written last.
        for low, high, other in sorted(overlapping, key=lambda item: item[0] - item[1]):
            if first <= low and high <= last:
                continue
            old = storage.read_parquet(other)
            seconds = _seconds_of(old.column(time_column), day)
            for piece_low, piece_high in ((low, first), (last, high)):
                if piece_low < piece_high:
                    mask = (seconds >= piece_low) & (seconds < piece_high)
                    storage.write_parquet(_slice_key(prefix, piece_low, piece_high), old.filter(pa.array(mask)))
                    log.info("Kept rows of %s outside the new slice as %s", other, _slice_key(prefix, piece_low, piece_high))
    if isinstance(data, pa.Table):
        storage.write_parquet(key, data, **(parquet_options or {}))
    elif isinstance(data, bytes):
        storage.write_bytes(key, data)
    else:
        storage.write_file(key, data)
    for _, _, other in overlapping:
        log.info("Replaced overlapping slice %s", other)
        storage.delete(other)
    return key


class SliceWriter:
    """Write one slice a row group at a time, and publish it on :meth:`close` as :func:`write_slice` does.

    Rows go to a local temporary Parquet file (zstd unless ``parquet_options``
    set another compression), one row group per :meth:`write` call, so the slice is
    never held whole in memory. :meth:`close` publishes the file in one
    atomic write, with the same replacement of overlapping slices as
    :func:`write_slice`. Leaving a ``with`` block by an exception, or
    :meth:`abort`, deletes the file and publishes nothing. A slice without
    rows is published as a file with the schema and no row group.

    Args:
        table_schema: the slice's schema; each written table is cast to it.
        Others as in :func:`write_slice`.
    """

    def __init__(self, storage: Storage, table: str, day, slice_start, slice_end, table_schema: pa.Schema,
                 group: str | None = None, time_column: str | None = None, parquet_options: dict | None = None):
        self._publish = (storage, table, day, slice_start, slice_end)
        self._group, self._time_column = group, time_column
        self.schema = table_schema
        self.rows = 0
        self.row_groups = 0
        handle, name = tempfile.mkstemp(prefix=f"lstmae-{table}-", suffix=".parquet")
        os.close(handle)
        self._path = Path(name)
        try:
            self._writer = pq.ParquetWriter(self._path, table_schema, **{"compression": "zstd", **(parquet_options or {})})
        except BaseException:
            self._path.unlink(missing_ok=True)
            raise
        self._open = True

    def write(self, data: pa.Table) -> None:
        """Append ``data`` as one row group. A table without rows is skipped."""
        if not self._open:
            raise ValueError(f"Slice writer of {self._publish[1]} is closed. Open a new SliceWriter to write again.")
        if data.num_rows == 0:
            return
        data = data.select(self.schema.names).cast(self.schema)
        self._writer.write_table(data, row_group_size=data.num_rows)
        self.rows += data.num_rows
        self.row_groups += 1

    def close(self) -> str | None:
        """Finish the file, publish it and return the slice's key (None when already closed or aborted)."""
        if not self._open:
            return None
        self._open = False
        try:
            self._writer.close()
            storage, table, day, slice_start, slice_end = self._publish
            return write_slice(storage, table, day, slice_start, slice_end, self._path, group=self._group,
                               time_column=self._time_column)
        finally:
            self._path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Delete the file without publishing it."""
        if self._open:
            self._open = False
            try:
                self._writer.close()
            finally:
                self._path.unlink(missing_ok=True)

    def __enter__(self) -> "SliceWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _seconds_of(column: pa.ChunkedArray, day: pd.Timestamp) -> "np.ndarray":
    """Seconds since the start of ``day`` of each timestamp (floor), as int64."""
    import numpy as np

    millis = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.floor_divide(millis - int(day.value // 1_000_000), 1000)


def write_companion(storage: Storage, table: str, day, slice_start, slice_end, stem: str, data: bytes) -> str:
    """Write a non-Parquet file for the slice (``<stem>-HHMMSS-HHMMSS.json``), replacing overlapping ones of the same stem."""
    prefix = partition(table, day)
    first, last = _seconds_in_day(slice_start, day), _seconds_in_day(slice_end, day)
    key = f"{prefix}/{stem}-{_clock(first)}-{_clock(last)}.json"
    storage.write_bytes(key, data)
    pattern = re.compile(re.escape(stem) + r"-(\d{6})(?:-(\d{6}))?\.json$")
    for other in storage.list(prefix + "/"):
        match = pattern.search(other)
        if other == key or match is None or "/" in other[len(prefix) + 1 :]:
            continue
        low = _parse_clock(match.group(1))
        high = _parse_clock(match.group(2)) if match.group(2) else low + 1
        if low < last and first < high:
            storage.delete(other)
    return key


def read_days(storage: Storage, table: str, start, end, group: str | None = None, time_column: str | None = None,
              columns: list[str] | None = None, filters=None, read_dictionary: list[str] | None = None) -> pa.Table | None:
    """Read every slice file of the days ``[start, end)`` touches (all groups when ``group`` is None).

    Args:
        time_column: the table's time column. When given and slices of one
            partition overlap (a replacement in progress or interrupted),
            each time is read from the narrowest slice that covers it.
        columns: read only these columns (default all). Where slices
            overlap, ``time_column`` is also read to choose the rows, and
            dropped again when ``columns`` leaves it out.
        filters: a row filter applied while each file is decoded, in the form
            of ``pyarrow.parquet.read_table(filters=...)`` (an expression or a
            list of ``(column, op, value)`` tuples); default none. Rows are
            dropped batch by batch, so a file's unfiltered columns are never
            held whole in memory.
        read_dictionary: columns to read as dictionary arrays (see
            ``pyarrow.parquet.read_table``); default none.
    """

    def read(key: str, with_time: bool = False) -> pa.Table:
        if columns is None and filters is None and read_dictionary is None:
            return storage.read_parquet(key)
        names = columns
        if with_time and columns is not None and time_column not in columns:
            names = [*columns, time_column]
        with storage.open_input(key) as source:
            return pq.read_table(source, columns=names, filters=filters, read_dictionary=read_dictionary)

    tables = []
    for day, _, _ in day_slices(start, end):
        prefix = partition(table, day, group)
        folders: dict[str, list[tuple[int, int, str]]] = {}
        for key in storage.list(prefix + "/"):
            match = _PART.search(key)
            if match:
                entry = (_parse_clock(match.group(1)), _parse_clock(match.group(2)), key)
                folders.setdefault(key.rsplit("/", 1)[0], []).append(entry)
        for slices in folders.values():
            if time_column is None or not _overlap(slices):
                tables.extend(read(key) for _, _, key in slices)
                continue
            claimed: list[tuple[int, int]] = []
            kept: dict[str, pa.Table] = {}
            for low, high, key in sorted(slices, key=lambda item: item[1] - item[0]):
                part = read(key, with_time=True)
                seconds = _seconds_of(part.column(time_column), day)
                keep = (seconds >= low) & (seconds < high)
                for taken_low, taken_high in claimed:
                    keep &= ~((seconds >= taken_low) & (seconds < taken_high))
                kept[key] = part.filter(pa.array(keep))
                claimed.append((low, high))
            merged = pa.concat_tables([kept[key] for _, _, key in sorted(slices)], promote_options="default")
            merged = merged.take(pc.sort_indices(merged, sort_keys=[(time_column, "ascending")]))
            if columns is not None and time_column not in columns:
                merged = merged.drop_columns([time_column])
            tables.append(merged)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def _overlap(slices: list[tuple[int, int, str]]) -> bool:
    ordered = sorted(slices)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))


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
