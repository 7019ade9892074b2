"""CSV and TSV exports, wide or long, read with pyarrow's CSV reader.

The header decides between two layouts (names from ``ingest.*_column``,
matched case-insensitively, in any order):

- *long*: a timestamp, a metric and a value column, an optional entity column
  (else the entity is the object name) and any further columns, kept as labels;
- *wide*: a timestamp column, an optional entity column, and one column per
  metric.

The fast path reads the typed columns straight into Arrow (timestamps with
offsets, float values). An object with anything to reject is read again as
text and parsed column by column, and only the rejected records are turned
into Python strings for the quarantine table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from lstmae.formats.common import (
    MALFORMED_RECORD,
    MISSING_ENTITY,
    MISSING_METRIC,
    NULL_VALUES,
    ParseError,
    Parsed,
    Rejects,
    empty_table,
    format_extension,
    make_table,
    parse_timestamps,
    parse_values,
    repeat_dictionary,
)

log = logging.getLogger(__name__)

_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
# Objects smaller than this are parsed on one thread: starting the thread pool costs more than it saves.
_THREADED_BYTES = 4 << 20
_NAME_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".csv", ".tsv", ".txt")


def entity_from_key(key: str) -> str:
    """Entity of a wide export without an entity column: the object name without extensions.

    Landing keys escape unsafe characters (``%2F`` for ``/``); the entity is unescaped.

    >>> entity_from_key("landing/date=2026-09-01/node-1.csv.gz")
    'node-1'
    """
    name = posixpath.basename(key)
    changed = True
    while changed:
        changed = False
        for suffix in _NAME_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return unquote(name)


def read_header(text: bytes, delimiter: str) -> list[str]:
    """Return the column names of the first line (quotes and a UTF-8 byte order mark handled).

    The line ends at LF, CRLF or a lone CR (classic Mac OS exports), as for
    pyarrow's reader.
    """
    ends = [position for position in (text.find(b"\n"), text.find(b"\r")) if position >= 0]
    first = text[: min(ends) if ends else len(text)]
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseError("not UTF-8 text", "the header line is not valid UTF-8") from None
    try:
        names = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error as error:
        raise ParseError("malformed header", f"{error}: {line[:200]!r}") from None
    if not names or not any(name.strip() for name in names):
        raise ParseError("missing header", "the first line is empty; a CSV export starts with its column names")
    return names


def parse_csv(key: str, text: bytes, config) -> Parsed:
    """Parse a CSV (or ``.tsv``) export; see the module docstring for the layouts.

    Raises:
        ParseError: the object has no usable header or is no CSV at all.
    """
    settings = config.ingest
    delimiter = "\t" if format_extension(key) == "tsv" else settings.delimiter
    header = read_header(text, delimiter)
    lookup: dict[str, str] = {}
    for name in header:
        lookup.setdefault(name.strip().lower(), name)
    timestamp = lookup.get(settings.timestamp_column.lower())
    if timestamp is None:
        hint = "set ingest.timestamp_column"
        if len(header) == 1 and any(sign in header[0] for sign in ";\t|,"):
            hint = f"the header is one column, so the delimiter is not {delimiter!r}: set ingest.delimiter"
        raise ParseError("missing timestamp column", f"no column {settings.timestamp_column!r} in {header[:10]}; {hint}")
    entity = lookup.get(settings.entity_column.lower())
    metric = lookup.get(settings.metric_column.lower())
    value = lookup.get(settings.value_column.lower())
    for role, name in (("timestamp", timestamp), ("entity", entity), ("metric", metric), ("value", value)):
        if name is not None and header.count(name) > 1:
            raise ParseError("malformed header", f"the {role} column {name!r} appears {header.count(name)} times")
    long = metric is not None and value is not None
    fixed = {timestamp, entity, metric, value} - {None}
    # Further columns by position, because a header may repeat a name or leave one empty.
    others = [position for position, name in enumerate(header) if name not in fixed]
    unnamed: list[int] = []
    if long:
        if settings.label_columns == ("*",):
            labels = [(p, header[p]) for p in others if header[p].strip()]
        else:
            wanted = {c.lower() for c in settings.label_columns}
            labels = [(p, header[p]) for p in others if header[p].strip().lower() in wanted]
        types = {timestamp: pa.timestamp("ns", tz="UTC"), value: pa.float64(), metric: _DICTIONARY}
        types.update({name: _DICTIONARY for _, name in labels})
    else:
        labels = []
        unnamed = [p for p in others if not header[p].strip()]
        others = [p for p in others if header[p].strip()]
        if not others:
            raise ParseError("no metric columns", f"a wide export needs metric columns next to {timestamp!r}; header is {header[:10]}")
        types = {timestamp: pa.timestamp("ns", tz="UTC")}
        types.update({header[p]: pa.float64() for p in others + unnamed})
    if entity is not None:
        types[entity] = _DICTIONARY
    entity_name = entity_from_key(key) if entity is None else None
    layout = _Layout(header, timestamp, entity, entity_name, metric, value, others, unnamed, labels, long)

    table, invalid = _read(text, delimiter, types)
    if table is not None and not invalid:
        parsed = _fast(table, layout, config)
        if parsed is not None:
            return parsed
    strings = {name: pa.string() for name in set(header)}
    table, invalid = _read(text, delimiter, strings)
    if table is None:
        raise ParseError("unreadable CSV", "pyarrow could not read the object even as text")
    return _slow(table, invalid, delimiter, layout, config)


@dataclass(frozen=True)
class _Layout:
    """Column map of one CSV object: names for the fixed roles, positions for the rest."""

    header: list[str]
    timestamp: str
    entity: str | None
    entity_name: str | None  # the entity of every row when there is no entity column
    metric: str | None
    value: str | None
    metrics: list[int]  # wide: positions of the metric columns
    unnamed: list[int]  # wide: positions of columns without a name
    labels: list[tuple[int, str]]  # long: positions and names of the label columns
    long: bool


def _read(text: bytes, delimiter: str, types: dict, threads: bool = True):
    """Read with the given column types; return ``(table or None, invalid records)``."""
    invalid: list[tuple[int | None, int, int, str]] = []

    def handle(row) -> str:
        invalid.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    try:
        table = pcsv.read_csv(
            pa.BufferReader(text),  # zero-copy, about twice as fast as io.BytesIO for small objects
            read_options=pcsv.ReadOptions(use_threads=threads and len(text) > _THREADED_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handle),
            convert_options=pcsv.ConvertOptions(
                column_types=types, null_values=list(NULL_VALUES), strings_can_be_null=True, quoted_strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid as error:
        message = str(error)
        if "UTF8" in message or "utf8" in message.lower():
            raise ParseError("not UTF-8 text", f"{message.splitlines()[0][:200]}; re-export the file as UTF-8") from None
        if all(t == pa.string() for t in types.values()):
            raise ParseError("unreadable CSV", message.splitlines()[0][:200]) from None
        return None, invalid
    if invalid and threads and any(number is None for number, *_ in invalid):
        # Record numbers of invalid rows are only known to a single-threaded read.
        return _read(text, delimiter, types, threads=False)
    return table, invalid


def _fast(table: pa.Table, layout: _Layout, config) -> Parsed | None:
    """Build the samples straight from typed columns; None when anything must be rejected."""
    table = table.unify_dictionaries()
    timestamp, entity, entity_name, metric, value = layout.timestamp, layout.entity, layout.entity_name, layout.metric, layout.value
    if any(table.column(p).null_count < table.num_rows for p in layout.unnamed):
        return None

    times = table.column(timestamp)
    if times.null_count:
        return None
    millis, reasons = parse_timestamps(times, config)
    if reasons is not None:
        return None
    count = table.num_rows
    if entity is not None:
        entities = _trimmed(table.column(entity))
        if entities is None:
            return None
    else:
        entities = repeat_dictionary(entity_name, count)

    if layout.long:
        metrics = _trimmed(table.column(metric))
        if metrics is None:
            return None
        values = table.column(value).to_numpy()
        if np.isinf(values).any():
            return None
        label_json = _labels(table, layout.labels) if layout.labels else None
        return Parsed(make_table(millis, entities, metrics, values, label_json), Rejects(), "csv")

    # Metrics in name order, so that ingest finds the rows already sorted and skips its sort.
    positions = sorted(layout.metrics, key=lambda p: layout.header[p].strip())
    columns = [table.column(p).to_numpy() for p in positions]
    stacked = np.concatenate(columns) if columns else np.zeros(0)
    if np.isinf(stacked).any():
        return None
    width = len(positions)
    metric_codes = np.repeat(np.arange(width, dtype=np.int32), count)
    names = [layout.header[p].strip() for p in positions]
    metrics = pa.DictionaryArray.from_arrays(pa.array(metric_codes), pa.array(names, type=pa.string()), safe=False)
    if entity is not None:
        entity_codes = np.tile(entities.indices.to_numpy(zero_copy_only=False), width)
        entities = pa.DictionaryArray.from_arrays(pa.array(entity_codes, type=pa.int32()), entities.dictionary)
    else:
        entities = repeat_dictionary(entity_name, count * width)
    return Parsed(make_table(np.tile(millis, width), entities, metrics, stacked), Rejects(), "csv")


def _trimmed(column: pa.ChunkedArray) -> pa.DictionaryArray | None:
    """Dictionary column with surrounding spaces removed; None when a value is null or empty."""
    array = column.combine_chunks()
    if array.null_count:
        return None
    dictionary = pc.utf8_trim_whitespace(array.dictionary)
    used = pc.unique(array.indices)
    if pc.any(pc.equal(pc.utf8_length(dictionary.take(used)), 0)).as_py():
        return None
    return pa.DictionaryArray.from_arrays(array.indices, dictionary)


def _slow(table: pa.Table, invalid: list, delimiter: str, layout: _Layout, config) -> Parsed:
    """Parse text columns one by one, rejecting what cannot be used, with its record text."""
    timestamp, entity, entity_name, metric, value = layout.timestamp, layout.entity, layout.entity_name, layout.metric, layout.value
    long = layout.long
    rejects = Rejects()
    record_numbers = _record_numbers(table.num_rows, [number for number, *_ in invalid])
    width = 1 if long else len(layout.metrics)
    for number, expected, actual, text in invalid:
        rejects.add(number, f"{MALFORMED_RECORD}: expected {expected} fields, found {actual}", text, count=width)
    columns = [table.column(index).combine_chunks() for index in range(table.num_columns)]
    lines: pa.Array | None = None

    def raw(position: int) -> str:
        # Records are joined back into text once, vectorised, when the first one is rejected.
        nonlocal lines
        if lines is None:
            lines = pc.binary_join_element_wise(*[pc.fill_null(column, "") for column in columns], delimiter)
        return lines[position].as_py()

    millis, time_reasons = parse_timestamps(table.column(timestamp), config)
    time_ok = np.ones(table.num_rows, dtype=bool) if time_reasons is None else pd.isna(time_reasons)
    for position in np.flatnonzero(~time_ok):
        rejects.add(int(record_numbers[position]), time_reasons[position], raw(position), count=width)

    if entity is not None:
        entities = pc.utf8_trim_whitespace(table.column(entity).combine_chunks())
        entity_ok = np.asarray(pc.and_kleene(pc.is_valid(entities), pc.not_equal(entities, "")).fill_null(False).to_numpy(zero_copy_only=False))
    else:
        entities = repeat_dictionary(entity_name, table.num_rows).cast(pa.string())
        entity_ok = np.ones(table.num_rows, dtype=bool)
    for position in np.flatnonzero(time_ok & ~entity_ok):
        rejects.add(int(record_numbers[position]), MISSING_ENTITY, raw(position), count=width)
    row_ok = time_ok & entity_ok

    if long:
        metrics = pc.utf8_trim_whitespace(table.column(metric).combine_chunks())
        metric_ok = np.asarray(pc.and_kleene(pc.is_valid(metrics), pc.not_equal(metrics, "")).fill_null(False).to_numpy(zero_copy_only=False))
        for position in np.flatnonzero(row_ok & ~metric_ok):
            rejects.add(int(record_numbers[position]), MISSING_METRIC, raw(position))
        row_ok &= metric_ok
        values, value_reasons = parse_values(table.column(value), config.ingest.thousands_separator)
        value_ok = np.ones(table.num_rows, dtype=bool) if value_reasons is None else pd.isna(value_reasons)
        for position in np.flatnonzero(row_ok & ~value_ok):
            rejects.add(int(record_numbers[position]), value_reasons[position], raw(position))
        keep = row_ok & value_ok
        mask = pa.array(keep)
        label_json = _labels(table.filter(mask), layout.labels) if layout.labels else None
        curated = make_table(millis[keep], entities.filter(mask), metrics.filter(mask), values[keep], label_json)
        return Parsed(curated, rejects, "csv")

    for position in layout.unnamed:
        text = pc.utf8_trim_whitespace(table.column(position).combine_chunks())
        filled = pc.and_kleene(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=pa.array(NULL_VALUES))))
        for row in np.flatnonzero(np.asarray(filled.fill_null(False).to_numpy(zero_copy_only=False))):
            rejects.add(int(record_numbers[row]), f"{MISSING_METRIC}: column {position + 1} has no name in the header", raw(row))
    pieces = []
    for position in layout.metrics:
        name = layout.header[position]
        values, value_reasons = parse_values(table.column(position), config.ingest.thousands_separator)
        value_ok = np.ones(table.num_rows, dtype=bool) if value_reasons is None else pd.isna(value_reasons)
        for position in np.flatnonzero(row_ok & ~value_ok):
            rejects.add(int(record_numbers[position]), f"{value_reasons[position]}", f"{name.strip()}: {raw(position)}")
        keep = row_ok & value_ok
        mask = pa.array(keep)
        pieces.append(make_table(millis[keep], entities.filter(mask), repeat_dictionary(name.strip(), int(keep.sum())), values[keep]))
    curated = pa.concat_tables(pieces).unify_dictionaries() if pieces else empty_table()
    return Parsed(curated, rejects, "csv")


def _record_numbers(rows: int, invalid_numbers: list[int | None]) -> np.ndarray:
    """Record number of each kept row: the header is record 1 and skipped invalid records still count."""
    numbers = np.arange(rows, dtype=np.int64) + 2
    for skipped in sorted(n for n in invalid_numbers if n is not None):
        numbers[numbers >= skipped] += 1
    return numbers


def label_text(column: pa.ChunkedArray) -> pd.Series:
    """Values of one label column as text (object Series, None for null); nested values as compact JSON.

    >>> label_text(pa.chunked_array([pa.array([{"k": 1}, None])])).tolist()
    ['{"k":1}', None]
    """
    try:
        return column.cast(pa.string()).to_pandas()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        pass
    is_map = pa.types.is_map(column.type)

    def text(value):
        if value is None:
            return None
        if is_map:
            value = {str(k): v for k, v in value}
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)

    return pd.Series([text(value) for value in column.to_pylist()], dtype=object)


def _json_default(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _labels(table: pa.Table, columns: list[tuple[int | str, str]]) -> pa.DictionaryArray:
    """Build one JSON object per row from the label columns, encoding each distinct combination once.

    A column that cannot be cast to text (a Parquet list, map or struct)
    contributes its values as compact JSON text.

    Args:
        columns: ``(position or name in table, label name)`` per label column.
    """
    keys = [f"c{index}" for index in range(len(columns))]
    frame = pd.DataFrame({k: label_text(table.column(where)) for k, (where, _) in zip(keys, columns)})
    codes = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy(dtype=np.int32)
    firsts = pd.Series(np.arange(len(codes))).groupby(codes).first()
    documents = []
    for row in firsts.to_numpy():
        items = {name.strip(): frame.iat[row, index] for index, (_, name) in enumerate(columns)}
        items = {k: v for k, v in items.items() if isinstance(v, str) and v != ""}
        documents.append(json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if items else None)
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(documents, type=pa.string()))
