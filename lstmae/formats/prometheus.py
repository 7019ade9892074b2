"""Prometheus-style exports: ``query_range`` JSON and VictoriaMetrics ``/api/v1/export`` lines.

``query_range`` (Prometheus, Thanos, VictoriaMetrics, Mimir) returns::

    {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "node_load1", "instance": "node-1:9100"},
         "values": [[1788220800, "0.5"], [1788220815.5, "NaN"]]}]}}

Timestamps are Unix seconds (fractions allowed) and values are strings,
including ``"NaN"`` (curated as a missing value) and ``"+Inf"``/``"-Inf"``
(rejected: no scaler can use them). A ``vector`` result is read the same way.

VictoriaMetrics ``/api/v1/export`` writes one series per line::

    {"metric": {"__name__": "up", "instance": "node-1:9100"}, "values": [1, 1], "timestamps": [1788220800000, 1788220815000]}

with timestamps in milliseconds. Both map labels onto the curated columns
with ``ingest.entity_labels``, ``ingest.strip_port`` and ``ingest.metric_name``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa

from lstmae.formats.common import (
    MALFORMED_RECORD,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
    ParseError,
    Parsed,
    SampleBuilder,
    epoch_to_ms,
    labels_json,
    parse_values,
    to_float,
)

log = logging.getLogger(__name__)

NATIVE_HISTOGRAM = "native histogram samples are not supported: export a _bucket/_count/_sum series"


def parse_query_range(key: str, document: dict, config) -> Parsed:
    """Parse a decoded ``query_range`` (or instant ``query``) response."""
    status = document.get("status")
    if status == "error":
        raise ParseError(
            "Prometheus error response",
            f"{document.get('errorType', 'error')}: {str(document.get('error', ''))[:300]}",
        )
    data = document.get("data")
    if status != "success" or not isinstance(data, dict):
        raise ParseError("unsupported JSON", "expected a Prometheus response with status 'success' and a 'data' object")
    for warning in document.get("warnings") or []:
        log.warning("%s: the query response carries a warning: %s", key, str(warning)[:300])

    result_type = data.get("resultType")
    result = data.get("result")
    if result_type not in ("matrix", "vector") or not isinstance(result, list):
        raise ParseError(
            "unsupported result type",
            f"resultType {result_type!r}; export a range query (matrix) or an instant vector",
        )

    builder = SampleBuilder(config, "prometheus")
    for index, series in enumerate(result):
        count = _sample_count(series, result_type)
        builder.guard(key, None, _clip(series), count, lambda: _add_result(builder, index, series, result_type, count, config))
    return builder.parsed()


def _sample_count(series, result_type: str) -> int:
    """Samples a series of a response holds (values plus native histograms), for counting its rejects; at least 1."""
    if not isinstance(series, dict):
        return 1
    if result_type == "matrix":
        parts = [series.get("values"), series.get("histograms")]
        return max(sum(len(part) for part in parts if isinstance(part, list)), 1)
    return max(("value" in series) + ("histogram" in series), 1)


def _add_result(builder: SampleBuilder, index: int, series, result_type: str, count: int, config) -> None:
    if not isinstance(series, dict) or not isinstance(series.get("metric", {}), dict):
        builder.rejects.add(None, f"{MALFORMED_RECORD}: series {index} is not an object with 'metric'", _clip(series), count=count)
        return
    labels = {str(k): str(v) for k, v in series.get("metric", {}).items()}
    if result_type == "matrix":
        pairs = series.get("values") or []
        histograms = series.get("histograms") or []
    else:
        pairs = [series["value"]] if "value" in series else []
        histograms = [series["histogram"]] if "histogram" in series else []
    if not isinstance(histograms, list):
        histograms = [histograms]
    for histogram in histograms:
        builder.rejects.add(None, NATIVE_HISTOGRAM, f"{labels_json(labels)} {_clip(histogram)}")
    if not isinstance(pairs, list):
        builder.rejects.add(None, f"{MALFORMED_RECORD}: 'values' of series {index} is not a list", _clip(pairs))
        return
    times, texts, malformed = _pairs(pairs)
    for position in malformed:
        builder.rejects.add(None, f"{MALFORMED_RECORD}: a sample is not a [time, value] pair", f"{labels_json(labels)} {_clip(pairs[position])}")
    _add_series(builder, labels, times, "s", texts, config.ingest.metric_name, None)


def parse_victoriametrics(key: str, records, config) -> Parsed:
    """Parse decoded VictoriaMetrics export lines.

    Args:
        records: ``(line, object or None, raw text)`` per line; None marks a line that is no JSON.
    """
    builder = SampleBuilder(config, "victoriametrics")
    for line, record, raw in records:
        sizes = [len(record[name]) for name in ("values", "timestamps") if isinstance(record, dict) and isinstance(record.get(name), list)]
        count = max(sizes, default=1)
        builder.guard(key, line, _clip(raw), count, lambda: _add_export_line(builder, line, record, raw, config))
    return builder.parsed()


def _add_export_line(builder: SampleBuilder, line: int, record, raw: str, config) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("metric"), dict):
        builder.rejects.add(line, f"{MALFORMED_RECORD}: not a JSON object with 'metric', 'values' and 'timestamps'", _clip(raw))
        return
    values = record.get("values")
    stamps = record.get("timestamps")
    if not isinstance(values, list) or not isinstance(stamps, list) or len(values) != len(stamps):
        sizes = (len(values) if isinstance(values, list) else "no", len(stamps) if isinstance(stamps, list) else "no")
        count = max((len(x) for x in (values, stamps) if isinstance(x, list)), default=1)
        builder.rejects.add(line, f"{MALFORMED_RECORD}: {sizes[0]} values but {sizes[1]} timestamps", _clip(raw), count=max(count, 1))
        return
    labels = {str(k): str(v) for k, v in record["metric"].items()}
    texts = [_value_text(v) for v in values]
    if all(isinstance(t, int) and not isinstance(t, bool) and -_INT64 <= t < _INT64 for t in stamps):
        times = np.array(stamps, dtype=np.int64)
    else:
        # Beyond int64 becomes a float, out of range later; text and other JSON become NaN, unparseable.
        times = np.array([to_float(t) if _is_number(t) else np.nan for t in stamps], dtype=np.float64)
    _add_series(builder, labels, times, "ms", texts, config.ingest.metric_name, line)


_INT64 = 2**63


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(pairs: list) -> tuple[np.ndarray, list, list[int]]:
    """Split ``[[time, value], ...]`` into float times and value texts; list the malformed positions."""
    times = np.full(len(pairs), np.nan)
    texts: list = [None] * len(pairs)
    malformed = []
    for position, pair in enumerate(pairs):
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and _is_number(pair[0]):
            times[position] = to_float(pair[0])
            texts[position] = _value_text(pair[1])
        else:
            malformed.append(position)
    if malformed:
        keep = np.setdiff1d(np.arange(len(pairs)), malformed)
        return times[keep], [texts[i] for i in keep], malformed
    return times, texts, malformed


def _value_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"  # rejected as not a number
    if isinstance(value, (int, float)):
        return repr(to_float(value))  # an integer beyond float64 becomes "inf", rejected as infinite
    return json.dumps(value)[:100]


def _add_series(builder: SampleBuilder, labels: dict, times: np.ndarray, unit: str, texts: list, template: str, line: int | None) -> None:
    label_text = labels_json(labels)
    entity, metric, reason = builder.resolve(labels, template)
    if reason is not None:
        builder.rejects.add(line, reason, label_text, count=len(texts))
        return
    millis, time_ok = epoch_to_ms(times, unit)
    time_reasons = None
    if not time_ok.all():
        unreadable = np.isnan(times) if times.dtype.kind == "f" else np.zeros(len(times), dtype=bool)
        time_reasons = np.where(time_ok, None, np.where(unreadable, UNPARSEABLE_TIMESTAMP, TIMESTAMP_OUT_OF_RANGE)).astype(object)
    values, value_reasons = parse_values(pa.array(texts, type=pa.string()), "")

    def raw(position: int) -> str:
        return f"{label_text} [{times[position]}, {texts[position]!r}]"

    builder.add_checked(entity, metric, label_text, millis, time_reasons, values, value_reasons, line, raw)


def _clip(value, limit: int = 500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
