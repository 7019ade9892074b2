"""CSV and TSV exports, wide or long, read with pyarrow's CSV reader.

Two layouts, told apart by the header (names from ``ingest.*_column``,
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
import logging
import posixpath
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
    make_table,
    parse_timestamps,
    parse_values,
    repeat_dictionary,
)

log = logging.getLogger(__name__)

_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
_NAME_SUFFIXES = (".gz", ".csv", ".tsv", ".txt")


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
    """Return the column names of the first line (quotes and a UTF-8 byte order mark handled)."""
    end = text.find(b"\n")
    first = text[: end if end >= 0 else len(text)]
    try:
        line = first.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError:
        raise ParseError("not UTF-8 text", "the header line is not valid UTF-8") from None
    names = next(csv.reader([line], delimiter=delimiter), [])
    if not names or not any(name.strip() for name in names):
        raise ParseError("missing header", "the first line is empty; a CSV export starts with its column names")
    return names


def parse_csv(key: str, text: bytes, config) -> Parsed:
    """Parse a CSV (or ``.tsv``) export; see the module docstring for the layouts.

    Raises:
        ParseError: the object has no usable header or is no CSV at all.
    """
    settings = config.ingest
    lower_key = key.lower()
    delimiter = "\t" if lower_key.endswith(".tsv") or lower_key.endswith(".tsv.gz") else settings.delimiter
    header = read_header(text, delimiter)
    lookup: dict[str, str] = {}
    for name in header:
        lookup.setdefault(name.strip().lower(), name)
    timestamp = lookup.get(settings.timestamp_column.lower())
    if timestamp is None:
        raise ParseError(
            "missing timestamp column",
            f"no column {settings.timestamp_column!r} in {header[:10]}; set ingest.timestamp_column",
        )
    entity = lookup.get(settings.entity_column.lower())
    metric = lookup.get(settings.metric_column.lower())
    value = lookup.get(settings.value_column.lower())
    for role, name in (("timestamp", timestamp), ("entity", entity), ("metric", metric), ("value", value)):
        if name is not None and header.count(name) > 1:
            raise ParseError("malformed header", f"the {role} column {name!r} appears {header.count(name)} times")
    long = metric is not None and value is not None
    fixed = {timestamp, entity, metric, value} - {None}
    others = [name for name in header if name not in fixed]
    if long:
        if settings.label_columns == ("*",):
            labels = others
        else:
            wanted = {c.lower() for c in settings.label_columns}
            labels = [name for name in others if name.strip().lower() in wanted]
        types = {timestamp: pa.timestamp("ns", tz="UTC"), value: pa.float64(), metric: _DICTIONARY}
        types.update({name: _DICTIONARY for name in labels})
    else:
        labels = []
        if not others:
            raise ParseError("no metric columns", f"a wide export needs metric columns next to {timestamp!r}; header is {header[:10]}")
        types = {timestamp: pa.timestamp("ns", tz="UTC")}
        types.update({name: pa.float64() for name in others})
    if entity is not None:
        types[entity] = _DICTIONARY
    entity_name = entity_from_key(key) if entity is None else None

    table, invalid = _read(text, delimiter, types)
    if table is not None and not invalid:
        parsed = _fast(table, timestamp, entity, entity_name, metric, value, others, labels, long, config)
        if parsed is not None:
            return parsed
    strings = {name: pa.string() for name in set(header)}
    table, invalid = _read(text, delimiter, strings)
    if table is None:
        raise ParseError("unreadable CSV", "pyarrow could not read the object even as text")
    return _slow(table, invalid, header, delimiter, timestamp, entity, entity_name, metric, value, others, labels, long, config)


def _read(text: bytes, delimiter: str, types: dict, threads: bool = True):
    """Read with the given column types; return ``(table or None, invalid records)``."""
    invalid: list[tuple[int | None, int, int, str]] = []

    def handle(row) -> str:
        invalid.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    try:
        table = pcsv.read_csv(
            io.BytesIO(text),
            read_options=pcsv.ReadOptions(use_threads=threads, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handle),
            convert_options=pcsv.ConvertOptions(
                column_types=types, null_values=list(NULL_VALUES), strings_can_be_null=True, quoted_strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid as error:
        message = str(error)
        if "UTF8" in message or "utf8" in message.lower():
            raise ParseError("not UTF-8 text", message.splitlines()[0][:200]) from None
        if all(t == pa.string() for t in types.values()):
            raise ParseError("unreadable CSV", message.splitlines()[0][:200]) from None
        return None, invalid
    if invalid and threads and any(number is None for number, *_ in invalid):
        # Record numbers of invalid rows are only known to a single-threaded read.
        return _read(text, delimiter, types, threads=False)
    return table, invalid


def _fast(table: pa.Table, timestamp, entity, entity_name, metric, value, others, labels, long, config) -> Parsed | None:
    """Build the samples straight from typed columns; None when anything must be rejected."""
    table = table.unify_dictionaries()
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
    if long:
        metrics = _trimmed(table.column(metric))
        if metrics is None:
            return None
        values = table.column(value).to_numpy()
        if np.isinf(values).any():
            return None
        label_json = _labels(table, labels) if labels else None
        return Parsed(make_table(millis, entities, metrics, values, label_json), Rejects(), "csv")
    columns = [table.column(name).to_numpy() for name in others]
    stacked = np.concatenate(columns) if columns else np.zeros(0)
    if np.isinf(stacked).any():
        return None
    width = len(others)
    metric_codes = np.repeat(np.arange(width, dtype=np.int32), count)
    metrics = pa.DictionaryArray.from_arrays(pa.array(metric_codes), pa.array([name.strip() for name in others]))
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


def _slow(table, invalid, header, delimiter, timestamp, entity, entity_name, metric, value, others, labels, long, config) -> Parsed:
    """Parse text columns one by one, rejecting what cannot be used, with its record text."""
    rejects = Rejects()
    record_numbers = _record_numbers(table.num_rows, [number for number, *_ in invalid])
    width = 1 if long else len(others)
    for number, expected, actual, text in invalid:
        rejects.add(number, f"{MALFORMED_RECORD}: expected {expected} fields, found {actual}", text, count=width)
    columns = [table.column(index).combine_chunks() for index in range(table.num_columns)]

    def raw(position: int) -> str:
        return _raw_line(columns, position, delimiter)

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
        label_json = _labels(table.filter(mask), labels) if labels else None
        curated = make_table(millis[keep], entities.filter(mask), metrics.filter(mask), values[keep], label_json)
        return Parsed(curated, rejects, "csv")

    pieces = []
    for name in others:
        values, value_reasons = parse_values(table.column(name), config.ingest.thousands_separator)
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


def _raw_line(columns: list[pa.Array], position: int, delimiter: str) -> str:
    fields = []
    for column in columns:
        item = column[position].as_py()
        fields.append("" if item is None else str(item))
    return delimiter.join(fields)


def _labels(table: pa.Table, names: list[str]) -> pa.DictionaryArray:
    """One JSON object per row from the label columns; each distinct combination is encoded once."""
    import json

    frame = pd.DataFrame({name: table.column(name).cast(pa.string()).to_pandas() for name in names})
    codes = frame.groupby(names, dropna=False, sort=False).ngroup().to_numpy(dtype=np.int32)
    firsts = pd.Series(np.arange(len(codes))).groupby(codes).first()
    documents = []
    for row in firsts.to_numpy():
        items = {name.strip(): frame.iat[row, index] for index, name in enumerate(names)}
        items = {k: v for k, v in items.items() if isinstance(v, str) and v != ""}
        documents.append(json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if items else None)
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(documents, type=pa.string()))
