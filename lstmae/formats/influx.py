"""InfluxDB line protocol, as Telegraf's file output writes it.

One point per line: ``measurement[,tag=value...] field=value[,field=value...] [timestamp]``::

    cpu,cpu=cpu-total,host=node-1 usage_idle=97.5,usage_user=1.25 1788220800000000000
    mem,host=node-1 used_percent=41.2,available=8123456i 1788220800000000000

Each numeric field is one sample. Floats, integers (``42i``), unsigned
integers (``42u``) and booleans (1.0 and 0.0) are read; string fields are
rejected. Commas, spaces and equals signs may be escaped with a backslash.
Timestamps are integers in ``ingest.influx_precision`` (nanoseconds by
default). The entity is the first tag named in ``ingest.entity_labels`` and the
metric name comes from ``ingest.influx_metric_name``; the tags are kept as labels.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from lstmae.formats.common import (
    INFINITE_VALUE,
    MALFORMED_RECORD,
    MISSING_TIMESTAMP,
    NOT_A_NUMBER,
    PARSER_FAILURE,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
    Parsed,
    SampleBuilder,
    epoch_to_ms,
    labels_json,
)

_LINE = re.compile(r'^(?P<series>(?:[^ \\]|\\.)+) +(?P<fields>(?:[^ "\\]|\\.|"(?:[^"\\]|\\.)*")+)(?: +(?P<time>\S+))? *$')
_FIELD = re.compile(r'((?:[^,=\\ ]|\\.)+)=("(?:[^"\\]|\\.)*"|[^,]*)(,|$)')
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
_ESCAPE = re.compile(r"\\(.)")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^[+-]?[0-9]+[iu]$")
_STAMP = re.compile(r"^-?[0-9]{1,19}$")
_INT64 = 2**63
log = logging.getLogger(__name__)
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}
STRING_FIELD = "value is not a number: string field"


def field_value(text: str) -> tuple[float | None, str | None]:
    """Return ``(number, None)`` or ``(None, reason)`` for one field value.

    Numbers beyond float64 (``1e999``, an integer of 400 digits) are infinite
    and rejected as such.

    >>> field_value("42i"), field_value("1.5"), field_value("true"), field_value('"up"')[1]
    ((42.0, None), (1.5, None), (1.0, None), 'value is not a number: string field')
    >>> field_value("1e999")
    (None, 'value is infinite')
    """
    if text.startswith('"'):
        return None, STRING_FIELD
    number = None
    if _INTEGER.match(text):
        try:
            number = float(int(text[:-1]))
        except OverflowError:
            number = math.inf
    elif _FLOAT.match(text):
        number = float(text)
    if number is not None:
        return (None, INFINITE_VALUE) if math.isinf(number) else (number, None)
    if text in _TRUE:
        return 1.0, None
    if text in _FALSE:
        return 0.0, None
    return None, NOT_A_NUMBER


def parse_influx(key: str, text: str, config) -> Parsed:
    """Parse line protocol text; comments (``#``) and blank lines are not samples."""
    settings = config.ingest
    builder = SampleBuilder(config, "influx")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        mark = builder.mark()
        try:
            _parse_line(builder, settings, number, stripped)
        except Exception as error:  # a parser bug costs this line only, and its fields are counted
            log.exception("%s: parser failed on line %d", key, number)
            builder.rollback(mark)
            match = _LINE.match(stripped)
            fields = (_fields(match.group("fields")) if match else None) or [None]
            builder.rejects.add(number, PARSER_FAILURE, f"{type(error).__name__}: {error}; {stripped[:400]}", count=len(fields))
    return builder.parsed()


def _parse_line(builder: SampleBuilder, settings, number: int, stripped: str) -> None:
    """Add the samples of one non-blank line, or its rejects."""
    match = _LINE.match(stripped)
    fields = _fields(match.group("fields")) if match else None
    if match is None or fields is None:
        builder.rejects.add(number, f"{MALFORMED_RECORD}: not a line-protocol point", stripped[:500])
        return
    parts = _UNESCAPED_COMMA.split(match.group("series"))
    measurement = _ESCAPE.sub(r"\1", parts[0])
    tags = {}
    for part in parts[1:]:
        pair = _UNESCAPED_EQUALS.split(part, maxsplit=1)
        if len(pair) != 2 or not pair[0] or not pair[1]:
            tags = None
            break
        tags[_ESCAPE.sub(r"\1", pair[0])] = _ESCAPE.sub(r"\1", pair[1])
    if tags is None or not measurement:
        builder.rejects.add(number, f"{MALFORMED_RECORD}: invalid measurement or tag", stripped[:500], count=len(fields))
        return
    stamp = match.group("time")
    reason = None
    millis = 0
    if stamp is None:
        reason = MISSING_TIMESTAMP
    elif not _STAMP.match(stamp):
        reason = UNPARSEABLE_TIMESTAMP
    elif not -_INT64 <= int(stamp) < _INT64:
        reason = TIMESTAMP_OUT_OF_RANGE
    else:
        converted, ok = epoch_to_ms(np.array([int(stamp)], dtype=np.int64), settings.influx_precision)
        millis = int(converted[0])
        reason = None if ok[0] else TIMESTAMP_OUT_OF_RANGE
    label_text = labels_json(tags)
    for name, raw_value in fields:
        if reason is not None:
            builder.rejects.add(number, reason, f"{name}: {stripped[:500]}")
            continue
        entity, metric, problem = builder.resolve({**tags, "measurement": measurement, "field": name}, settings.influx_metric_name)
        value, value_problem = field_value(raw_value)
        problem = problem or value_problem
        if problem is not None:
            builder.rejects.add(number, problem, f"{name}: {stripped[:500]}")
            continue
        builder.add_sample(entity, metric, label_text, millis, value)


def _fields(text: str) -> list[tuple[str, str]] | None:
    """Split ``a=1,b="x,y"`` into ``[(name, value text)]``; None when malformed."""
    fields = []
    position = 0
    while position < len(text):
        match = _FIELD.match(text, position)
        if match is None or not match.group(2):
            return None
        fields.append((_ESCAPE.sub(r"\1", match.group(1)), match.group(2)))
        position = match.end()
        if match.group(3) == "" and position < len(text):
            return None
    return fields or None
