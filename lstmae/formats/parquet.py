"""Parquet exports in long form: one row per sample.

Columns are found by ``ingest.timestamp_column``, ``entity_column``,
``metric_column`` and ``value_column`` (case-insensitive); further columns are
kept as labels per ``ingest.label_columns``. The timestamp may be a Parquet
timestamp (UTC-adjusted, or local time with ``timezone`` configured), an
epoch number or text. Values may be any numeric type or text, and types may
differ from one object to the next (integers one day, floats the next).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lstmae.formats.common import (
    MISSING_ENTITY,
    MISSING_METRIC,
    ParseError,
    Parsed,
    Rejects,
    make_table,
    parse_timestamps,
    parse_values,
)
from lstmae.formats.delimited import _labels

# What each role column may hold, for the message about a column of another type.
_EXPECTED = {
    "timestamp": "a timestamp, an epoch number or text",
    "entity": "text",
    "metric": "text",
    "value": "a number or text",
}


def parse_parquet(key: str, data: bytes, config) -> Parsed:
    """Parse a long-form Parquet export.

    Raises:
        ParseError: the object is no readable Parquet file or lacks a column.
    """
    settings = config.ingest
    try:
        # ParquetFile, not read_table: the dataset reader fails on a repeated column name before we can name it.
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ParseError("unreadable Parquet", str(error).splitlines()[0][:200]) from None
    lookup: dict[str, str] = {}
    for name in table.column_names:
        lookup.setdefault(name.strip().lower(), name)
    columns = {}
    for role, wanted in (
        ("timestamp", settings.timestamp_column),
        ("entity", settings.entity_column),
        ("metric", settings.metric_column),
        ("value", settings.value_column),
    ):
        if wanted.lower() not in lookup:
            raise ParseError(
                f"missing {role} column",
                f"no column {wanted!r} in {table.column_names[:10]}; a Parquet export is read in long form "
                f"(set ingest.{role}_column)",
            )
        columns[role] = lookup[wanted.lower()]
    others = [(position, name) for position, name in enumerate(table.column_names) if name not in columns.values()]
    if settings.label_columns == ("*",):
        labels = others
    else:
        wanted = {c.lower() for c in settings.label_columns}
        labels = [(position, name) for position, name in others if name.strip().lower() in wanted]

    used = [columns[role] for role in _EXPECTED] + [name for _, name in labels]
    for name in dict.fromkeys(used):
        repeats = table.column_names.count(name)
        if repeats > 1:
            hint = "" if name in columns.values() else " (or leave it out of ingest.label_columns)"
            raise ParseError(
                "repeated column name",
                f"column {name!r} appears {repeats} times; rename the repeated columns in the exporter{hint}",
            )
    for role, name in columns.items():
        kind = table.schema.field(name).type
        if pa.types.is_nested(kind):
            raise ParseError(
                "unusable column type",
                f"the {role} column {name!r} has type {kind}; expected {_EXPECTED[role]}: write it as such in the "
                f"exporter, or point ingest.{role}_column at another column",
            )

    rejects = Rejects()
    millis, time_reasons = parse_timestamps(table.column(columns["timestamp"]), config)
    values, value_reasons = parse_values(table.column(columns["value"]), settings.thousands_separator)
    entities = _names(table.column(columns["entity"]))
    metrics = _names(table.column(columns["metric"]))
    entity_ok = np.asarray(pc.and_kleene(pc.is_valid(entities), pc.not_equal(entities, "")).fill_null(False).to_numpy(zero_copy_only=False))
    metric_ok = np.asarray(pc.and_kleene(pc.is_valid(metrics), pc.not_equal(metrics, "")).fill_null(False).to_numpy(zero_copy_only=False))
    reasons = np.full(table.num_rows, None, dtype=object)
    for mask, reason in (
        (~metric_ok, MISSING_METRIC),
        (~entity_ok, MISSING_ENTITY),
    ):
        reasons[mask] = reason
    if value_reasons is not None:
        reasons[pd.isna(reasons) & ~pd.isna(value_reasons)] = value_reasons[pd.isna(reasons) & ~pd.isna(value_reasons)]
    if time_reasons is not None:
        has_time_reason = ~pd.isna(time_reasons)
        reasons[has_time_reason] = time_reasons[has_time_reason]
    bad = ~pd.isna(reasons)
    if bad.any():
        positions = np.flatnonzero(bad)
        for position, record in zip(positions, table.take(pa.array(positions)).to_pylist()):
            rejects.add(int(position) + 1, reasons[position], ", ".join(f"{k}={v}" for k, v in record.items())[:500])
    keep = pa.array(~bad)
    label_json = _labels(table.filter(keep), labels) if labels else None
    curated = make_table(millis[~bad], entities.filter(keep), metrics.filter(keep), values[~bad], label_json)
    return Parsed(curated, rejects, "parquet")


def _names(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    return pc.utf8_trim_whitespace(array)
