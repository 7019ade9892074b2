"""Arrow schemas of the curated metrics and of every output table.

These are the stable contracts documented in ``docs/schemas.md``; a change to
one of them bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: windows.slo_features; slo_violations and drift_events tables

TIMESTAMP = pa.timestamp("ms", tz="UTC")

CURATED = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("labels", pa.string()),  # JSON object of the export's labels, or null
        pa.field("source", pa.string(), nullable=False),  # landing key the row came from
    ]
)

FEATURE_ERROR = pa.struct(
    [
        pa.field("feature", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("reconstruction", pa.float64()),
        pa.field("error", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("ratio", pa.float64()),
    ]
)

SCORES = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("anomaly_score", pa.float64()),
        pa.field("score_threshold", pa.float64()),
        pa.field("is_anomaly", pa.bool_()),
        pa.field("early_warning_score", pa.float64()),
        pa.field("feature_errors", pa.list_(FEATURE_ERROR)),
    ]
)

_WINDOW_FIELDS = [
    pa.field("window_start", TIMESTAMP, nullable=False),
    pa.field("window_end", TIMESTAMP, nullable=False),
    pa.field("entity", pa.string(), nullable=False),
    pa.field("group", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("is_anomaly", pa.bool_(), nullable=False),
    pa.field("max_ratio", pa.float64()),
    pa.field("first_offending_timestamp", TIMESTAMP),
    pa.field("features_over_threshold", pa.list_(pa.string())),
    # Features with a value above their SLO limit in this window (empty: none).
    pa.field("slo_features", pa.list_(pa.string())),
]

# Verdict of every complete non-overlapping window, per group.
WINDOWS = pa.schema(_WINDOW_FIELDS)

# Anomalous windows only, with the weighted vote across groups.
ANOMALIES = pa.schema(
    _WINDOW_FIELDS
    + [
        pa.field("vote_score", pa.float64(), nullable=False),
        pa.field("is_vote_anomaly", pa.bool_(), nullable=False),
        pa.field("groups_flagging", pa.list_(pa.string())),
    ]
)

# Weighted vote across groups per entity and grid point.
VOTES = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("vote_score", pa.float64(), nullable=False),
        pa.field("is_vote_anomaly", pa.bool_(), nullable=False),
        pa.field("groups_flagging", pa.list_(pa.string())),
        pa.field("groups_scored", pa.int64(), nullable=False),
    ]
)

INCIDENTS = pa.schema(
    [
        pa.field("incident_id", pa.string(), nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("start", TIMESTAMP, nullable=False),
        pa.field("end", TIMESTAMP, nullable=False),
        pa.field("peak_timestamp", TIMESTAMP, nullable=False),
        pa.field("peak_score", pa.float64()),
        pa.field("points", pa.int64()),
        pa.field("top_features", pa.list_(pa.string())),
        pa.field("open", pa.bool_()),
    ]
)

# Runs of at least ``slo_windows`` consecutive windows with a value above an
# SLO limit, one row per run, in the partition of the day of ``end``. A run
# that continues into the next interval keeps its id there.
SLO_VIOLATIONS = pa.schema(
    [
        pa.field("violation_id", pa.string(), nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("start", TIMESTAMP, nullable=False),  # first point of the first violating window
        pa.field("end", TIMESTAMP, nullable=False),  # last point of the last violating window
        pa.field("windows", pa.int64(), nullable=False),
        pa.field("features", pa.list_(pa.string())),  # features over their limit, most frequent first
        pa.field("open", pa.bool_()),
    ]
)

# Context drift: a run of ``drift_windows`` consecutive anomalous windows.
DRIFT_EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_start", TIMESTAMP, nullable=False),
        pa.field("detected_at", TIMESTAMP, nullable=False),  # end of the drift_windows-th window
        pa.field("windows", pa.int64(), nullable=False),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),
    ]
)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
