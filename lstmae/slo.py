"""SLO violations: values above per-entity limits learnt from the training data.

At training, every series of a group gets a limit per feature: a percentile
of that feature's training values, chosen per metric by the group's
``slo_percentiles`` (by default the 99th percentile for metrics whose name
contains ``cpu`` and the 95th for ``mem``). The limits are stored in the model
metadata, so scoring needs nothing else.

At scoring, each epoch-anchored window of ``timesteps`` points (the windows of
the verdicts) *violates* when any value of a limited feature is above its
limit. ``combine`` merges runs of at least ``slo_windows`` (default 3)
consecutive violating windows of one entity and group into one row of the
``slo_violations/`` table.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def percentile_for(metric: str, percentiles: dict[str, float]) -> float | None:
    """Return the percentile of the first pattern in ``percentiles`` that matches ``metric``.

    Patterns are shell-style (``fnmatch``) and case-insensitive; a plain
    metric name matches only itself. Returns None when no pattern matches.

    >>> percentile_for("node_cpu_percent", {"*cpu*": 99, "*mem*": 95})
    99
    >>> percentile_for("disk_io", {"*cpu*": 99}) is None
    True
    """
    for pattern, percentile in percentiles.items():
        if fnmatch.fnmatchcase(metric.lower(), pattern.lower()):
            return percentile
    return None


def feature_metrics(group, features: list[str]) -> dict[str, str]:
    """Map each feature of ``group`` to its metric name (for the SLO percentile lookup).

    In layout ``metrics`` a feature is a metric. In layout ``nodes`` a feature
    is an entity (one metric) or ``metric@entity`` (several metrics).
    """
    if group.layout == "metrics":
        return {feature: feature for feature in features}
    if len(group.metrics) == 1:
        return {feature: group.metrics[0] for feature in features}
    return {feature: feature.split("@", 1)[0] for feature in features}


def fit_limits(
    frames: dict[str, pd.DataFrame], feature_metrics: dict[str, str], percentiles: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Compute per-series, per-feature limits from training frames.

    Args:
        frames: ``{series: frame}`` of training rows, one column per feature.
        feature_metrics: the metric name of each feature (a feature is the
            metric itself in layout ``metrics``, one entity's metric in
            layout ``nodes``).
        percentiles: ``{metric pattern: percentile in [0, 100]}``.

    Returns:
        ``{series: {feature: limit}}`` for the features that have a
        percentile and at least one training value; series without any such
        feature are left out.
    """
    limits: dict[str, dict[str, float]] = {}
    for series, frame in sorted(frames.items()):
        series_limits = {}
        for feature in frame.columns:
            percentile = percentile_for(feature_metrics.get(feature, feature), percentiles)
            values = frame[feature].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if percentile is None or len(values) == 0:
                continue
            series_limits[str(feature)] = float(np.percentile(values, percentile))
        if series_limits:
            limits[str(series)] = series_limits
    log.info("Fitted SLO limits for %d series", len(limits))
    return limits


def window_violations(values: np.ndarray, features: list[str], limits: dict[str, float]) -> list[str]:
    """Return the features with any value above its limit in ``(timesteps, features)`` values.

    >>> window_violations(np.array([[1.0, 5.0], [2.0, 9.0]]), ["cpu", "mem"], {"cpu": 1.5})
    ['cpu']
    """
    over = []
    for i, feature in enumerate(features):
        limit = limits.get(feature)
        if limit is not None and np.nanmax(values[:, i]) > limit:
            over.append(feature)
    return over


def violation_id(group: str, entity: str, start: pd.Timestamp) -> str:
    """Stable id of a violation: the same group, entity and first window give the same id."""
    text = f"slo\x1f{group}\x1f{entity}\x1f{pd.Timestamp(start).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def violations(
    windows: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    step: pd.Timedelta,
    min_windows: int = 3,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Find runs of at least ``min_windows`` consecutive violating windows.

    Args:
        windows: window verdicts with ``window_start, window_end, entity,
            group, model_version, slo_features`` (a list, empty when the
            window respects every limit), covering ``[start, end)`` and the
            windows just before it, so that runs which began earlier are seen.
        start, end: the data interval; a run is reported when its last window
            ends in the interval.
        step: grid step; two windows are consecutive when the second starts
            one step after the first ends.
        min_windows: consecutive violating windows that raise a violation.
        previous: open violations of earlier intervals (same columns as the
            result); a run that continues one keeps its start and id.

    Returns:
        One row per run with ``violation_id, entity, group, model_version,
        start, end, windows, features`` (features over limit, most frequent
        first), ``open`` (the run reaches the interval's last window).
    """
    if windows.empty:
        return pd.DataFrame(columns=VIOLATION_COLUMNS)
    rows = []
    for (entity, group), part in windows.sort_values("window_start").groupby(["entity", "group"], sort=True):
        part = part.reset_index(drop=True)
        earlier = _previous_of(previous, entity, group)
        for run in _runs(part, step):
            last_end = part["window_end"].iloc[run[-1]]
            if last_end < start:
                continue  # the run lies wholly before the interval: an earlier run reported it
            first_start, windows_before = part["window_start"].iloc[run[0]], 0
            if earlier is not None and first_start <= earlier["end"] + step:
                first_start = earlier["start"]
                # Windows of the earlier row that are not in this frame's run.
                windows_before = int(earlier["windows"]) - int((part["window_end"].iloc[run] <= earlier["end"]).sum())
            total = len(run) + max(0, windows_before)
            if total < min_windows:
                continue
            rows.append(_violation_row(part.iloc[run], entity, group, first_start, total, end, step))
    return pd.DataFrame(rows, columns=VIOLATION_COLUMNS)


VIOLATION_COLUMNS = ["violation_id", "entity", "group", "model_version", "start", "end", "windows", "features", "open"]


def _previous_of(previous: pd.DataFrame | None, entity: str, group: str):
    if previous is None or previous.empty:
        return None
    rows = previous[(previous["entity"] == entity) & (previous["group"] == group)]
    return rows.sort_values("end").iloc[-1] if len(rows) else None


def _runs(part: pd.DataFrame, step: pd.Timedelta) -> list[list[int]]:
    """Positions of runs of consecutive violating windows in ``part`` (sorted by start)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for position, row in enumerate(part.itertuples()):
        violating = row.slo_features is not None and len(row.slo_features) > 0
        adjacent = bool(current) and row.window_start == part["window_end"].iloc[current[-1]] + step
        if violating and (not current or adjacent):
            current.append(position)
            continue
        if current:
            runs.append(current)
        current = [position] if violating else []
    if current:
        runs.append(current)
    return runs


def _violation_row(selected: pd.DataFrame, entity, group, first_start, total, end, step) -> dict:
    counts: dict[str, int] = {}
    for features in selected["slo_features"]:
        for feature in features:
            counts[feature] = counts.get(feature, 0) + 1
    last = selected["window_end"].iloc[-1]
    window_length = selected["window_end"].iloc[-1] - selected["window_start"].iloc[-1] + step
    return {
        "violation_id": violation_id(group, entity, first_start),
        "entity": entity,
        "group": group,
        "model_version": selected["model_version"].iloc[-1],
        "start": first_start,
        "end": last,
        "windows": int(total),
        "features": [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))],
        "open": bool(end - last <= window_length),
    }
