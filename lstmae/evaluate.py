"""Evaluate anomaly scores against labelled anomalies, with the field's metrics.

Inputs are the product's ``scores`` table, from the lake or a Parquet file,
and a labels file: ``timestamp,label`` with an optional ``entity`` column and
1 where an anomaly is labelled. An optional interpretation file
(``start,end,metrics``, metrics separated by ``;``) names the metrics
responsible for each labelled anomaly.

Metrics, per entity and averaged over entities:

* point-wise precision, recall and F1 of the product's ``is_anomaly`` labels;
* the best point-wise F1 over every threshold on ``anomaly_score`` (an oracle:
  it looks at the labels, so it bounds what a threshold could reach);
* point-adjusted F1: a labelled segment counts as wholly found when any of its
  points is flagged. Papers report it, but it rewards a detector that flags a
  few random points inside long segments, so it is never the headline;
* event-wise precision, recall and F1 in the convention of the Orion
  benchmark (``orion.evaluation.contextual``): every labelled segment
  overlapped by at least one predicted incident is one true positive, every
  labelled segment overlapped by none is one false negative, and every
  predicted incident that overlaps no labelled segment is one false positive.
  Several incidents on one segment count once, so splitting an incident earns
  nothing. The delay of a found segment is the time from its first labelled
  point to the start of the first incident that overlaps it (0 when that
  incident started earlier);
* false alarms per entity-day of normal data: false-positive incidents divided
  by the duration of the unlabelled points;
* the area under the precision-recall curve of ``anomaly_score`` (average
  precision, with tied scores as one threshold);
* attribution HitRate@100 % and @150 %: at each labelled point that the product
  flagged and the interpretation file explains with the metric set ``G``, the
  share of ``G`` found among the ``floor(P * |G|)`` features with the largest
  error ratio at that point, averaged over those points.

Points without a score (unscorable, or missing from the scores table) count
as not flagged and get the lowest score.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

HIT_RATE_PERCENTS = (100, 150)


def label_segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Return the runs of 1 in ``labels`` as ``(first, last)`` inclusive indices.

    >>> label_segments(np.array([0, 1, 1, 0, 1]))
    [(1, 2), (4, 4)]
    """
    labels = np.asarray(labels).astype(bool)
    padded = np.concatenate([[False], labels, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(first), int(last) - 1) for first, last in zip(changes[::2], changes[1::2])]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def point_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Point-wise precision, recall and F1 of boolean ``predicted`` against ``labels``.

    Args:
        labels: ``(points,)`` 0/1 or booleans.
        predicted: ``(points,)`` booleans.

    Returns:
        ``{"precision", "recall", "f1", "tp", "fp", "fn"}``; precision is 0
        when nothing is flagged and recall is 0 when nothing is labelled.
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels and predicted differ in shape: {labels.shape} and {predicted.shape}.")
    tp = int(np.sum(labels & predicted))
    fp = int(np.sum(~labels & predicted))
    fn = int(np.sum(labels & ~predicted))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "tp": tp, "fp": fp, "fn": fn}


def point_adjust(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Flag every point of a labelled segment in which any point is flagged.

    >>> point_adjust(np.array([0, 1, 1, 1, 0]), np.array([1, 0, 1, 0, 0])).astype(int)
    array([1, 1, 1, 1, 0])
    """
    adjusted = np.asarray(predicted).astype(bool).copy()
    for first, last in label_segments(labels):
        if adjusted[first : last + 1].any():
            adjusted[first : last + 1] = True
    return adjusted


def _precision_recall_curve(labels: np.ndarray, scores: np.ndarray):
    """Precision and recall at every distinct score, highest threshold first."""
    labels = np.asarray(labels).astype(bool)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    flagged = np.arange(1, len(scores) + 1)
    # The last index of each run of tied scores: a threshold flags all of a tie or none.
    last_of_tie = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    tp = true_positives[last_of_tie]
    precision = tp / flagged[last_of_tie]
    recall = tp / max(1, labels.sum())
    return precision, recall, sorted_scores[last_of_tie]


def best_f1(labels: np.ndarray, scores: np.ndarray) -> dict:
    """Best point-wise F1 over every threshold ``score >= t`` (an oracle on the labels).

    Non-finite scores are never flagged. Returns ``{"f1", "precision",
    "recall", "threshold"}``; all 0 and threshold None when nothing is labelled.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not labels.any() or not finite.any():
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": None}
    precision, recall, thresholds = _precision_recall_curve(labels, scores)
    usable = np.isfinite(thresholds)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    f1 = np.where(usable, f1, -1.0)
    best = int(np.argmax(f1))
    return {"f1": float(f1[best]), "precision": float(precision[best]), "recall": float(recall[best]),
            "threshold": float(thresholds[best])}


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve: ``sum((R_n - R_{n-1}) * P_n)`` over thresholds.

    The step-wise sum used by scikit-learn's ``average_precision_score``,
    without interpolation; tied scores form one threshold. Non-finite scores
    rank last. Returns 0.0 when nothing is labelled.

    >>> average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    0.8333333333333333
    """
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return 0.0
    precision, recall, _ = _precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))


def _soft_labels(labels: np.ndarray, segments: list[tuple[int, int]], buffer: int) -> np.ndarray:
    """Labels widened by ``buffer // 2`` points on each side of every segment, with a falling weight.

    A point ``k`` steps outside a segment gets ``sqrt(1 - k / buffer)``;
    overlapping ramps are capped at 1.
    """
    soft = labels.astype(np.float64).copy()
    length = len(soft)
    for first, last in segments:
        after = np.arange(last + 1, min(last + buffer // 2 + 1, length))
        soft[after] += np.sqrt(1 - (after - last) / buffer)
        before = np.arange(max(first - buffer // 2, 0), first)
        soft[before] += np.sqrt(1 - (first - before) / buffer)
    return np.minimum(soft, 1.0)


def _widened_ranges(segments: list[tuple[int, int]], buffer: int, length: int) -> list[tuple[int, int]]:
    """Segments widened by ``buffer // 2`` on each side, merged where they touch."""
    ranges: list[tuple[int, int]] = []
    for first, last in segments:
        low, high = max(first - buffer // 2, 0), min(last + buffer // 2, length - 1)
        if ranges and low <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], high))
        else:
            ranges.append((low, high))
    return ranges


def vus_pr(labels: np.ndarray, scores: np.ndarray, max_buffer: int = 100, thresholds: int = 250) -> float:
    """Volume under the range-based precision-recall surface (VUS-PR).

    The measure of Paparrizos et al., "Volume Under the Surface: a new
    accuracy evaluation measure for time-series anomaly detection" (PVLDB
    15(11), 2022), computed as in the ``vus`` package 0.0.6 (TSB-AD's
    version). For each buffer ``b`` in ``0..max_buffer``:

    * every labelled segment is widened by ``b // 2`` points on each side,
      where the label falls from 1 as ``sqrt(1 - k / b)`` with the distance
      ``k`` to the segment;
    * at each of ``thresholds`` thresholds (the scores at evenly spaced
      ranks, highest first), the flagged points give ``TP``, the sum of the
      labels they hit. Widened points count only where flagged, so
      ``P' = P + (TP on widened points) / 2``. Precision is
      ``TP / flagged``, and recall is ``min(1, TP / P')`` times the share of
      widened segments that hold a flagged point;
    * the range-based average precision is ``sum((R_j - R_{j-1}) * P_j)``,
      starting from recall 0.

    VUS-PR is the mean of that average precision over the buffers. NaN
    scores rank lowest.

    Args:
        labels: ``(points,)`` 0/1.
        scores: ``(points,)`` anomaly scores.
        max_buffer: the largest buffer, in points. Default 100, the default
            of TSB-AD's metric function.
        thresholds: thresholds per curve. Default 250, as in TSB-AD.

    Returns:
        VUS-PR in ``[0, 1]``, or 0.0 when nothing is labelled.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    segments = label_segments(labels)
    if not segments:
        return 0.0
    finite = np.isfinite(scores)
    lowest = scores[finite].min() - 1.0 if finite.any() else 0.0
    scores = np.where(finite, scores, lowest)
    ranked = -np.sort(-scores)
    cuts = ranked[np.linspace(0, len(scores) - 1, thresholds).astype(int)]
    flagged = scores[None, :] >= cuts[:, None]  # (thresholds, points)
    flagged_counts = flagged.sum(axis=1)
    flagged_float = flagged.astype(np.float64)
    running = np.concatenate([np.zeros((thresholds, 1), dtype=np.int64), np.cumsum(flagged, axis=1)], axis=1)
    positives = labels.sum()
    areas = []
    for buffer in range(max_buffer + 1):
        soft = _soft_labels(labels, segments, buffer)
        true_positives = flagged_float @ soft
        widened_hits = flagged_float @ np.where(labels, 0.0, soft)
        ranges = _widened_ranges(segments, buffer, len(labels))
        found = np.zeros(thresholds)
        for low, high in ranges:
            found += (running[:, high + 1] - running[:, low]) > 0
        recall = np.minimum(true_positives / (positives + widened_hits / 2), 1.0) * found / len(ranges)
        precision = true_positives / flagged_counts
        areas.append(float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision)))
    return float(np.mean(areas))


@dataclass(frozen=True)
class Event:
    """A time range ``[start, end]`` (both inclusive), labelled or predicted."""

    start: pd.Timestamp
    end: pd.Timestamp


def events_from_labels(timestamps: pd.DatetimeIndex, labels: np.ndarray) -> list[Event]:
    """Turn runs of labelled points into events from their first to their last timestamp."""
    return [Event(timestamps[first], timestamps[last]) for first, last in label_segments(labels)]


def event_metrics(labelled: list[Event], predicted: list[Event]) -> dict:
    """Event-wise precision, recall, F1 and detection delay (Orion's overlap convention).

    Args:
        labelled: labelled segments.
        predicted: predicted incidents.

    Returns:
        ``{"precision", "recall", "f1", "tp", "fp", "fn", "delays"}``; ``tp``
        counts labelled segments overlapped by an incident, ``fp`` incidents
        that overlap no segment, ``fn`` segments that no incident overlaps;
        ``delays`` is a list of ``pd.Timedelta``, one per found segment.
    """
    matched = [False] * len(predicted)
    tp = fn = 0
    delays = []
    for segment in labelled:
        overlapping = [i for i, event in enumerate(predicted) if event.start <= segment.end and segment.start <= event.end]
        if not overlapping:
            fn += 1
            continue
        tp += 1
        for i in overlapping:
            matched[i] = True
        first_start = min(predicted[i].start for i in overlapping)
        delays.append(max(pd.Timedelta(0), first_start - segment.start))
    fp = matched.count(False)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall),
            "tp": tp, "fp": fp, "fn": fn, "delays": delays}


def hit_rate(ranked: list[list[str]], truth: list[set[str]], percent: float) -> float | None:
    """Mean share of the true metrics among the top ``floor(percent/100 * |G|)`` ranked features.

    Args:
        ranked: per point, feature names ordered by contribution, largest first.
        truth: per point, the labelled set ``G`` of responsible metrics.
        percent: 100 or 150 in the literature.

    Returns:
        The mean HitRate over the points, or None when there is no point.

    >>> hit_rate([["a", "b", "c"]], [{"a", "c"}], 100)
    0.5
    >>> hit_rate([["a", "b", "c"]], [{"a", "c"}], 150)
    1.0
    """
    if len(ranked) != len(truth):
        raise ValueError(f"ranked and truth differ in length: {len(ranked)} and {len(truth)}.")
    rates = []
    for features, expected in zip(ranked, truth):
        if not expected:
            continue
        top = set(features[: math.floor(percent / 100 * len(expected))])
        rates.append(len(top & expected) / len(expected))
    return float(np.mean(rates)) if rates else None


def incidents_from_points(timestamps: pd.DatetimeIndex, flagged: np.ndarray, step: pd.Timedelta, merge_steps: int) -> list[Event]:
    """Merge flagged points closer than ``merge_steps`` grid steps into events.

    >>> times = pd.date_range("2026-01-01", periods=8, freq="1min", tz="UTC")
    >>> [(e.start.minute, e.end.minute) for e in incidents_from_points(times, np.array([1, 1, 0, 0, 1, 0, 0, 0]), pd.Timedelta("1min"), 2)]
    [(0, 1), (4, 4)]
    """
    times = timestamps[np.asarray(flagged).astype(bool)]
    if len(times) == 0:
        return []
    gaps = np.flatnonzero((times[1:] - times[:-1]) > merge_steps * step)
    firsts = np.concatenate([[0], gaps + 1])
    lasts = np.concatenate([gaps, [len(times) - 1]])
    return [Event(times[a], times[b]) for a, b in zip(firsts, lasts)]


def evaluate_series(
    timestamps: pd.DatetimeIndex,
    labels: np.ndarray,
    scores: np.ndarray,
    flagged: np.ndarray,
    incidents: list[Event],
    step: pd.Timedelta,
    ranked_features: list[list[str]] | None = None,
    interpretation: pd.DataFrame | None = None,
) -> dict:
    """Compute every metric for one entity.

    Args:
        timestamps: ``(points,)`` grid timestamps of the labelled period.
        labels: ``(points,)`` 0/1 labels.
        scores: ``(points,)`` anomaly scores, NaN where unscored.
        flagged: ``(points,)`` the product's anomaly labels.
        incidents: predicted incidents of the entity.
        step: grid step, for the normal-time denominator of false alarms.
        ranked_features: per point, features by decreasing contribution
            (needed for HitRate).
        interpretation: ``start, end, metrics`` rows (metrics a set of names).

    Returns:
        A JSON-serialisable dict of metrics.
    """
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(flagged).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    labelled_events = events_from_labels(timestamps, labels)
    events = event_metrics(labelled_events, incidents)
    normal_days = float((~labels).sum() * step / pd.Timedelta(days=1))
    delays = [d / step for d in events.pop("delays")]
    report = {
        "points": int(len(labels)),
        "labelled_points": int(labels.sum()),
        "flagged_points": int(flagged.sum()),
        "flagged_fraction": _ratio(int(flagged.sum()), len(flagged)),
        "scored_points": int(np.isfinite(scores).sum()),
        "point": point_metrics(labels, flagged),
        "best": best_f1(labels, scores),
        "point_adjusted": point_metrics(labels, point_adjust(labels, flagged)),
        "event": events,
        "segments": len(labelled_events),
        "incidents": len(incidents),
        "false_alarms_per_day": _ratio(events["fp"], normal_days),
        "normal_days": normal_days,
        "delay_steps_mean": float(np.mean(delays)) if delays else None,
        "delay_steps_median": float(np.median(delays)) if delays else None,
        "auc_pr": average_precision(labels, scores),
        "vus_pr": vus_pr(labels, scores),
    }
    report["hit_rate"] = {str(p): None for p in HIT_RATE_PERCENTS}
    report["attribution_points"] = 0
    if interpretation is not None and ranked_features is not None and len(interpretation):
        ranked, truth = [], []
        for row in interpretation.itertuples():
            inside = np.flatnonzero((timestamps >= row.start) & (timestamps <= row.end) & labels & flagged)
            for position in inside:
                ranked.append(ranked_features[position])
                truth.append(set(row.metrics))
        report["attribution_points"] = len(ranked)
        report["hit_rate"] = {str(p): hit_rate(ranked, truth, p) for p in HIT_RATE_PERCENTS}
    return report


SUMMARY_KEYS = (
    ("flagged_fraction", ("flagged_fraction",)),
    ("point_f1", ("point", "f1")),
    ("point_precision", ("point", "precision")),
    ("point_recall", ("point", "recall")),
    ("best_f1", ("best", "f1")),
    ("point_adjusted_f1", ("point_adjusted", "f1")),
    ("event_f1", ("event", "f1")),
    ("event_precision", ("event", "precision")),
    ("event_recall", ("event", "recall")),
    ("false_alarms_per_day", ("false_alarms_per_day",)),
    ("delay_steps_mean", ("delay_steps_mean",)),
    ("auc_pr", ("auc_pr",)),
    ("vus_pr", ("vus_pr",)),
    ("hit_rate_100", ("hit_rate", "100")),
    ("hit_rate_150", ("hit_rate", "150")),
)


def _lookup(report: dict, path: tuple[str, ...]):
    if path == ("flagged_fraction",) and path[0] not in report:
        return _ratio(report["flagged_points"], report["points"])
    if path == ("vus_pr",) and path[0] not in report:
        return None  # reports written before VUS-PR was computed
    value = report
    for key in path:
        value = value[key]
    return value


def summarise(entities: dict[str, dict]) -> dict:
    """Flatten per-entity reports and average each metric over the entities that have it."""
    rows = {name: {key: _lookup(report, path) for key, path in SUMMARY_KEYS} for name, report in entities.items()}
    mean = {}
    for key, _ in SUMMARY_KEYS:
        values = [row[key] for row in rows.values() if row[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
    return {"entities": rows, "mean": mean}


def markdown_table(summary: dict, keys: tuple[str, ...] | None = None) -> str:
    """Render :func:`summarise` output as a Markdown table, one row per entity and a mean row."""
    keys = keys or tuple(key for key, _ in SUMMARY_KEYS)
    lines = ["| entity | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]

    def cell(value):
        return "" if value is None else f"{value:.3f}"

    for name, row in summary["entities"].items():
        lines.append(f"| {name} | " + " | ".join(cell(row[key]) for key in keys) + " |")
    lines.append("| **mean** | " + " | ".join(cell(summary["mean"][key]) for key in keys) + " |")
    return "\n".join(lines)


# Loading the inputs.


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a labels CSV: ``timestamp,label`` and optionally ``entity``.

    Raises:
        ValueError: a missing column, a naive or unparseable timestamp, or a
            label other than 0 and 1, with the row.
    """
    frame = pd.read_csv(path)
    missing = {"timestamp", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"Labels file {path} lacks column(s) {sorted(missing)}; expected timestamp,label[,entity]. "
                         f"Columns found: {list(frame.columns)}.")
    frame["timestamp"] = _parse_utc(frame["timestamp"], path)
    bad = ~frame["label"].isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"Labels file {path}: label {frame['label'].iloc[row]} on data row {row + 1} is not 0 or 1.")
    frame["label"] = frame["label"].astype(int)
    return frame


def read_interpretation(path: str | Path) -> pd.DataFrame:
    """Read an interpretation CSV: ``start,end,metrics`` (metrics separated by ``;``), optional ``entity``."""
    frame = pd.read_csv(path)
    missing = {"start", "end", "metrics"} - set(frame.columns)
    if missing:
        raise ValueError(f"Interpretation file {path} lacks column(s) {sorted(missing)}; expected start,end,metrics. "
                         f"Columns found: {list(frame.columns)}.")
    frame["start"] = _parse_utc(frame["start"], path)
    frame["end"] = _parse_utc(frame["end"], path)
    frame["metrics"] = [tuple(m.strip() for m in str(text).split(";") if m.strip()) for text in frame["metrics"]]
    return frame


def _parse_utc(values: pd.Series, path) -> pd.Series:
    try:
        parsed = pd.to_datetime(values, utc=False, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: timestamps must be ISO 8601 with a time zone, e.g. 2026-09-01T00:00:00Z ({error}).") from None
    if parsed.dt.tz is None:
        raise ValueError(f"{path}: timestamps have no time zone; write them in UTC, e.g. 2026-09-01T00:00:00Z.")
    return parsed.dt.tz_convert("UTC")


def read_scores(source: str, start=None, end=None, group: str | None = None) -> pd.DataFrame:
    """Read scores from a Parquet file or folder, or from a lake URI over ``[start, end)``.

    Returns:
        The scores rows (``timestamp, entity, group, anomaly_score,
        is_anomaly, feature_errors``), filtered to ``group`` when given.
    """
    import pyarrow.parquet as pq

    from lstmae.lake import read_days, utc
    from lstmae.storage import open_storage

    columns = ["timestamp", "entity", "group", "status", "anomaly_score", "is_anomaly", "feature_errors"]
    path = Path(source)
    if path.suffix == ".parquet" or (path.exists() and not (path / "scores").exists()):
        if not path.exists():
            raise FileNotFoundError(f"Scores file {source} not found.")
        table = pq.read_table(path, columns=columns)
    else:
        if start is None or end is None:
            raise ValueError(f"Reading scores from the lake {source} needs a range: give start and end (ISO 8601, UTC).")
        table = read_days(open_storage(source), "scores", utc(start), utc(end))
        if table is None:
            raise FileNotFoundError(f"No scores between {start} and {end} in {source}. Run lstmae score for that range first.")
        table = table.select(columns)
    frame = table.to_pandas()
    if start is not None:
        frame = frame[frame["timestamp"] >= utc(start)]
    if end is not None:
        frame = frame[frame["timestamp"] < utc(end)]
    if group is not None:
        groups = sorted(frame["group"].unique())
        if group not in groups:
            raise ValueError(f"Group {group!r} has no scores in {source}. Groups found: {groups}.")
        frame = frame[frame["group"] == group]
    elif frame["group"].nunique() > 1:
        raise ValueError(f"Scores in {source} hold several groups {sorted(frame['group'].unique())}; choose one with group.")
    return frame.reset_index(drop=True)


def read_incidents_table(storage, start, end) -> pd.DataFrame | None:
    """Read the ``incidents`` rows of the days of ``[start, end)`` from the lake (None when there are none)."""
    from lstmae.lake import read_days, utc

    table = read_days(storage, "incidents", utc(start), utc(end))
    return table.to_pandas() if table is not None else None


def _ranked(feature_errors) -> list[str]:
    if feature_errors is None:
        return []
    items = [(item["ratio"], item["feature"]) for item in feature_errors if item["ratio"] is not None and np.isfinite(item["ratio"])]
    return [name for _, name in sorted(items, key=lambda pair: (-pair[0], pair[1]))]


def evaluate_scores(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    interpretation: pd.DataFrame | None = None,
    step: str | pd.Timedelta | None = None,
    merge_steps: int = 30,
    entity: str | None = None,
    incidents: pd.DataFrame | None = None,
) -> dict:
    """Evaluate a scores table against labels; returns ``{"entities": {...}, "summary": {...}}``.

    Args:
        scores: rows of the scores table (see :func:`read_scores`).
        labels: ``timestamp, label[, entity]`` rows (see :func:`read_labels`).
            Without an ``entity`` column the labels belong to ``entity``, or to
            the single entity of ``scores``.
        interpretation: optional ``start, end, metrics[, entity]`` rows.
        step: grid step; default the most common spacing of the labels.
        merge_steps: flagged points at most this many steps apart form one
            incident, as in ``combine``. Default 30. Used when ``incidents``
            is None.
        entity: the entity of entity-less labels.
        incidents: rows of the ``incidents`` table (the latest row of each
            ``incident_id`` counts); None derives incidents from the flagged
            points with ``merge_steps``.
    """
    if "entity" not in labels.columns:
        names = sorted(scores["entity"].unique())
        target = entity or (names[0] if len(names) == 1 else None)
        if target is None:
            raise ValueError(f"The labels have no entity column and the scores hold entities {names[:10]}; name one with entity.")
        labels = labels.assign(entity=target)
        if interpretation is not None and "entity" not in interpretation.columns:
            interpretation = interpretation.assign(entity=target)
    reports = {}
    for name, part in labels.groupby("entity", sort=True):
        part = part.sort_values("timestamp")
        timestamps = pd.DatetimeIndex(part["timestamp"])
        grid_step = pd.Timedelta(step) if step is not None else pd.Series(timestamps).diff().mode().iloc[0]
        rows = scores[(scores["entity"] == name)].drop_duplicates("timestamp", keep="last").set_index("timestamp")
        if rows.empty:
            raise ValueError(f"Entity {name!r} has labels but no scores. Entities with scores: {sorted(scores['entity'].unique())[:10]}.")
        rows = rows.reindex(timestamps)
        flagged = rows["is_anomaly"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        values = rows["anomaly_score"].to_numpy(dtype=np.float64)
        explained = interpretation[interpretation["entity"] == name] if interpretation is not None else None
        ranked = [_ranked(errors) for errors in rows["feature_errors"]] if explained is not None and len(explained) else None
        if incidents is None:
            events = incidents_from_points(timestamps, flagged, grid_step, merge_steps)
        else:
            groups = scores["group"].unique() if "group" in scores.columns else [None]
            events = incidents_from_table(incidents, name, groups[0] if len(groups) == 1 else None)
        reports[str(name)] = evaluate_series(timestamps, part["label"].to_numpy(), values, flagged, events,
                                             grid_step, ranked, explained)
        log.info("Evaluated %s: point F1 %.3f, event F1 %.3f", name, reports[str(name)]["point"]["f1"],
                 reports[str(name)]["event"]["f1"])
    return {"entities": reports, "summary": summarise(reports)}


def write_report(report: dict, json_path: str | Path | None = None, markdown_path: str | Path | None = None) -> str:
    """Write the report as JSON and the summary as a Markdown table; return the Markdown."""
    markdown = markdown_table(report["summary"])
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    if markdown_path:
        Path(markdown_path).write_text(markdown + "\n", encoding="utf-8")
    return markdown


# Backtests: a labelled data set through the whole pipeline.


def incidents_from_table(incidents: pd.DataFrame, entity: str, group: str | None = None) -> list[Event]:
    """Return the incidents of ``entity`` as events, one per ``incident_id`` (its latest row)."""
    if incidents is None or incidents.empty:
        return []
    rows = incidents[incidents["entity"] == entity]
    if group is not None:
        rows = rows[rows["group"] == group]
    rows = rows.sort_values("end").drop_duplicates("incident_id", keep="last").sort_values("start")
    return [Event(row.start, row.end) for row in rows.itertuples()]


def window_flags(windows: pd.DataFrame, timestamps: pd.DatetimeIndex, entity: str) -> np.ndarray:
    """Flag every point that lies in an anomalous window verdict of ``entity`` (the prototype's labels)."""
    flagged = np.zeros(len(timestamps), dtype=bool)
    if windows is None or windows.empty:
        return flagged
    for row in windows[(windows["entity"] == entity) & windows["is_anomaly"]].itertuples():
        flagged |= (timestamps >= row.window_start) & (timestamps <= row.window_end)
    return flagged


def write_wide_csv(storage, path: str | Path, entity: str) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta]:
    """Write a wide CSV (``timestamp`` then one column per metric) as curated partitions.

    Skips the landing and parsing steps, for backtests on files that are
    already clean. Returns ``(first timestamp, end, step)`` where ``end`` is
    one step after the last timestamp.
    """
    from lstmae.ingest import METRICS, curated_table
    from lstmae.lake import day_slices, write_slice

    wide = pd.read_csv(path)
    wide["timestamp"] = _parse_utc(wide["timestamp"], path)
    step = wide["timestamp"].diff().mode().iloc[0]
    long = wide.melt(id_vars="timestamp", var_name="metric", value_name="value")
    long["entity"], long["labels"], long["source"] = entity, None, str(path)
    start, end = wide["timestamp"].iloc[0], wide["timestamp"].iloc[-1] + step
    for day, slice_start, slice_end in day_slices(start, end):
        part = long[(long["timestamp"] >= slice_start) & (long["timestamp"] < slice_end)]
        write_slice(storage, METRICS, day, slice_start, slice_end, curated_table(part.sort_values(["timestamp", "metric"])))
    return start, end, step


def backtest(
    folder: str | Path,
    storage,
    config,
    entity: str,
    variants: dict | None = None,
    merge_steps: int | None = None,
) -> dict:
    """Train, score, combine and evaluate one labelled entity, as production would.

    ``folder`` holds ``train.csv.gz`` and ``test.csv.gz`` (wide CSV),
    ``labels.csv.gz`` (``timestamp,label``) and optionally
    ``interpretation.csv``. The first group of ``config`` is trained on the
    training file (its last ``validation_fraction`` held out for thresholds),
    the test period is scored in one run with the training rows as context,
    and the scores and incidents written to the lake are evaluated.

    Args:
        folder: the entity's folder.
        storage: an empty lake.
        config: the configuration; its ``step`` must match the files.
        entity: entity name written to the lake.
        variants: ``{name: ThresholdConfig}`` of further threshold settings to
            evaluate on the same trained model (see
            :func:`lstmae.training.rethreshold`); a variant with method
            ``reference`` is also evaluated with the window verdicts
            (``<name>-windows``), the prototype's rule.
        merge_steps: incident merge distance; default ``config.incident_merge_steps``.

    Returns:
        ``{"default": report, <variant>: report, ..., "training": {...}}``
        with one :func:`evaluate_series` report per variant.
    """
    from lstmae.lake import read_days
    from lstmae.pipeline import combine_interval, score_group
    from lstmae.training import rethreshold, train_group

    folder = Path(folder)
    group = config.groups[0].name
    train_start, train_end, step = write_wide_csv(storage, folder / "train.csv.gz", entity)
    test_start, test_end, _ = write_wide_csv(storage, folder / "test.csv.gz", entity)
    labels = read_labels(folder / "labels.csv.gz")
    interpretation_path = folder / "interpretation.csv"
    interpretation = read_interpretation(interpretation_path) if interpretation_path.exists() else None
    trained = train_group(storage, config, group, train_start, train_end, plots=False)
    versions = {"default": trained["version"]}
    for name, threshold in (variants or {}).items():
        versions[name] = rethreshold(storage, config, group, trained["version"], threshold)["version"]

    timestamps = pd.DatetimeIndex(labels["timestamp"])
    results = {"training": {key: trained[key] for key in ("version", "training_windows", "loss", "val_loss")}}
    for name, version in versions.items():
        score_group(storage, config, group, test_start, test_end, version=version)
        combine_interval(storage, config, test_start, test_end, merge_steps=merge_steps, plots=False)
        scores = read_scores(storage.uri, test_start, test_end, group=group)
        rows = scores.drop_duplicates("timestamp", keep="last").set_index("timestamp").reindex(timestamps)
        flagged = rows["is_anomaly"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        values = rows["anomaly_score"].to_numpy(dtype=np.float64)
        ranked = [_ranked(errors) for errors in rows["feature_errors"]]
        incidents = incidents_from_table(read_incidents_table(storage, test_start, test_end), entity, group)
        results[name] = evaluate_series(timestamps, labels["label"].to_numpy(), values, flagged, incidents, step,
                                        ranked, interpretation)
        if (variants or {}).get(name) is not None and variants[name].method == "reference":
            windows_table = read_days(storage, "windows", test_start, test_end)
            windows = windows_table.to_pandas() if windows_table is not None else None
            window_flagged = window_flags(windows, timestamps, entity)
            window_incidents = incidents_from_points(timestamps, window_flagged, step, 1)
            # The prototype has no per-point score: the window verdict is the score.
            results[f"{name}-windows"] = evaluate_series(timestamps, labels["label"].to_numpy(),
                                                         window_flagged.astype(float), window_flagged,
                                                         window_incidents, step, ranked, interpretation)
        log.info("Backtest %s %s: point F1 %.3f, event F1 %.3f", entity, name,
                 results[name]["point"]["f1"], results[name]["event"]["f1"])
    return results
