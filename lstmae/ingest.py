"""Ingest: landing objects of a data interval → curated Parquet partitions by date.

Landing layout: ``landing/date=YYYY-MM-DD/[...]/<object>``, one folder per UTC
day in which the exporter wrote (subfolders such as ``hour=HH/`` are read
too). :mod:`lstmae.formats` parses every supported export format into samples
of the curated schema (:data:`lstmae.schema.CURATED`).

Where each sample ends up, for a run over ``[start, end)``:

- *curated*: its timestamp is inside the interval and in the landing day of
  its object (or up to ``ingest.late_days`` before it). Duplicates of
  ``(entity, metric, timestamp)`` keep the last sample, in landing-key order
  and then record order, and are counted as *deduplicated*;
- *quarantined* (``quarantine/date=D/``, with the reason): the sample cannot
  be used (bad timestamp, value that is no finite number, no entity, ...) or
  its timestamp lies outside the landing day of its object;
- *other intervals*: a good sample of the same landing days that belongs to
  another interval (only with intervals shorter than a day). It is neither
  read nor quarantined here; the run of its own interval curates it.

An object that cannot be parsed at all (corrupt gzip, an HTML error page,
zero bytes, a ``_temporary/`` leftover of an unfinished upload) is
quarantined whole with its reason, and the rest of the interval still
ingests. Markers such as ``_SUCCESS`` are skipped and listed in the report.

The counts always add up: ``rows_read == rows_curated + rows_deduplicated +
rows_quarantined``. The quarantine partition of a landing day is a function
of that folder alone, so every run that reads the folder rewrites it with
the same content.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lstmae import schema
from lstmae.config import Config
from lstmae.formats import ParseError, parse_object
from lstmae.formats.common import MS_PER_DAY, NOT_IN_LANDING_DAY, PARSER_FAILURE, Parsed, text_codes
from lstmae.lake import day_slices, read_days, utc as _utc, write_companion, write_slice
from lstmae.storage import Storage

log = logging.getLogger(__name__)

LANDING = "landing"
METRICS = "metrics"
QUARANTINE = "quarantine"
REPORT_STEM = "_ingest_report"
TEMPORARY_OBJECT = "temporary object of an unfinished upload (_temporary/)"
VANISHED_OBJECT = "deleted between listing and reading"
_LISTED_OBJECTS = 200  # objects listed by name in a report; the counts are always complete


def landing_prefix(day: pd.Timestamp) -> str:
    return f"{LANDING}/date={day.strftime('%Y-%m-%d')}/"


@dataclass
class IngestReport:
    """Counts of one ingest run, written next to each partition as JSON and logged.

    A *row* is one sample: one value of one metric of one entity at one time
    (a wide CSV line with five metric columns is five rows).

    Attributes:
        start, end: the data interval, ISO 8601 UTC.
        days: the UTC days of the interval, whose landing folders and
            partitions this run owns.
        objects: objects listed in the run's own landing folders.
        objects_by_format: parsed objects per export format.
        objects_quarantined: objects quarantined whole.
        objects_quarantined_by_reason: the same, per reason.
        objects_skipped: markers that are not exports (``_SUCCESS``).
        objects_late: objects of later folders read for ``ingest.late_days``.
        rows_read: samples read that belong to this interval or are rejected.
        rows_curated: samples written to the curated partitions.
        rows_deduplicated: samples dropped as duplicates (an earlier sample of
            the same entity, metric and timestamp).
        rows_deduplicated_other_labels: of rows_deduplicated, samples whose
            labels differ from those of the sample kept (the same key from
            two objects with other labels; within one object such samples
            are quarantined instead).
        rows_quarantined: samples written to the quarantine table.
        quarantined_by_reason: rows_quarantined per reason.
        rows_other_intervals: good samples of the landing folders that belong
            to another interval; not part of rows_read.
        rows_in_failed_objects: records held by objects quarantined whole
            as ``parser failure``, where they could be counted; not part of
            rows_read, because none of them was read as a sample.
        partitions: curated rows per day.
        quarantined_objects, skipped_objects: ``{"key", "reason"}`` of the
            first 200 objects each.
        seconds: wall time of the run.
    """

    start: str
    end: str
    days: list[str] = field(default_factory=list)
    objects: int = 0
    objects_by_format: dict[str, int] = field(default_factory=dict)
    objects_quarantined: int = 0
    objects_quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    objects_skipped: int = 0
    objects_late: int = 0
    rows_read: int = 0
    rows_curated: int = 0
    rows_deduplicated: int = 0
    rows_deduplicated_other_labels: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    rows_other_intervals: int = 0
    rows_in_failed_objects: int = 0
    partitions: dict[str, int] = field(default_factory=dict)
    quarantined_objects: list[dict] = field(default_factory=list)
    skipped_objects: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def _quarantine_object(self, key: str, reason: str, detail: str) -> None:
        self.objects_quarantined += 1
        self.objects_quarantined_by_reason[reason] = self.objects_quarantined_by_reason.get(reason, 0) + 1
        if len(self.quarantined_objects) < _LISTED_OBJECTS:
            self.quarantined_objects.append({"key": key, "reason": reason, "detail": detail})

    def _skip_object(self, key: str, reason: str) -> None:
        self.objects_skipped += 1
        if len(self.skipped_objects) < _LISTED_OBJECTS:
            self.skipped_objects.append({"key": key, "reason": reason})


class _Quarantine:
    """Quarantine entries per landing day, as columns of :data:`schema.QUARANTINE`."""

    def __init__(self, days):
        self.columns = {day: {"source": [], "line": [], "reason": [], "raw": []} for day in days}
        self.chunks: dict = {day: [] for day in days}

    def add(self, day, source: str, line, reason: str, raw) -> None:
        columns = self.columns[day]
        columns["source"].append(source)
        columns["line"].append(line)
        columns["reason"].append(reason)
        columns["raw"].append(raw)

    def add_table(self, day, table: pa.Table) -> None:
        """Add many entries at once (a table of :data:`schema.QUARANTINE`)."""
        self.chunks[day].append(table)

    def table(self, day) -> pa.Table:
        single = pa.Table.from_pydict(self.columns[day], schema=schema.QUARANTINE)
        return pa.concat_tables([single, *self.chunks[day]])


def _object_kind(key: str) -> str | None:
    """``"temporary"`` for upload leftovers, ``"marker"`` for markers, None for an export."""
    parts = key.split("/")
    if any(part in ("_temporary", "_temp", ".temporary") for part in parts[:-1]):
        return "temporary"
    name = parts[-1]
    if name.startswith("_") or name.endswith((".crc", ".tmp", ".swp")) or name.startswith("."):
        return "marker"
    return None


def ingest_interval(storage: Storage, config: Config, start, end) -> IngestReport:
    """Ingest the landing objects of ``[start, end)`` and publish one slice per UTC day.

    Reads ``landing/date=D/`` for every day D the interval touches (and the
    ``ingest.late_days`` folders after it), replaces the slice of each day in
    ``metrics/date=D/`` (zero rows for a day without data), rewrites
    ``quarantine/date=D/`` and writes the report as
    ``metrics/date=D/_ingest_report-HHMMSS-HHMMSS.json``.

    Memory: objects are read a few at a time, and their samples are
    deduplicated and written in batches of about :data:`BATCH_ROWS` rows
    while the batches hold separate entities in ascending order (one object
    per host, the usual layout), so memory does not grow with the number of
    hosts. When a batch contains an entity that an earlier batch already wrote
    (exports that mix entities), the written rows are read back and the rest
    of the interval is deduplicated as one table; the output is the same.

    Returns:
        The :class:`IngestReport` of the run.

    Raises:
        ValueError: ``start`` or ``end`` has no time zone, or ``end <= start``.
        OSError: the lake cannot be read or written (after the storage's retries).
    """
    started = time.monotonic()
    start, end = _utc(start), _utc(end)
    slices = day_slices(start, end)
    own_days = [day for day, _, _ in slices]
    late_days = config.ingest.late_days
    folders = sorted({day + pd.Timedelta(days=k) for day in own_days for k in range(late_days + 1)})
    report = IngestReport(start=start.isoformat(), end=end.isoformat(), days=[d.strftime("%Y-%m-%d") for d in own_days])
    quarantine = _Quarantine(own_days)
    window = _Window(_millis(start), _millis(end), late_days)

    exports: list[tuple[pd.Timestamp, bool, str]] = []
    for folder in folders:
        own = folder in own_days
        for key in storage.list(landing_prefix(folder)):
            kind = _object_kind(key)
            if not own:
                if kind is None:
                    report.objects_late += 1
                    exports.append((folder, own, key))
                continue
            report.objects += 1
            if kind == "temporary":
                log.warning("Quarantined %s: %s", key, TEMPORARY_OBJECT)
                report._quarantine_object(key, TEMPORARY_OBJECT, "")
                quarantine.add(folder, key, None, TEMPORARY_OBJECT, None)
            elif kind == "marker":
                report._skip_object(key, "marker object, not an export")
            else:
                exports.append((folder, own, key))

    curated = _Curated(storage, slices)
    try:
        for (folder, own, key), loaded in _load_all(storage, exports, config, window):
            parsed, reason, detail, held, routed = loaded
            if parsed is None:
                if own and reason == VANISHED_OBJECT:
                    report._skip_object(key, reason)
                elif own:
                    log.warning("Quarantined %s: %s%s", key, reason, f" ({detail})" if detail else "")
                    report._quarantine_object(key, reason, detail)
                    report.rows_in_failed_objects += held or 0
                    quarantine.add(folder, key, None, reason, detail or None)
                continue
            report.objects_by_format[parsed.format] = report.objects_by_format.get(parsed.format, 0) + 1
            _count_routed(parsed, routed, key, folder, own, report, quarantine)
            if routed.table.num_rows:
                curated.add(routed.table, routed.order)
        report.partitions = curated.finish()
    except BaseException:
        curated.abort()
        raise
    report.rows_deduplicated = curated.duplicates
    report.rows_deduplicated_other_labels = curated.other_labels.count
    curated.other_labels.log()
    report.rows_curated = int(sum(report.partitions.values()))
    for day in own_days:
        write_slice(storage, QUARANTINE, day, day, day + pd.Timedelta(days=1), quarantine.table(day))
    report.seconds = round(time.monotonic() - started, 3)
    _check_counts(report)
    payload = json.dumps(report.to_dict(), indent=2, sort_keys=True).encode()
    for day, slice_start, slice_end in slices:
        write_companion(storage, METRICS, day, slice_start, slice_end, REPORT_STEM, payload)
    _log_report(report)
    return report


def _threads() -> int:
    """Objects read and parsed at once: ``$LSTMAE_INGEST_THREADS``, else the number of CPUs up to 8."""
    setting = os.environ.get("LSTMAE_INGEST_THREADS")
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise ValueError(f"Invalid LSTMAE_INGEST_THREADS {setting!r}: expected a positive integer.") from None
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class _Window:
    """The run's interval and landing-day rule, in UTC milliseconds."""

    start_ms: int
    end_ms: int
    late_days: int


@dataclass
class _Routed:
    """Routing of one parsed object's samples (computed on a worker thread).

    Attributes:
        table: the samples of this interval, with their ``source`` column.
        outside: quarantine entries of samples outside their landing day
            (own folders only), or None.
        other_intervals: good samples of another interval (own folders only).
        order: see :class:`_Order`.
    """

    table: pa.Table
    outside: pa.Table | None
    other_intervals: int
    order: "_Order"


@dataclass(frozen=True)
class _Order:
    """Key order of one object's samples, found on the worker thread while they are in cache.

    Attributes:
        increasing: the ``(entity, metric, timestamp)`` keys strictly
            increase from row to row: sorted, without duplicates.
        first, last: the keys of the first and the last row, None without rows.
    """

    increasing: bool
    first: tuple | None
    last: tuple | None


def _load_all(storage: Storage, exports: list, config: Config, window: _Window):
    """Yield ``(entry, loaded)`` per export in listing order, reading and parsing a few objects ahead.

    Objects are read and parsed on a thread pool, because reads wait on the
    network and pyarrow and zlib release the GIL. At most two objects per
    thread are in flight, so parsed objects never pile up in memory when
    the writing falls behind. Results come in listing order, so the outcome
    does not depend on the number of threads.
    """
    threads = _threads()
    pending: deque = deque()
    entries = iter(exports)
    with ThreadPoolExecutor(max_workers=threads) as pool:

        def submit() -> None:
            entry = next(entries, None)
            if entry is not None:
                pending.append((entry, pool.submit(_load, storage, entry, config, window)))

        for _ in range(2 * threads):
            submit()
        try:
            while pending:
                entry, future = pending.popleft()
                submit()
                yield entry, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _load(storage: Storage, entry: tuple, config: Config, window: _Window):
    """Read, parse and route one object.

    Returns:
        ``(parsed, "", "", None, routed)``, or ``(None, reason, detail,
        records held, None)`` for an object that cannot be used.

    Storage errors other than a vanished object propagate: the run fails and
    is retried, because a missing read must not look like a bad export.
    """
    folder, own, key = entry
    try:
        data = storage.read_bytes(key)
    except FileNotFoundError:
        log.warning("Skipped %s: deleted between listing and reading", key)
        return None, VANISHED_OBJECT, "", None, None
    try:
        parsed = parse_object(key, data, config)
    except ParseError as error:
        return None, error.reason, error.detail, error.rows, None
    except Exception as error:  # a parser bug must not stop the other objects of the interval
        log.exception("Parser failed on %s", key)
        return None, PARSER_FAILURE, f"{type(error).__name__}: {error}"[:500], None, None
    del data
    return parsed, "", "", None, _route(parsed, key, folder, own, window)


def _route(parsed: Parsed, key: str, folder, own: bool, window: _Window) -> _Routed:
    """Split the samples of ``parsed`` into this interval's, those outside their landing day, and the rest."""
    table = parsed.table
    millis = table.column("timestamp").cast(pa.int64()).to_numpy()
    folder_day = _millis(folder) // MS_PER_DAY
    low_ms, high_ms = (folder_day - window.late_days) * MS_PER_DAY, (folder_day + 1) * MS_PER_DAY
    in_landing = (millis >= low_ms) & (millis < high_ms)
    in_interval = (millis >= window.start_ms) & (millis < window.end_ms)
    outside, other_intervals = None, 0
    if own:
        if not in_landing.all():
            outside = _outside_landing_day(table.filter(pa.array(~in_landing)), key)
        other_intervals = int(np.count_nonzero(in_landing & ~in_interval))
    keep = in_landing & in_interval
    if not keep.all():
        table = table.filter(pa.array(keep))
        millis = millis[keep]
    source = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([key]), safe=False)
    return _Routed(table.append_column("source", source), outside, other_intervals, _order(table, millis))


def _order(table: pa.Table, millis: np.ndarray) -> _Order:
    """Find whether the keys of ``table`` strictly increase, and its first and last key (``millis``: its times)."""
    count = table.num_rows
    if count == 0:
        return _Order(True, None, None)
    entity, entity_names = _ranks(table.column("entity"))
    metric, metric_names = _ranks(table.column("metric"))
    if entity is None or metric is None:
        return _Order(False, None, None)
    first = (entity_names[entity[0]], metric_names[metric[0]], int(millis[0]))
    last = (entity_names[entity[-1]], metric_names[metric[-1]], int(millis[-1]))
    if len(entity_names) == 1:
        series = metric  # one entity, as in a wide export
    else:
        series = entity.astype(np.int64) * len(metric_names) + metric
    series_step, time_step = np.diff(series), np.diff(millis)
    increasing = bool(((series_step > 0) | ((series_step == 0) & (time_step > 0))).all())
    return _Order(increasing, first, last)


def _ranks(column: pa.ChunkedArray) -> tuple[np.ndarray | None, list[str]]:
    """Return each row's rank among the column's distinct names (code point order) and those names.

    The ranks are None when a row or a dictionary entry is null.
    """
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    names = array.dictionary.to_pylist()
    if array.null_count or None in names:
        return None, []
    distinct = sorted(set(names))
    if len(distinct) == 1:
        return np.zeros(len(array), dtype=np.int32), distinct
    rank = {name: position for position, name in enumerate(distinct)}
    mapping = np.array([rank[name] for name in names], dtype=np.int32)
    return mapping[array.indices.to_numpy()], distinct


def _count_routed(parsed: Parsed, routed: _Routed, key: str, folder, own: bool, report: IngestReport, quarantine) -> None:
    """Count and quarantine what one object rejected (in listing order, on the main thread)."""
    if own:
        rejects = parsed.rejects
        for line, reason, raw in zip(rejects.lines, rejects.reasons, rejects.raws):
            quarantine.add(folder, key, line, reason, raw)
            report.quarantined_by_reason[reason] = report.quarantined_by_reason.get(reason, 0) + 1
        outside = routed.outside.num_rows if routed.outside is not None else 0
        if outside:
            quarantine.add_table(folder, routed.outside)
            report.quarantined_by_reason[NOT_IN_LANDING_DAY] = report.quarantined_by_reason.get(NOT_IN_LANDING_DAY, 0) + outside
        report.rows_quarantined += len(rejects) + outside
        report.rows_read += len(rejects) + outside
        report.rows_other_intervals += routed.other_intervals
    report.rows_read += routed.table.num_rows


def _outside_landing_day(rows: pa.Table, key: str) -> pa.Table:
    """Quarantine entries for samples outside their landing day; raw is ``timestamp,entity,metric,value``."""
    count = rows.num_rows
    raw = pc.binary_join_element_wise(
        # Cast without the time zone: Arrow formats naive timestamps about ten times faster.
        pc.binary_join_element_wise(rows.column("timestamp").cast(pa.timestamp("ms")).cast(pa.string()), pa.scalar("Z"), ""),
        rows.column("entity").cast(pa.string()),
        rows.column("metric").cast(pa.string()),
        pc.fill_null(rows.column("value").cast(pa.string()), ""),
        ",",
    )
    return pa.Table.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(count, dtype=np.int32)), pa.array([key])).cast(pa.string()),
            pa.nulls(count, pa.int64()),
            pa.array([NOT_IN_LANDING_DAY] * 1, type=pa.string()).take(pa.array(np.zeros(count, dtype=np.int64))),
            raw,
        ],
        schema=schema.QUARANTINE,
    )


# Accepted samples are deduplicated and written this many rows at a time
# (about one Parquet row group) while the batches hold separate entities.
BATCH_ROWS = 1 << 20


class _OtherLabels:
    """Duplicates whose labels differ from the sample kept: a count and the first example, logged once."""

    def __init__(self):
        self.count = 0
        self.example: tuple | None = None

    def add(self, count: int, example: tuple | None) -> None:
        self.count += count
        if self.example is None:
            self.example = example

    def log(self) -> None:
        if self.count:
            log.warning(
                "%d duplicate samples carry other labels than the sample kept, e.g. %s (%s) and %s (%s) for %s %s: "
                "distinct series whose metric name is the same; include the label that tells them apart in the metric "
                "name template (ingest.metric_name, influx_metric_name or cloudwatch_metric_name)",
                self.count, *self.example,
            )


class _Curated:
    """Accepted samples of a run: deduplicated, sorted and written to one slice file per day.

    Samples come object by object in listing order. While every batch of
    about :data:`BATCH_ROWS` rows contains only entities above those of the
    batches before it, each batch is deduplicated and sorted on its own and
    appended to the slice files as a row group, so the run keeps one batch
    in memory at a time. The files are then exactly what one sort of all samples
    would write. The first batch that breaks the order switches to that one
    sort: the rows written so far are read back, together with the
    duplicates their batches dropped, and everything else is kept until
    :meth:`finish`.
    """

    def __init__(self, storage: Storage, slices):
        self.storage = storage
        self.slices = slices
        self.pending: list[pa.Table] = []
        self.orders: list[_Order] = []
        self.pending_rows = 0
        self.whole: list[pa.Table] | None = None  # set once batches overlap
        self.last_entity: str | None = None
        self.files: dict = {}  # day -> (path, ParquetWriter)
        self.rows: dict = {}  # day -> rows written
        self.dropped: list[pa.Table] = []  # duplicates removed from written batches, in listing order per key
        self.duplicates = 0
        self.other_labels = _OtherLabels()

    def add(self, table: pa.Table, order: "_Order | None" = None) -> None:
        self.pending.append(table)
        self.orders.append(order)
        self.pending_rows += table.num_rows
        if self.whole is None and self.pending_rows >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        batch, duplicates, other_labels, dropped = _deduplicate(self.pending, self.orders)
        if not batch.num_rows:
            self._clear()
            return
        entity = batch.column("entity")
        first, last = entity[0].as_py(), entity[-1].as_py()
        if self.last_entity is not None and first <= self.last_entity:
            log.info("Landing objects share entities across batches (%r after %r); deduplicating the interval as one table",
                     first, self.last_entity)
            self.whole = self._read_back() + self.pending
            self._clear()
            return
        self.duplicates += duplicates
        self.other_labels.add(*other_labels)
        if dropped is not None:
            self.dropped.append(dropped)
        self.last_entity = last
        self._write(batch)
        self._clear()

    def _clear(self) -> None:
        self.pending, self.orders, self.pending_rows = [], [], 0

    def _write(self, batch: pa.Table) -> None:
        """Append a deduplicated, sorted batch to the slice file of each day."""
        millis = batch.column("timestamp").cast(pa.int64()).to_numpy() if len(self.slices) > 1 else None
        for day, slice_start, slice_end in self.slices:
            part = batch
            if millis is not None:
                part = batch.filter(pa.array((millis >= _millis(slice_start)) & (millis < _millis(slice_end))))
            if not part.num_rows:
                continue
            if day not in self.files:
                handle, path = tempfile.mkstemp(prefix="lstmae-curated-", suffix=".parquet")
                os.close(handle)
                try:
                    writer = pq.ParquetWriter(path, _CURATED_DICTIONARY, **CURATED_PARQUET)
                except BaseException:
                    os.unlink(path)
                    raise
                self.files[day] = (path, writer)
                self.rows[day] = 0
            table = _curated_dictionary_table(part)
            # Row groups of about BATCH_ROWS rows: one per batch, several for the single sort.
            groups = max(1, round(table.num_rows / BATCH_ROWS))
            self.files[day][1].write_table(table, row_group_size=-(-table.num_rows // groups))
            self.rows[day] += table.num_rows

    def _read_back(self) -> list[pa.Table]:
        """Return the rows written so far, preceded by the duplicates their batches dropped, and remove the files."""
        tables = list(self.dropped)
        for day, (path, writer) in sorted(self.files.items()):
            writer.close()
            table = pq.read_table(path, read_dictionary=_TEXT_COLUMNS)
            tables.append(table.select(_ACCEPTED_COLUMNS).cast(_empty_accepted().schema))
            os.unlink(path)
        self.files, self.rows, self.dropped = {}, {}, []
        self.duplicates, self.other_labels = 0, _OtherLabels()
        return tables

    def finish(self) -> dict[str, int]:
        """Write what is left, publish one slice per day; return the curated rows per day."""
        if self.whole is None and self.pending:
            self._flush()
        if self.whole is not None:
            curated, self.duplicates, other_labels, _ = _deduplicate(self.whole + self.pending)
            self.other_labels.add(*other_labels)
            self.whole = None
            self._clear()
            self._write(curated)
            del curated
        partitions = {}
        for day, slice_start, slice_end in self.slices:
            if day in self.files:
                path, writer = self.files.pop(day)
                try:
                    writer.close()
                    with open(path, "rb") as stream:
                        data = stream.read()
                finally:
                    os.unlink(path)
                # The finished file is published as bytes in one write. It takes
                # about 15 % of the memory of its rows (11 MB for 200 hosts and a day).
                write_slice(self.storage, METRICS, day, slice_start, slice_end, data, time_column="timestamp")
                del data
                rows = self.rows[day]
            else:
                table = _curated_dictionary_table(_empty_accepted())
                write_slice(self.storage, METRICS, day, slice_start, slice_end, table, time_column="timestamp",
                            parquet_options=CURATED_PARQUET)
                rows = 0
            partitions[day.strftime("%Y-%m-%d")] = rows
        return partitions

    def abort(self) -> None:
        """Remove the slice files without publishing them (the run failed)."""
        for path, writer in self.files.values():
            try:
                writer.close()
            finally:
                if os.path.exists(path):
                    os.unlink(path)
        self.files = {}


def _deduplicate(tables: list[pa.Table], orders: list | None = None) -> tuple[pa.Table, int, tuple[int, tuple | None], pa.Table | None]:
    """Concatenate, sort by (entity, metric, timestamp) and keep the last of each duplicate key.

    Args:
        tables: accepted samples, in listing order.
        orders: the :class:`_Order` of each table, or None where unknown.
            When every table's keys increase and each table starts above
            the end of the one before, the rows are already sorted and
            unique, and nothing is compared row by row.

    Returns:
        ``(table, duplicates, (other_labels, example), dropped)``: the kept
        rows (entity and metric dictionaries sorted), the number of rows
        dropped, how many of those carry other labels than the row kept
        (with one example for the log), and the dropped rows (None when
        there are none).
    """
    if not tables:
        return _empty_accepted(), 0, (0, None), None
    # Chunks stay as they are (one per object, sharing unified dictionaries);
    # only the entity and metric codes are combined, to be sorted.
    table = pa.concat_tables(tables).unify_dictionaries()
    if _increasing(orders):
        for position, name in ((1, "entity"), (2, "metric")):
            column = table.column(name)
            names = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
            if None in names or not all(low < high for low, high in zip(names, names[1:])):
                table = table.set_column(position, name, _sorted_codes(column.combine_chunks())[1])
        return table, 0, (0, None), None
    entity_codes, entity = _sorted_codes(table.column("entity").combine_chunks())
    metric_codes, metric = _sorted_codes(table.column("metric").combine_chunks())
    millis = table.column("timestamp").cast(pa.int64()).to_numpy()
    table = table.set_column(1, "entity", entity).set_column(2, "metric", metric)
    # One int64 code per series, ordered as (entity, metric).
    series = entity_codes.astype(np.int64) * max(len(metric.dictionary), 1) + metric_codes
    series_step, time_step = np.diff(series), np.diff(millis)
    if not _is_sorted(series_step, time_step):
        keys = pa.table({"s": series, "t": millis})
        order = pc.sort_indices(keys, sort_keys=[("s", "ascending"), ("t", "ascending")])
        table = table.take(order)
        order = order.to_numpy()
        series, millis = series[order], millis[order]
        series_step, time_step = np.diff(series), np.diff(millis)
    same_as_next = (series_step == 0) & (time_step == 0)
    duplicates = int(np.count_nonzero(same_as_next))
    if not duplicates:
        return table, 0, (0, None), None
    other_labels = _other_labels(table, same_as_next)
    # The sort is stable, so the last of equal keys is the last sample read.
    dropped = np.append(same_as_next, False)
    return table.filter(pa.array(~dropped)), duplicates, other_labels, table.filter(pa.array(dropped))


def _other_labels(table: pa.Table, same_as_next: np.ndarray) -> tuple[int, tuple | None]:
    """Count the duplicates whose labels differ from the sample kept, with one example; the table is sorted by key."""
    dropped = np.flatnonzero(same_as_next)
    is_last = ~np.append(same_as_next, False)
    group = np.concatenate([[0], np.cumsum(is_last[:-1])])
    kept = np.flatnonzero(is_last)[group[dropped]]
    labels = table.column("labels")
    mine = labels.take(pa.array(dropped)).cast(pa.string())
    theirs = labels.take(pa.array(kept)).cast(pa.string())
    differ = pc.fill_null(pc.not_equal(mine, theirs), True)
    both_null = pc.and_(pc.is_null(mine), pc.is_null(theirs))
    differ = np.asarray(pc.and_(differ, pc.invert(both_null)).to_numpy(zero_copy_only=False))
    count = int(differ.sum())
    if not count:
        return 0, None
    first = int(np.flatnonzero(differ)[0])
    example = (
        mine[first].as_py(), table.column("source")[int(dropped[first])].as_py(), theirs[first].as_py(),
        table.column("source")[int(kept[first])].as_py(), table.column("entity")[int(dropped[first])].as_py(),
        table.column("metric")[int(dropped[first])].as_py(),
    )
    return count, example


def _sorted_codes(array: pa.DictionaryArray) -> tuple[np.ndarray, pa.DictionaryArray]:
    """Codes into a sorted dictionary without duplicates (names are compared as Arrow strings, code point order)."""
    codes = text_codes(array)
    distinct = pc.unique(array.dictionary.cast(pa.string()).drop_null())
    distinct = distinct.take(pc.sort_indices(distinct))
    return codes, pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), distinct)


def _increasing(orders: list | None) -> bool:
    """Return whether tables with these :class:`_Order` contain strictly increasing keys, one table after the other."""
    if not orders or any(order is None or not order.increasing for order in orders):
        return False
    bounds = [order for order in orders if order.first is not None]
    return all(before.last < after.first for before, after in zip(bounds, bounds[1:]))


def _is_sorted(series_step: np.ndarray, time_step: np.ndarray) -> bool:
    """Return whether rows are ordered by series and then time, given the steps from each row to the next."""
    if series_step.size and series_step.min() < 0:
        return False
    return bool((time_step[series_step == 0] >= 0).all())


def _empty_accepted() -> pa.Table:
    from lstmae.formats.common import empty_table

    table = empty_table()
    return table.append_column("source", pa.array([], type=pa.dictionary(pa.int32(), pa.string())))


def _millis(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def _check_counts(report: IngestReport) -> None:
    """Fail loudly if a row was lost or counted twice (a bug, never bad input)."""
    accounted = report.rows_curated + report.rows_deduplicated + report.rows_quarantined
    if report.rows_read != accounted:
        raise RuntimeError(
            f"Ingest counts do not add up for {report.start}..{report.end}: {report.rows_read} rows read but "
            f"{report.rows_curated} curated + {report.rows_deduplicated} deduplicated + "
            f"{report.rows_quarantined} quarantined = {accounted}. This is a bug in lstmae; "
            "the partitions are written, keep the landing objects and report it."
        )


def _log_report(report: IngestReport) -> None:
    if report.rows_in_failed_objects:
        log.warning("%d records of objects quarantined as parser failures were not read", report.rows_in_failed_objects)
    log.info(
        "Ingested %s..%s: %d objects (%s), %d rows read, %d curated, %d deduplicated, %d quarantined, "
        "%d objects quarantined, %d skipped, %d rows of other intervals, in %.2f s",
        report.start, report.end, report.objects, report.objects_by_format or "none", report.rows_read,
        report.rows_curated, report.rows_deduplicated, report.rows_quarantined, report.objects_quarantined,
        report.objects_skipped, report.rows_other_intervals, report.seconds,
    )
    for reason, count in sorted(report.quarantined_by_reason.items()):
        log.info("Quarantined %d rows: %s", count, reason)
    for reason, count in sorted(report.objects_quarantined_by_reason.items()):
        log.info("Quarantined %d objects: %s", count, reason)
    log.info("Ingest report: %s", json.dumps(report.to_dict(), sort_keys=True))


# Dictionary-encoded text columns are written as they are (no hashing of
# every string) and, without the stored Arrow schema, read back as plain
# strings, so the files match schema.CURATED exactly. Timestamps are
# delta-encoded. Values are snappy-compressed: zstd makes them about 30 %
# smaller but takes three times as long, the largest single cost of ingest.
# Statistics are kept for the time and the entity: readers filter on both,
# and row groups are sorted by entity, so a reader can skip them. Metric
# statistics of a dictionary column cost as much as writing the column and
# could skip nothing, because every row group contains every metric.
CURATED_PARQUET = {
    "store_schema": False,
    "compression": {"timestamp": "zstd", "entity": "zstd", "metric": "zstd", "value": "snappy", "labels": "zstd",
                    "source": "zstd"},
    "use_dictionary": ["entity", "metric", "labels", "source"],
    "column_encoding": {"timestamp": "DELTA_BINARY_PACKED"},
    "write_statistics": ["timestamp", "entity", "value"],
}
_CURATED_DICTIONARY = pa.schema(
    [
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.type == pa.string() else f.type, nullable=f.nullable)
        for f in schema.CURATED
    ]
)


_TEXT_COLUMNS = ["entity", "metric", "labels", "source"]
_ACCEPTED_COLUMNS = ["timestamp", "entity", "metric", "value", "labels", "source"]


def _curated_dictionary_table(table: pa.Table) -> pa.Table:
    """Accepted samples in the column order of :data:`schema.CURATED`, text columns dictionary-encoded."""
    return pa.Table.from_arrays([table.column(f.name) for f in _CURATED_DICTIONARY], schema=_CURATED_DICTIONARY)


def curated_table(frame) -> pa.Table:
    """Convert curated rows (an Arrow table or a pandas DataFrame) to the fixed :data:`schema.CURATED` schema."""
    if isinstance(frame, pd.DataFrame):
        frame = frame.reset_index(drop=True)
        columns = {
            "timestamp": pa.array(pd.to_datetime(frame["timestamp"], utc=True)).cast(schema.TIMESTAMP),
            "entity": pa.array(frame["entity"].astype(str).tolist(), type=pa.string()),
            "metric": pa.array(frame["metric"].astype(str).tolist(), type=pa.string()),
            "value": pa.array(frame["value"].astype("float64"), type=pa.float64(), from_pandas=True),
            "labels": pa.array(frame["labels"].tolist() if "labels" in frame else [None] * len(frame), type=pa.string()),
            "source": pa.array(frame["source"].astype(str).tolist() if "source" in frame else [""] * len(frame), type=pa.string()),
        }
        return pa.Table.from_pydict(columns, schema=schema.CURATED)
    arrays = []
    for target in schema.CURATED:
        column = frame.column(target.name)
        arrays.append(column.cast(target.type))
    return pa.Table.from_arrays(arrays, schema=schema.CURATED)


def read_curated(storage: Storage, start, end, entities=None, metrics=None) -> pd.DataFrame:
    """Read curated rows with ``start <= timestamp < end`` from the daily partitions.

    Days never ingested have no files and yield no rows; callers that need
    complete data look for gaps on the grid.
    """
    start, end = _utc(start), _utc(end)
    table = read_days(storage, METRICS, start, end, time_column="timestamp")
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
