"""Parsing steps shared by every export format: timestamps, values, names and rejects.

Parsers turn one landing object into a :class:`Parsed`: an Arrow table of
samples in the curated shape plus the samples they rejected, each with a
reason from the fixed vocabulary below. Timestamps become UTC milliseconds
here, so that duplicates are detected at the precision the curated table
stores.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

# Reasons of rejected samples. Counts in the ingest report are keyed by them.
MISSING_TIMESTAMP = "missing timestamp"
UNPARSEABLE_TIMESTAMP = "unparseable timestamp"
NAIVE_TIMESTAMP = "naive timestamp and no time zone configured: set 'timezone' or write offsets"
NONEXISTENT_LOCAL_TIME = "local time does not exist (skipped by a daylight saving change)"
AMBIGUOUS_LOCAL_TIME = "local time is ambiguous (repeated by a daylight saving change): set ingest.ambiguous_time"
TIMESTAMP_OUT_OF_RANGE = "timestamp out of range (before 1900 or after 2199)"
NOT_A_NUMBER = "value is not a number"
INFINITE_VALUE = "value is infinite"
MISSING_ENTITY = "missing entity"
NO_ENTITY_LABEL = "no entity: none of ingest.entity_labels is set"
MISSING_METRIC = "missing metric name"
MISSING_TEMPLATE_FIELD = "metric name template field missing from the labels"
MALFORMED_RECORD = "malformed record"
LABEL_CONFLICT = "another series with other labels has the same entity, metric and timestamp"
PARSER_FAILURE = "parser failure"
NOT_IN_LANDING_DAY = "timestamp not in the landing day: check the exporter's clock and date folder, the epoch unit, or ingest.late_days"

# Text read as a missing value (curated as null). The CSV reader receives the
# same list, so the fast and the slow path agree.
NULL_VALUES = ("", "NaN", "nan", "NAN", "-NaN", "-nan", "+NaN", "+nan", "null", "NULL", "Null", "None", "none", "NA", "N/A", "n/a")

MS_PER_DAY = 86_400_000
_FIRST_MS = int(pd.Timestamp("1900-01-01", tz="UTC").value // 1_000_000)
_LAST_MS = int(pd.Timestamp("2200-01-01", tz="UTC").value // 1_000_000)
_NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Only ASCII digits are numbers, on the fast path (Arrow) and the slow path (Python) alike.
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_INTEGER = r"^[+-]?[0-9]+$"
# A time of day (extended 10:00:00 or basic 100000) followed by a zone designator.
_ZONE_SUFFIX = r"[0-9]{2}:?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?\s*(?:[Zz]|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)$"
_INT64_MAX = 2**63 - 1
# The setting that names the metric of each labelled format, for label conflicts.
_TEMPLATE_SETTING = {
    "prometheus": "ingest.metric_name",
    "victoriametrics": "ingest.metric_name",
    "influx": "ingest.influx_metric_name",
    "cloudwatch": "ingest.cloudwatch_metric_name",
}
_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")

CURATED_TYPE = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("entity", pa.dictionary(pa.int32(), pa.string())),
        pa.field("metric", pa.dictionary(pa.int32(), pa.string())),
        pa.field("value", pa.float64()),
        pa.field("labels", pa.dictionary(pa.int32(), pa.string())),
    ]
)


def format_extension(key: str) -> str:
    """Return the format extension of ``key``, after any compression suffix.

    >>> format_extension("landing/date=2026-09-01/node-1.tsv.gz")
    'tsv'
    """
    name = key.rsplit("/", 1)[-1].lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.rsplit(".", 1)[-1] if "." in name else ""


class ParseError(ValueError):
    """Raised when a whole landing object cannot be read; the object is quarantined.

    Attributes:
        reason: the category, one short phrase (counted in the ingest report).
        detail: what exactly was found, with the value where it helps.
        rows: samples or records the object held, where they could be
            counted (a parser failure), else None.
    """

    def __init__(self, reason: str, detail: str = "", rows: int | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.rows = rows


@dataclass
class Rejects:
    """Rejected samples of one object: record number (1-based, None when unknown), reason, raw text."""

    lines: list[int | None] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    raws: list[str | None] = field(default_factory=list)

    def add(self, line: int | None, reason: str, raw: str | None, count: int = 1) -> None:
        for _ in range(count):
            self.lines.append(line)
            self.reasons.append(reason)
            self.raws.append(raw)

    def extend(self, reasons: list[str], raws: list[str | None]) -> None:
        """Add samples of unknown record number, one reason and raw text each."""
        self.lines.extend([None] * len(reasons))
        self.reasons.extend(reasons)
        self.raws.extend(raws)

    def __len__(self) -> int:
        return len(self.reasons)


@dataclass
class Parsed:
    """Samples parsed from one landing object.

    Attributes:
        table: accepted samples with the columns of :data:`CURATED_TYPE`:
            timestamp (UTC, ms), entity, metric, value (null for a missing
            value), labels (JSON object or null).
        rejects: rejected samples with their reasons.
        format: the export format that was read.
    """

    table: pa.Table
    rejects: Rejects
    format: str

    @property
    def rows(self) -> int:
        """Samples read from the object: accepted plus rejected."""
        return self.table.num_rows + len(self.rejects)


def make_table(timestamps_ms, entity, metric, values, labels=None) -> pa.Table:
    """Build a table of :data:`CURATED_TYPE` from arrays of equal length.

    Args:
        timestamps_ms: int64 milliseconds since the epoch, UTC.
        entity, metric: strings, as Arrow arrays (plain or dictionary) or sequences.
        values: float64 with NaN for a missing value.
        labels: JSON strings or None; None for no labels at all.
    """
    timestamps_ms = np.asarray(timestamps_ms, dtype=np.int64)
    count = len(timestamps_ms)
    columns = [
        pa.array(timestamps_ms, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        _dictionary(entity),
        _dictionary(metric),
        pa.array(np.asarray(values, dtype=np.float64), type=pa.float64(), from_pandas=True),
        _dictionary(labels) if labels is not None else _null_labels(count),
    ]
    return pa.Table.from_arrays(columns, schema=CURATED_TYPE)


def _null_labels(count: int) -> pa.DictionaryArray:
    """Return ``count`` null labels: null indices into an empty dictionary."""
    return pa.DictionaryArray.from_arrays(pa.nulls(count, pa.int32()), pa.array([], type=pa.string()), safe=False)


def empty_table() -> pa.Table:
    return CURATED_TYPE.empty_table()


def _dictionary(values) -> pa.DictionaryArray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string())
    if pa.types.is_dictionary(values.type):
        if values.dictionary.null_count:
            # Parquet cannot write a null inside a dictionary; make it a null index instead.
            null_codes = np.flatnonzero(values.dictionary.is_null().to_numpy(zero_copy_only=False))
            indices = values.indices.to_numpy(zero_copy_only=False)
            mask = np.isin(indices, null_codes) | values.is_null().to_numpy(zero_copy_only=False)
            values = pa.DictionaryArray.from_arrays(
                pa.array(np.where(mask, 0, indices).astype(np.int32), mask=mask), values.dictionary.fill_null("")
            )
        if values.type == CURATED_TYPE.field("entity").type:
            return values
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return pc.dictionary_encode(values).cast(CURATED_TYPE.field("entity").type)


def repeat_dictionary(value: str | None, count: int) -> pa.DictionaryArray:
    """Return a dictionary array of ``count`` copies of one string."""
    dictionary = pa.array([value], type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(count, dtype=np.int32)), dictionary, safe=False)


def labels_json(labels: dict) -> str | None:
    """Labels as compact JSON with sorted keys (None when there are none)."""
    if not labels:
        return None
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render_template(template: str, fields: dict) -> tuple[str | None, str | None]:
    """Fill ``{name}`` fields of a metric-name template from ``fields``.

    Returns:
        ``(name, None)``, or ``(None, missing_field)`` when a field is not set.

    >>> render_template("{__name__}_{mode}", {"__name__": "node_cpu", "mode": "idle"})
    ('node_cpu_idle', None)
    >>> render_template("{__name__}_{mode}", {"__name__": "node_cpu"})
    (None, 'mode')
    """
    missing = None

    def value(match: re.Match) -> str:
        nonlocal missing
        text = fields.get(match.group(1))
        if text is None or text == "":
            missing = missing or match.group(1)
            return ""
        return str(text)

    name = _TEMPLATE_FIELD.sub(value, template)
    return (None, missing) if missing else (name, None)


def pick_entity(fields: dict, names: tuple[str, ...], strip_port: bool) -> str | None:
    """Return the first of ``names`` set in ``fields``, without ``:port`` when asked."""
    for name in names:
        entity = fields.get(name)
        if entity not in (None, ""):
            entity = str(entity)
            if strip_port:
                entity = re.sub(r"^(\[[^\]]*\]|[^:]*):\d+$", r"\1", entity)
            return entity
    return None


def epoch_to_ms(numbers: np.ndarray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert epoch numbers to UTC milliseconds.

    Args:
        numbers: int64 or float64 epoch values (NaN for missing).
        unit: ``"s"``, ``"ms"``, ``"us"``, ``"ns"`` or ``"auto"`` (by
            magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
            microseconds, else nanoseconds).

    Returns:
        ``(milliseconds, ok)``: int64 milliseconds (floor) and a mask of the
        values that are finite and inside 1900..2199.
    """
    numbers = np.asarray(numbers)
    if numbers.dtype.kind in "iu":
        magnitude = np.abs(numbers.astype(np.float64))
        finite = np.ones(len(numbers), dtype=bool)
    else:
        numbers = numbers.astype(np.float64)
        finite = np.isfinite(numbers)
        magnitude = np.abs(np.where(finite, numbers, 0.0))
    if unit == "auto":
        nanos_per = np.select(
            [magnitude < 1e11, magnitude < 1e14, magnitude < 1e17],
            [_NS_PER["s"], _NS_PER["ms"], _NS_PER["us"]],
            _NS_PER["ns"],
        )
    else:
        nanos_per = np.full(len(numbers), _NS_PER[unit])
    if numbers.dtype.kind in "iu":
        # Integer arithmetic keeps nanosecond epochs exact; float64 represents integers exactly only up to 2**53.
        in_range = magnitude * (nanos_per / 1e6) < 9e15
        safe = np.where(in_range, numbers, 0).astype(np.int64)
        multiply = nanos_per >= 1_000_000
        millis = np.where(
            multiply,
            safe * np.maximum(nanos_per // 1_000_000, 1),
            safe // np.maximum(1_000_000 // nanos_per, 1),
        )
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.where(finite, numbers * (nanos_per / 1e6), 0.0)
        in_range = np.abs(scaled) < 9e15
        millis = np.floor(np.where(in_range, scaled, 0.0)).astype(np.int64)
    ok = finite & in_range & (millis >= _FIRST_MS) & (millis < _LAST_MS)
    return np.where(ok, millis, 0).astype(np.int64), ok



def _plain_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return ``values`` as one contiguous array, with dictionary encoding decoded."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values

def parse_timestamps(values: pa.Array, config) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse a column of timestamps to UTC milliseconds.

    Accepts Arrow timestamps (naive ones count as local time) and epoch
    numbers (see :func:`epoch_to_ms`). Text may be ISO 8601 with an offset or
    ``Z``, and the offset may change from row to row. Naive ISO 8601 text is
    local time when ``config.timezone`` is set. Epoch numbers as text are
    read too, and ``ingest.timestamp_format`` replaces ISO 8601 when set.

    Args:
        values: one column, any Arrow type.
        config: the :class:`~lstmae.config.Config` (``timezone`` and ``ingest``).

    Returns:
        ``(milliseconds, reasons)``: int64 milliseconds (0 where rejected) and
        the rejection reason per row, or None when every row was accepted.
    """
    values = _plain_array(values)
    kind = values.type
    if pa.types.is_null(kind):
        return np.zeros(len(values), dtype=np.int64), np.full(len(values), MISSING_TIMESTAMP, dtype=object)
    if pa.types.is_timestamp(kind):
        return _arrow_timestamps(values, config)
    if pa.types.is_date(kind):
        return _arrow_timestamps(values.cast(pa.timestamp("ms")), config)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        too_large = None
        if kind == pa.uint64():
            # Beyond int64 is far beyond 2199 in any unit: out of range, and the other rows still read.
            too_large = np.asarray(pc.greater(values, pa.scalar(_INT64_MAX, pa.uint64())).fill_null(False).to_numpy(zero_copy_only=False))
            if too_large.any():
                values = pc.if_else(pa.array(too_large), pa.scalar(0, pa.uint64()), values)
        numbers = values.cast(pa.float64() if not pa.types.is_integer(kind) else pa.int64())
        present = ~np.asarray(numbers.is_null().to_numpy(zero_copy_only=False))
        raw = numbers.fill_null(0).to_numpy(zero_copy_only=False)
        millis, ok = epoch_to_ms(raw, config.ingest.epoch_unit)
        if too_large is not None:
            ok &= ~too_large
        reasons = np.where(present, np.where(ok, None, TIMESTAMP_OUT_OF_RANGE), MISSING_TIMESTAMP).astype(object)
        return millis, (reasons if (~(ok & present)).any() else None)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        values = values.cast(pa.string())
    if config.ingest.timestamp_format is None:
        try:
            fast = pc.cast(values, pa.timestamp("ns", tz="UTC")).cast(pa.timestamp("ms", tz="UTC"), safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fast = None
        if fast is not None and fast.null_count == 0:
            millis = fast.cast(pa.int64()).to_numpy()
            ok = (millis >= _FIRST_MS) & (millis < _LAST_MS)
            if ok.all():
                return millis, None
    return _text_timestamps(values, config)


def _arrow_timestamps(values: pa.Array, config) -> tuple[np.ndarray, np.ndarray | None]:
    if values.type.tz is not None and values.null_count == 0:
        # The usual case, without a mask or reasons: every time present and in range.
        millis = values.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
        if not len(millis) or (millis.min() >= _FIRST_MS and millis.max() < _LAST_MS):
            return millis, None
    present = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False))
    if values.type.tz is None:
        if config.timezone is None:
            return np.zeros(len(values), dtype=np.int64), np.where(present, NAIVE_TIMESTAMP, MISSING_TIMESTAMP).astype(object)
        series = pd.Series(values.to_pandas(), dtype="datetime64[ns]") if len(values) else pd.Series([], dtype="datetime64[ns]")
        return _localize(series, present, config)
    millis = values.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64()).fill_null(0).to_numpy()
    ok = present & (millis >= _FIRST_MS) & (millis < _LAST_MS)
    if ok.all():
        return millis, None
    reasons = np.where(present, np.where(ok, None, TIMESTAMP_OUT_OF_RANGE), MISSING_TIMESTAMP).astype(object)
    return np.where(ok, millis, 0), (reasons if (~ok).any() else None)


def _text_timestamps(values: pa.Array, config) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse text timestamps class by class (epoch, with offset, naive), each class vectorised."""
    text = pc.utf8_trim_whitespace(values)
    count = len(text)
    millis = np.zeros(count, dtype=np.int64)
    reasons = np.full(count, None, dtype=object)
    missing = np.asarray(pc.or_kleene(pc.is_null(text), pc.equal(text, "")).fill_null(True).to_numpy(zero_copy_only=False))
    reasons[missing] = MISSING_TIMESTAMP
    series = pd.Series(text.to_pandas(), dtype=object)

    fmt = config.ingest.timestamp_format
    if fmt is not None:
        todo = ~missing
        aware = "%z" in fmt or "%Z" in fmt
        parsed = pd.to_datetime(series[todo], format=fmt, errors="coerce", utc=aware)
        bad = parsed.isna().to_numpy()
        positions = np.flatnonzero(todo)
        reasons[positions[bad]] = UNPARSEABLE_TIMESTAMP
        good = positions[~bad]
        if aware:
            _store(millis, reasons, good, parsed[~bad])
        else:
            _localize_into(millis, reasons, good, parsed[~bad], config)
        return millis, _any_reason(reasons)

    numeric = np.asarray(pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$").fill_null(False).to_numpy(zero_copy_only=False))
    zoned = np.asarray(pc.match_substring_regex(text, _ZONE_SUFFIX).fill_null(False).to_numpy(zero_copy_only=False))
    zoned &= ~numeric
    naive = ~(missing | numeric | zoned)

    if numeric.any():
        positions = np.flatnonzero(numeric)
        subset = text.take(pa.array(positions))
        # Integers are parsed as int64 so that nanosecond epochs stay exact;
        # one beyond int64 is out of range anyway and goes the float way.
        exact = np.asarray(pc.match_substring_regex(subset, _INTEGER).to_numpy(zero_copy_only=False))
        numbers_ms = np.zeros(len(positions), dtype=np.int64)
        ok = np.zeros(len(positions), dtype=bool)
        if exact.any():
            try:
                ints = pc.cast(subset.filter(pa.array(exact)), pa.int64()).to_numpy()
                numbers_ms[exact], ok[exact] = epoch_to_ms(ints, config.ingest.epoch_unit)
            except pa.ArrowInvalid:
                exact[:] = False
        floating = ~exact
        if floating.any():
            floats = pc.cast(subset.filter(pa.array(floating)), pa.float64()).to_numpy()
            numbers_ms[floating], ok[floating] = epoch_to_ms(floats, config.ingest.epoch_unit)
        millis[positions[ok]] = numbers_ms[ok]
        reasons[positions[~ok]] = TIMESTAMP_OUT_OF_RANGE

    if zoned.any():
        positions = np.flatnonzero(zoned)
        cleaned = series[zoned].str.replace(r"\s*(UTC|GMT)$", "Z", regex=True)
        parsed = pd.to_datetime(cleaned, format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        reasons[positions[bad]] = UNPARSEABLE_TIMESTAMP
        _store(millis, reasons, positions[~bad], parsed[~bad])

    if naive.any():
        positions = np.flatnonzero(naive)
        parsed, aware = _naive_iso(series[naive])
        bad = parsed.isna().to_numpy() & ~aware
        reasons[positions[bad]] = UNPARSEABLE_TIMESTAMP
        if aware.any():
            # A zone designator the pattern above did not recognise: the value is an instant all the same.
            stamps = pd.Series([pd.to_datetime(value, format="ISO8601") for value in series[naive][aware]], dtype=object)
            _store(millis, reasons, positions[aware], pd.to_datetime(stamps, utc=True))
        good = ~bad & ~aware
        if config.timezone is None:
            # Tell an unparseable value apart from a naive one, so the reason is exact.
            reasons[positions[good]] = NAIVE_TIMESTAMP
        else:
            _localize_into(millis, reasons, positions[good], parsed[good], config)
    return millis, _any_reason(reasons)


def _naive_iso(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse ISO 8601 text without a recognised zone: naive times (NaT where unparseable) and a mask of aware ones.

    Text that does not start with a digit is unparseable (pandas would read ``now`` and ``today``).
    """
    text = text.where(text.str.match(r"^[0-9]").fillna(False).astype(bool), None)
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if getattr(parsed.dt, "tz", None) is None:
            return parsed, np.zeros(len(text), dtype=bool)
    except (ValueError, TypeError):
        pass
    # Mixed naive and aware values: one by one.
    naive, aware = [], []
    for value in text:
        try:
            stamp = pd.NaT if value is None else pd.to_datetime(value, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            stamp = pd.NaT
        is_aware = not pd.isna(stamp) and stamp.tzinfo is not None
        aware.append(is_aware)
        naive.append(pd.NaT if is_aware else stamp)
    return pd.Series(pd.to_datetime(pd.Series(naive, dtype=object), errors="coerce"), index=text.index), np.array(aware, dtype=bool)


def _localize(series: pd.Series, present: np.ndarray, config) -> tuple[np.ndarray, np.ndarray | None]:
    millis = np.zeros(len(series), dtype=np.int64)
    reasons = np.where(present, None, MISSING_TIMESTAMP).astype(object)
    positions = np.flatnonzero(present)
    _localize_into(millis, reasons, positions, series[present], config)
    return millis, _any_reason(reasons)


def _localize_into(millis: np.ndarray, reasons: np.ndarray, positions: np.ndarray, naive: pd.Series, config) -> None:
    """Localise naive times to ``config.timezone`` and store them, rejecting DST gaps and (by default) overlaps."""
    if len(positions) == 0:
        return
    zone = config.timezone
    choice = config.ingest.ambiguous_time
    ambiguous = "NaT" if choice == "reject" else np.full(len(naive), choice == "earliest")
    local = naive.dt.tz_localize(zone, ambiguous=ambiguous, nonexistent="NaT")
    failed = local.isna().to_numpy()
    if failed.any():
        # A time that localises once DST is assumed is ambiguous; one that never localises does not exist.
        retry = naive[failed].dt.tz_localize(zone, ambiguous=np.ones(int(failed.sum()), dtype=bool), nonexistent="NaT")
        is_ambiguous = retry.notna().to_numpy()
        failed_positions = positions[failed]
        reasons[failed_positions[is_ambiguous]] = AMBIGUOUS_LOCAL_TIME
        reasons[failed_positions[~is_ambiguous]] = NONEXISTENT_LOCAL_TIME
    _store(millis, reasons, positions[~failed], local[~failed])


def _store(millis: np.ndarray, reasons: np.ndarray, positions: np.ndarray, stamps: pd.Series) -> None:
    """Write aware pandas timestamps into ``millis``, rejecting values outside 1900..2199."""
    if len(positions) == 0:
        return
    utc = stamps.dt.tz_convert("UTC")
    years = utc.dt.year.to_numpy()
    ok = (years >= 1900) & (years < 2200)
    values = utc[ok].dt.tz_localize(None).astype("datetime64[ms]").to_numpy().astype(np.int64)
    millis[positions[ok]] = values
    reasons[positions[~ok]] = TIMESTAMP_OUT_OF_RANGE


def parse_values(values: pa.Array, thousands_separator: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse a column of metric values to float64.

    Null, empty and the :data:`NULL_VALUES` text become NaN (a missing
    value, curated as null). Text numbers may carry surrounding spaces and
    well-formed digit groups (``1,234,567.5``). Infinite values and text that
    is no number are rejected.

    Returns:
        ``(values, reasons)``: float64 (NaN where missing or rejected) and the
        rejection reason per row, or None when nothing was rejected.
    """
    values = _plain_array(values)
    kind = values.type
    if pa.types.is_null(kind):
        return np.full(len(values), np.nan), None
    if pa.types.is_boolean(kind):
        values = values.cast(pa.int8())
        kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        infinite = np.isinf(numbers)
        if not infinite.any():
            return numbers, None
        reasons = np.where(infinite, INFINITE_VALUE, None).astype(object)
        return np.where(infinite, np.nan, numbers), reasons
    if not pa.types.is_string(kind):
        values = values.cast(pa.string())
    text = pc.utf8_trim_whitespace(values)
    is_null = np.asarray(pc.or_kleene(pc.is_null(text), pc.is_in(text, value_set=pa.array(NULL_VALUES))).fill_null(True).to_numpy(zero_copy_only=False))
    present = text.filter(pa.array(~is_null))
    numbers = np.full(len(text), np.nan)
    reasons = np.full(len(text), None, dtype=object)
    try:
        parsed = pc.cast(present, pa.float64()).to_numpy()
        bad_present = np.zeros(len(parsed), dtype=bool)
    except pa.ArrowInvalid:
        parsed, bad_present = _slow_numbers(present, thousands_separator)
    positions = np.flatnonzero(~is_null)
    numbers[positions] = parsed
    reasons[positions[bad_present]] = NOT_A_NUMBER
    infinite = np.isinf(numbers)
    reasons[infinite] = INFINITE_VALUE
    numbers[~pd.isna(reasons)] = np.nan
    return numbers, _any_reason(reasons)


def _slow_numbers(text: pa.Array, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse text numbers one by one where Arrow's cast failed: digit groups and junk."""
    strings = text.to_pylist()
    numbers = np.full(len(strings), np.nan)
    bad = np.zeros(len(strings), dtype=bool)
    grouped = re.compile(rf"^[+-]?\d{{1,3}}(?:{re.escape(separator)}\d{{3}})+(?:\.\d*)?(?:[eE][+-]?\d+)?$") if separator else None
    for position, item in enumerate(strings):
        if grouped is not None and grouped.match(item):
            item = item.replace(separator, "")
        if _NUMBER.match(item) or item.lower().lstrip("+-") in ("inf", "infinity"):
            numbers[position] = float(item)
        else:
            bad[position] = True
    return numbers, bad


def _any_reason(reasons: np.ndarray) -> np.ndarray | None:
    return reasons if (~pd.isna(reasons)).any() else None


class SampleBuilder:
    """Collects samples of labelled series (Prometheus, VictoriaMetrics, CloudWatch, InfluxDB).

    Entity, metric and labels are encoded once per distinct value, so a series
    of many samples costs one dictionary entry, not one string per sample.
    """

    def __init__(self, config, format_name: str):
        self.settings = config.ingest
        self.format = format_name
        self.rejects = Rejects()
        self._codes: dict[str, dict[str | None, int]] = {"entity": {}, "metric": {}, "labels": {}}
        self._times: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._keys: list[tuple[int, int, int, int]] = []  # entity, metric, labels codes and sample count
        self._single: tuple[list[int], list[int], list[int], list[int], list[float]] = ([], [], [], [], [])

    def _code(self, kind: str, value: str | None) -> int:
        codes = self._codes[kind]
        if value not in codes:
            codes[value] = len(codes)
        return codes[value]

    def resolve(self, fields: dict, template: str) -> tuple[str | None, str | None, str | None]:
        """Return ``(entity, metric, reason)`` for one label set; reason is set when it is unusable."""
        entity = pick_entity(fields, self.settings.entity_labels, self.settings.strip_port)
        if entity is None:
            return None, None, NO_ENTITY_LABEL
        metric, missing = render_template(template, fields)
        if metric is None:
            return None, None, f"{MISSING_TEMPLATE_FIELD}: {missing!r}"
        return entity, metric, None

    def add_series(self, entity: str, metric: str, labels: str | None, millis: np.ndarray, values: np.ndarray) -> None:
        """Add accepted samples of one series: int64 milliseconds and float64 values (NaN = missing)."""
        if len(millis) == 0:
            return
        self._times.append(np.asarray(millis, dtype=np.int64))
        self._values.append(np.asarray(values, dtype=np.float64))
        key = (self._code("entity", entity), self._code("metric", metric), self._code("labels", labels), len(millis))
        self._keys.append(key)

    def add_sample(self, entity: str, metric: str, labels: str | None, millis: int, value: float) -> None:
        """Add one accepted sample (formats with one sample per record)."""
        entities, metrics, label_codes, times, values = self._single
        entities.append(self._code("entity", entity))
        metrics.append(self._code("metric", metric))
        label_codes.append(self._code("labels", labels))
        times.append(millis)
        values.append(value)

    def mark(self) -> tuple[int, int, int]:
        """The builder's state, for :meth:`rollback` after a record failed half-way."""
        return len(self.rejects), len(self._keys), len(self._single[0])

    def rollback(self, mark: tuple[int, int, int]) -> None:
        """Forget the samples and rejects added since ``mark`` (dictionary entries stay, unused)."""
        rejects, series, single = mark
        for column in (self.rejects.lines, self.rejects.reasons, self.rejects.raws):
            del column[rejects:]
        del self._keys[series:], self._times[series:], self._values[series:]
        for column in self._single:
            del column[single:]

    def guard(self, key: str, line: int | None, raw: str, count: int, parse) -> None:
        """Run ``parse()`` for one record; a parser bug rejects its ``count`` samples as :data:`PARSER_FAILURE`."""
        mark = self.mark()
        try:
            parse()
        except Exception as error:  # a parser bug costs this record only, and its samples are counted
            log.exception("%s: parser failed on record %s", key, line)
            self.rollback(mark)
            self.rejects.add(line, PARSER_FAILURE, f"{type(error).__name__}: {error}; {raw[:400]}", count=max(count, 1))

    def add_checked(self, entity, metric, labels, millis, time_reasons, values, value_reasons, line, raw) -> None:
        """Add one series whose samples may carry rejection reasons; ``raw(i)`` gives sample i's text."""
        ok = np.ones(len(millis), dtype=bool)
        if time_reasons is not None:
            ok &= pd.isna(time_reasons)
        if value_reasons is not None:
            ok &= pd.isna(value_reasons)
        for position in np.flatnonzero(~ok):
            reason = time_reasons[position] if time_reasons is not None and not pd.isna(time_reasons[position]) else value_reasons[position]
            self.rejects.add(line, reason, raw(position))
        self.add_series(entity, metric, labels, np.asarray(millis)[ok], np.asarray(values)[ok])

    def table(self) -> pa.Table:
        single = self._single
        if not self._keys and not single[0]:
            return empty_table()
        counts = np.array([key[3] for key in self._keys], dtype=np.int64)
        columns = []
        for position, kind in enumerate(("entity", "metric", "labels")):
            series_codes = np.repeat(np.array([key[position] for key in self._keys], dtype=np.int32), counts)
            codes = np.concatenate([series_codes, np.array(single[position], dtype=np.int32)])
            dictionary = pa.array(list(self._codes[kind]), type=pa.string())
            columns.append(pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), dictionary))
        times = np.concatenate(self._times + [np.array(single[3], dtype=np.int64)])
        values = np.concatenate(self._values + [np.array(single[4], dtype=np.float64)])
        return make_table(times, columns[0], columns[1], values, columns[2])

    def parsed(self) -> Parsed:
        return Parsed(self.table(), self.rejects, self.format)


def to_float(number) -> float:
    """``float(number)`` for a JSON or Python number, with integers beyond float64 as ±infinity.

    >>> to_float(10**400), to_float(-(10**400)), to_float(3)
    (inf, -inf, 3.0)
    """
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def finish(parsed: Parsed) -> Parsed:
    """Reject the label conflicts of one parsed object; every parser's samples go through this check.

    Samples of one object with the same entity, metric and timestamp but
    other labels are distinct series that the metric name does not tell
    apart. The last one read is kept, as for duplicates; the earlier ones
    with other labels are rejected as :data:`LABEL_CONFLICT`, naming the
    labels that differ and the setting to change. Earlier ones with the same
    labels stay, and ingest counts them as deduplicated.

    Names are compared exactly, as Arrow strings: ``node`` and ``node\\x00``
    (a NUL in a name) are two entities.
    """
    table = parsed.table
    if table.num_rows < 2:
        return parsed
    conflicts, reasons = _label_conflicts(table, parsed.format)
    if conflicts is not None:
        rows = table.filter(pa.array(conflicts))
        parsed.rejects.extend(reasons, sample_raws(rows, with_labels=True).to_pylist())
        table = table.filter(pa.array(~conflicts))
    return Parsed(table, parsed.rejects, parsed.format)


def sample_raws(rows: pa.Table, with_labels: bool = False) -> pa.Array:
    """Raw text of curated-shape samples: ``timestamp,entity,metric,value`` (and `` labels``)."""
    raws = pc.binary_join_element_wise(
        # Cast without the time zone: Arrow formats naive timestamps about ten times faster.
        pc.binary_join_element_wise(rows.column("timestamp").cast(pa.timestamp("ms")).cast(pa.string()), pa.scalar("Z"), ""),
        rows.column("entity").cast(pa.string()),
        rows.column("metric").cast(pa.string()),
        pc.fill_null(rows.column("value").cast(pa.string()), ""),
        ",",
    )
    if with_labels:
        raws = pc.binary_join_element_wise(raws, pc.fill_null(rows.column("labels").cast(pa.string()), ""), " ")
    return raws.combine_chunks() if isinstance(raws, pa.ChunkedArray) else raws


def text_codes(column) -> np.ndarray:
    """int32 codes of a dictionary (or plain string) column, equal exactly where the texts are equal; -1 for null.

    Codes number the distinct texts in sorted (code point) order. Texts are
    compared as Arrow strings, never as NumPy unicode, which drops trailing
    NUL characters.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    dictionary = column.dictionary
    if not pa.types.is_string(dictionary.type):
        dictionary = dictionary.cast(pa.string())
    distinct = pc.unique(dictionary.drop_null())
    distinct = distinct.take(pc.sort_indices(distinct))
    mapping = pc.index_in(dictionary, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    indices = column.indices
    codes = mapping[indices.fill_null(0).to_numpy(zero_copy_only=False)] if len(mapping) else np.full(len(column), -1, np.int32)
    if indices.null_count:
        codes[np.asarray(indices.is_null().to_numpy(zero_copy_only=False))] = -1
    return codes


def _label_conflicts(table: pa.Table, format_name: str) -> tuple[np.ndarray | None, list[str]]:
    """Mask of the samples another series with other labels overrides, and their reasons."""
    labels = table.column("labels")
    if table.num_rows < 2 or labels.null_count == table.num_rows:
        return None, []
    label_codes = text_codes(labels)
    if (label_codes == label_codes[0]).all():
        return None, []
    entity, metric = text_codes(table.column("entity")), text_codes(table.column("metric"))
    millis = table.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.lexsort((millis, metric, entity))  # stable: equal keys stay in the order read
    entity, metric, millis = entity[order], metric[order], millis[order]
    same_as_next = (entity[1:] == entity[:-1]) & (metric[1:] == metric[:-1]) & (millis[1:] == millis[:-1])
    if not same_as_next.any():
        return None, []
    overridden = np.flatnonzero(same_as_next)
    is_last = ~np.append(same_as_next, False)
    group = np.concatenate([[0], np.cumsum(is_last[:-1])])
    kept = np.flatnonzero(is_last)[group[overridden]]
    sorted_labels = label_codes[order]
    differ = sorted_labels[overridden] != sorted_labels[kept]
    if not differ.any():
        return None, []
    rows = order[overridden[differ]]
    pairs = list(zip(sorted_labels[overridden[differ]].tolist(), sorted_labels[kept[differ]].tolist()))
    texts = {}
    dictionary_rows = {}
    for position, code in enumerate(label_codes.tolist()):
        dictionary_rows.setdefault(code, position)
    reasons_by_pair: dict[tuple[int, int], str] = {}
    for pair in set(pairs):
        for code in pair:
            if code not in texts:
                text = labels[dictionary_rows[code]].as_py() if code >= 0 else None
                texts[code] = json.loads(text) if text else {}
        reasons_by_pair[pair] = _conflict_reason(texts[pair[0]], texts[pair[1]], format_name)
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[rows] = True
    reason_of_row = dict(zip(rows.tolist(), (reasons_by_pair[pair] for pair in pairs)))
    return mask, [reason_of_row[row] for row in np.flatnonzero(mask).tolist()]


def _conflict_reason(labels: dict, kept: dict, format_name: str) -> str:
    names = sorted(name for name in set(labels) | set(kept) if labels.get(name) != kept.get(name))
    listed = ", ".join(repr(name) for name in names)
    setting = _TEMPLATE_SETTING.get(format_name)
    if setting is not None:
        fix = f"set {setting} to include {'it' if len(names) == 1 else 'them'}"
    else:
        fix = "write one metric name per series in the metric column"
    return f"{LABEL_CONFLICT}: labels differ in {listed}; {fix}"
