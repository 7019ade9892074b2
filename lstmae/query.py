"""Read the output tables back: recent incidents and the scores behind one incident.

The CLI (``lstmae incidents``), the alerts step and the anomalies page of the
Airflow plugin share these readers, so all of them see an incident the same
way. Everything goes through :class:`~lstmae.storage.Storage`, so ``file://``
and ``s3://`` lakes behave alike.

An incident that spans several days has one row, with the same
``incident_id``, in each daily partition of ``incidents/`` that it reaches.
Each row covers the incident from its start to the end of that day's
interval, so the readers here keep the latest row per id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lstmae import schema
from lstmae.lake import read_days, utc
from lstmae.storage import Storage

log = logging.getLogger(__name__)

INCIDENTS = "incidents"
SCORES = "scores"
SLO_VIOLATIONS = "slo_violations"

# Days shown as "recent" when no period is given.
RECENT_DAYS = 7

_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})/")


def partition_days(storage: Storage, table: str) -> list[pd.Timestamp]:
    """Return the UTC days that have a ``<table>/date=YYYY-MM-DD/`` partition, oldest first."""
    days = set()
    for key in storage.list(f"{table}/"):
        match = _DATE.search(key)
        if match:
            days.add(match.group(1))
    return [pd.Timestamp(day, tz="UTC") for day in sorted(days)]


def default_since(storage: Storage, days: int = RECENT_DAYS) -> pd.Timestamp | None:
    """Start of the last ``days`` days that have incident partitions (None when there are none).

    "Recent" is measured from the newest partition, not from the clock, so a
    lake that was backfilled for an older period still shows its incidents.
    """
    available = partition_days(storage, INCIDENTS)
    if not available:
        return None
    return available[-1] - pd.Timedelta(days=days - 1)


def read_incidents(
    storage: Storage,
    since=None,
    until=None,
    group: str | None = None,
    entity: str | None = None,
) -> pd.DataFrame:
    """Return the incidents that overlap ``[since, until)``, one row per ``incident_id``.

    Args:
        since: start of the period (timezone-aware, or an ISO 8601 string with
            an offset); default :func:`default_since`.
        until: end of the period, exclusive; default the end of the newest
            partition.
        group, entity: keep only incidents of this group or entity (exact match).

    Returns:
        Columns of :data:`lstmae.schema.INCIDENTS` plus ``date`` (the partition
        of the row kept), newest start first. Empty when nothing matches.
    """
    available = partition_days(storage, INCIDENTS)
    empty = pd.DataFrame({name: pd.Series(dtype=object) for name in schema.INCIDENTS.names + ["date"]})
    if not available:
        return empty
    since = utc(since) if since is not None else default_since(storage)
    until = utc(until) if until is not None else available[-1] + pd.Timedelta(days=1)
    if until <= since:
        raise ValueError(f"Empty period: since {since.isoformat()} is not before until {until.isoformat()}.")
    # An incident is stored under the day of its end. It overlaps the period
    # when it ends at or after ``since``, so reading starts on that day.
    first_day = since.floor("D")
    tables = []
    for day in available:
        if first_day <= day < until:
            table = read_days(storage, INCIDENTS, day, day + pd.Timedelta(days=1))
            if table is not None and table.num_rows:
                tables.append(table.append_column("date", pa.array([day.strftime("%Y-%m-%d")] * table.num_rows)))
    if not tables:
        return empty
    table = pa.concat_tables(tables, promote_options="default")
    mask = pc.and_(pc.greater_equal(table["end"], pa.scalar(since, schema.TIMESTAMP)),
                   pc.less(table["start"], pa.scalar(until, schema.TIMESTAMP)))
    if group is not None:
        mask = pc.and_(mask, pc.equal(table["group"], group))
    if entity is not None:
        mask = pc.and_(mask, pc.equal(table["entity"], entity))
    frame = table.filter(mask).to_pandas()
    if frame.empty:
        return empty
    frame = frame.sort_values(["incident_id", "end", "points"], kind="stable")
    frame = frame.drop_duplicates("incident_id", keep="last")
    return frame.sort_values(["start", "incident_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def find_incident(storage: Storage, incident_id: str, day=None) -> dict:
    """Return the latest row of one incident as a dict.

    Args:
        incident_id: the id from ``incidents/``.
        day: the partition date (``YYYY-MM-DD``) of the row, when known; the
            search then reads that day first instead of every partition.

    Raises:
        LookupError: no partition contains the id.
    """
    days = partition_days(storage, INCIDENTS)
    if day is not None:
        hint = pd.Timestamp(day)
        hint = (hint.tz_localize("UTC") if hint.tzinfo is None else hint.tz_convert("UTC")).floor("D")
        # The latest row of an incident is in its hinted day or a later one.
        days = [d for d in days if d >= hint] or days
    best = None
    for candidate in reversed(days):
        table = read_days(storage, INCIDENTS, candidate, candidate + pd.Timedelta(days=1))
        if table is None:
            continue
        rows = table.filter(pc.equal(table["incident_id"], incident_id))
        if rows.num_rows:
            row = max(rows.to_pylist(), key=lambda r: (r["end"], r["points"] or 0))
            row["date"] = candidate.strftime("%Y-%m-%d")
            best = row
            break
    if best is None:
        raise LookupError(f"Incident {incident_id!r} not found in {storage.uri_of(INCIDENTS)}.")
    return best


@dataclass
class FeatureSeries:
    """Actual and reconstructed values of one feature around an incident.

    Attributes:
        feature: feature name.
        timestamps: ISO 8601 strings, one per scored grid point.
        values, reconstructions: original units; None where a point was not scored.
        thresholds: the feature's error threshold at each point (original
            units): the point's error counts as high above this value.
        ratios: error divided by threshold at each point.
    """

    feature: str
    timestamps: list[str]
    values: list[float | None]
    reconstructions: list[float | None]
    thresholds: list[float | None]
    ratios: list[float | None]


def incident_series(
    storage: Storage,
    incident: dict,
    features: int = 3,
    padding: pd.Timedelta | None = None,
    max_points: int = 2000,
) -> dict:
    """Return the scores around one incident: anomaly score and the top features' values.

    Args:
        incident: a row of ``incidents/`` (from :func:`find_incident`).
        features: how many of the incident's ``top_features`` to return
            (default 3). When the incident lists none, the features with the
            largest error ratio at the peak are returned.
        padding: time shown before the start and after the end; default half
            the incident's length, at least one hour.
        max_points: cap on points returned; the window is cut around the peak
            when the padded range holds more.

    Returns:
        ``{"timestamps", "anomaly_score", "score_threshold", "is_anomaly",
        "features": [FeatureSeries as dict, ...]}`` in time order.
    """
    start, end = utc(incident["start"]), utc(incident["end"])
    if padding is None:
        padding = max(pd.Timedelta(hours=1), (end - start) / 2)
    low, high = start - padding, end + padding + pd.Timedelta(1, "ms")
    table = read_days(storage, SCORES, low, high, group=incident["group"])
    if table is None:
        return {"timestamps": [], "anomaly_score": [], "score_threshold": [], "is_anomaly": [], "features": []}
    mask = pc.and_(
        pc.equal(table["entity"], incident["entity"]),
        pc.and_(pc.greater_equal(table["timestamp"], pa.scalar(low, schema.TIMESTAMP)),
                pc.less(table["timestamp"], pa.scalar(high, schema.TIMESTAMP))),
    )
    rows = table.filter(mask).sort_by("timestamp").to_pylist()
    if len(rows) > max_points:
        peak = utc(incident["peak_timestamp"])
        centre = min(range(len(rows)), key=lambda i: abs(rows[i]["timestamp"] - peak))
        first = max(0, min(centre - max_points // 2, len(rows) - max_points))
        rows = rows[first : first + max_points]
    chosen = list(incident.get("top_features") or [])[:features]
    if not chosen:
        chosen = _largest_at_peak(rows, incident, features)
    series = {name: FeatureSeries(name, [], [], [], [], []) for name in chosen}
    result = {"timestamps": [], "anomaly_score": [], "score_threshold": [], "is_anomaly": []}
    for row in rows:
        stamp = row["timestamp"].isoformat()
        result["timestamps"].append(stamp)
        result["anomaly_score"].append(row["anomaly_score"])
        result["score_threshold"].append(row["score_threshold"])
        result["is_anomaly"].append(row["is_anomaly"])
        by_name = {item["feature"]: item for item in row["feature_errors"] or []}
        for name, entry in series.items():
            item = by_name.get(name)
            entry.timestamps.append(stamp)
            entry.values.append(item["value"] if item else None)
            entry.reconstructions.append(item["reconstruction"] if item else None)
            entry.thresholds.append(item["threshold"] if item else None)
            entry.ratios.append(item["ratio"] if item else None)
    result["features"] = [entry.__dict__ for entry in series.values()]
    return result


def _largest_at_peak(rows: list[dict], incident: dict, count: int) -> list[str]:
    peak = utc(incident["peak_timestamp"])
    for row in rows:
        if row["timestamp"] == peak and row["feature_errors"]:
            ranked = sorted(row["feature_errors"], key=lambda item: -(item["ratio"] or 0.0))
            return [item["feature"] for item in ranked[:count]]
    return []


def read_slo_violations(storage: Storage, start, end) -> pd.DataFrame:
    """Return the ``slo_violations/`` rows of the days ``[start, end)`` touches (empty when there are none)."""
    table = read_days(storage, SLO_VIOLATIONS, start, end)
    return table.to_pandas() if table is not None else pd.DataFrame()
