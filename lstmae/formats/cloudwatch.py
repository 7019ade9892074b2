"""CloudWatch Metric Streams in the JSON output format, as Kinesis Data Firehose writes them to S3.

Each record is one JSON object (Firehose separates them by newlines; objects
written back to back are read too)::

    {"metric_stream_name": "fleet", "account_id": "123456789012", "region": "eu-west-1",
     "namespace": "AWS/EC2", "metric_name": "CPUUtilization",
     "dimensions": {"InstanceId": "i-0abc"}, "timestamp": 1788220800000,
     "value": {"max": 9.0, "min": 1.0, "sum": 15.0, "count": 3.0}, "unit": "Percent"}

The entity is the first dimension named in ``ingest.entity_labels``, the metric
name comes from ``ingest.cloudwatch_metric_name`` and the value from
``ingest.cloudwatch_statistic`` (``average`` is sum / count). The labels keep
the dimensions, namespace, unit, region and account.
"""

from __future__ import annotations

import math

import numpy as np

from lstmae.formats.common import (
    INFINITE_VALUE,
    MALFORMED_RECORD,
    NOT_A_NUMBER,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
    Parsed,
    SampleBuilder,
    epoch_to_ms,
    labels_json,
    to_float,
)

MISSING_STATISTIC = "statistic missing from the record's value: set ingest.cloudwatch_statistic"
ZERO_COUNT = "average of a value with count 0"


def statistic(value: dict, name: str) -> tuple[float | None, str | None]:
    """Return ``(number, None)`` or ``(None, reason)`` for statistic ``name`` of a record's value.

    >>> statistic({"sum": 15.0, "count": 3.0, "min": 1.0, "max": 9.0}, "average")
    (5.0, None)
    """
    if name == "average":
        total, count = value.get("sum"), value.get("count")
        if not _is_number(total) or not _is_number(count):
            return None, MISSING_STATISTIC
        if count == 0:
            return None, ZERO_COUNT
        total, count = to_float(total), to_float(count)
        if math.isinf(total) or math.isinf(count):
            return None, INFINITE_VALUE
        number = total / count
    else:
        number = value.get(name)
        if number is None:
            return None, MISSING_STATISTIC
        if not _is_number(number):
            return None, NOT_A_NUMBER
        number = to_float(number)
    if math.isinf(number):
        return None, INFINITE_VALUE
    return number, None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_cloudwatch(key: str, records, config) -> Parsed:
    """Parse decoded Metric Streams records.

    Args:
        records: ``(line, object or None, raw text)`` per record; None marks text that is no JSON.
    """
    settings = config.ingest
    builder = SampleBuilder(config, "cloudwatch")
    for line, record, raw in records:
        builder.guard(key, line, raw, 1, lambda: _add_record(builder, settings, line, record, raw))
    return builder.parsed()


def _add_record(builder: SampleBuilder, settings, line: int, record, raw: str) -> None:
    """Add the sample of one record, or reject it."""
    if not isinstance(record, dict):
        builder.rejects.add(line, f"{MALFORMED_RECORD}: not a JSON object", raw[:500])
        return
    namespace, metric_name, value = record.get("namespace"), record.get("metric_name"), record.get("value")
    dimensions = record.get("dimensions") or {}
    if not isinstance(namespace, str) or not isinstance(metric_name, str) or not isinstance(value, dict) or not isinstance(dimensions, dict):
        builder.rejects.add(line, f"{MALFORMED_RECORD}: needs namespace, metric_name, dimensions and a value object", raw[:500])
        return
    fields = {str(k): str(v) for k, v in dimensions.items()}
    labels = dict(fields)
    for name in ("namespace", "unit", "region", "account_id"):
        if isinstance(record.get(name), str):
            labels[name] = record[name]
    entity, metric, reason = builder.resolve(_fields(fields, record), settings.cloudwatch_metric_name)
    if reason is not None:
        builder.rejects.add(line, reason, raw[:500])
        return
    stamp = record.get("timestamp")
    if not _is_number(stamp):
        builder.rejects.add(line, UNPARSEABLE_TIMESTAMP, raw[:500])
        return
    millis, ok = epoch_to_ms(np.array([to_float(stamp)], dtype=np.float64), "ms")
    if not ok[0]:
        builder.rejects.add(line, TIMESTAMP_OUT_OF_RANGE, raw[:500])
        return
    number, reason = statistic(value, settings.cloudwatch_statistic)
    if reason is not None:
        builder.rejects.add(line, reason, raw[:500])
        return
    builder.add_sample(entity, metric, labels_json(labels), int(millis[0]), number)


def _fields(dimensions: dict, record: dict) -> dict:
    """Template fields of a record: its dimensions plus namespace, metric_name and unit."""
    fields = dict(dimensions)
    for name in ("namespace", "metric_name", "unit"):
        if isinstance(record.get(name), str):
            fields[name] = record[name]
    return fields
