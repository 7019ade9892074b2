"""From curated long rows to the wide, gridded frames that a group's model reads.

A *series* is what one window is cut from: for layout ``metrics`` one series
per entity (features = the group's metrics), for layout ``nodes`` one series
for the whole group (features = the metric on each listed entity).

Raw timestamps are rounded to the nearest point of the sampling grid (hosts
shifted by seconds or minutes line up), several values on one grid point are
averaged, and a missing grid point takes the last value before it for at most
``max_gap_steps`` steps. The fill only looks backwards, so a point's value
never depends on data that arrives later: scoring day by day and scoring a
range at once see the same frames.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lstmae.config import Config, GroupConfig

log = logging.getLogger(__name__)


def resolve_features(group: GroupConfig, curated: pd.DataFrame) -> list[str]:
    """Return the group's feature names, resolving ``"*"`` from the data (sorted)."""
    if group.layout == "metrics":
        metrics = sorted(curated["metric"].unique()) if "*" in group.metrics else list(group.metrics)
        if not metrics:
            raise ValueError(f"Group {group.name!r}: no metrics found in the training data.")
        return metrics
    return [_node_feature(group, entity, metric) for metric in group.metrics for entity in group.entities]


def _node_feature(group: GroupConfig, entity: str, metric: str) -> str:
    return entity if len(group.metrics) == 1 else f"{metric}@{entity}"


def series_name(group: GroupConfig) -> str:
    """Entity label of the single series of a ``nodes`` group."""
    return "+".join(group.entities)


def grid(start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Grid points in ``[start, end)``, anchored at the Unix epoch."""
    first = start.ceil(step) if start != start.floor(step) else start
    return pd.date_range(first, end - pd.Timedelta(1, "ns"), freq=step) if first < end else pd.DatetimeIndex([], tz="UTC")


def forward_fill_limited(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Carry each last value forward over at most ``limit`` missing points."""
    return frame.ffill(limit=limit) if limit > 0 else frame


def group_frames(
    curated: pd.DataFrame,
    group: GroupConfig,
    features: list[str],
    config: Config,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    """Build one gridded frame per series of ``group`` over ``[start, end)``.

    Args:
        curated: long rows (timestamp, entity, metric, value).
        group: the group.
        features: feature names in model order (from :func:`resolve_features`
            at training, from the model's metadata at scoring).
        config: provides ``step`` and ``max_gap_steps``.
        start, end: the grid range.

    Returns:
        ``{series: DataFrame}`` indexed by grid timestamps, one column per
        feature in ``features`` order, NaN where a value is missing.
    """
    step = config.step_delta
    index = grid(start, end, step)
    if curated.empty:
        return {}
    rows = curated[curated["value"].notna()].copy()
    rows["timestamp"] = rows["timestamp"].dt.round(step)
    if group.layout == "metrics":
        metrics = set(features)
        rows = rows[rows["metric"].isin(metrics)]
        if "*" not in group.entities:
            rows = rows[rows["entity"].isin(group.entities)]
        frames = {}
        for entity, part in rows.groupby("entity", sort=True):
            wide = part.pivot_table(index="timestamp", columns="metric", values="value", aggfunc="mean")
            frames[str(entity)] = _finish(wide, features, index, config)
        return frames
    rows = rows[rows["entity"].isin(group.entities) & rows["metric"].isin(group.metrics)]
    if rows.empty:
        return {}
    rows["feature"] = [_node_feature(group, e, m) for e, m in zip(rows["entity"], rows["metric"])]
    wide = rows.pivot_table(index="timestamp", columns="feature", values="value", aggfunc="mean")
    return {series_name(group): _finish(wide, features, index, config)}


def _finish(wide: pd.DataFrame, features: list[str], index: pd.DatetimeIndex, config: Config) -> pd.DataFrame:
    wide = wide.reindex(columns=features)
    wide.index = pd.DatetimeIndex(wide.index).tz_convert("UTC")
    wide = wide.reindex(wide.index.union(index))
    wide = forward_fill_limited(wide, config.max_gap_steps)
    return wide.reindex(index).astype("float64")


def missing_reasons(frame: pd.DataFrame) -> pd.Series:
    """Per grid point, why it cannot be used (None where every feature has a value)."""
    values = frame.to_numpy()
    missing = np.isnan(values)
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    all_missing = missing.all(axis=1)
    some_missing = missing.any(axis=1) & ~all_missing
    reasons[all_missing] = "gap: no data at this grid point"
    for position in np.flatnonzero(some_missing):
        absent = [c for c, m in zip(frame.columns, missing[position]) if m]
        reasons.iloc[position] = f"missing feature(s): {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}"
    return reasons
