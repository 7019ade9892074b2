"""The batch steps that DAG tasks and the CLI call: score a group, combine groups.

Each function takes the lake, the configuration and a data interval, writes
its partitions, and returns a small JSON-serialisable dict (counts, versions,
keys) so that Airflow tasks pass nothing bigger through XCom.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from lstmae import registry, schema
from lstmae.config import Config
from lstmae.frames import group_frames
from lstmae.ingest import read_curated
from lstmae.lake import day_slices, read_days, utc, write_slice
from lstmae.scoring import score_frame
from lstmae.storage import Storage

log = logging.getLogger(__name__)

SCORES = "scores"
WINDOWS = "windows"
VOTES = "votes"
ANOMALIES = "anomalies"
INCIDENTS = "incidents"
SLO_VIOLATIONS = "slo_violations"
DRIFT_EVENTS = "drift_events"
# Grid points shown before and after an incident in its plot.
PLOT_MARGIN_STEPS = 60


def context_steps(timesteps: int, smoothing: int, max_gap_steps: int) -> int:
    """Grid points before an interval that scoring must read to score its first point."""
    return (timesteps - 1) + (smoothing - 1) + max_gap_steps


def score_group(storage: Storage, config: Config, group_name: str, start, end, version: str | None = None) -> dict:
    """Score ``[start, end)`` for one group and replace its ``scores/`` and ``windows/`` slices.

    Every grid point of every series seen in the interval or its context gets a
    row: ``status = "scored"`` with the anomaly score, or ``"unscorable"`` with
    the reason (gap, missing feature, insufficient history).

    Args:
        version: pin a model version; default the group's current version.

    Returns:
        ``{"group", "model_version", "rows", "scored", "anomalies", "windows", "seconds"}``.
    """
    started = time.monotonic()
    group = config.group(group_name)
    start, end = utc(start), utc(end)
    entry = registry.resolve(storage, group.name, version)
    thresholds = entry.thresholds
    timesteps = entry.timesteps
    context = context_steps(timesteps, thresholds.config.smoothing, config.max_gap_steps) * config.step_delta
    curated = read_curated(storage, start - context, end)
    frames = group_frames(curated, group, entry.features, config, start - context, end)
    model = registry.load_keras_model(storage, entry) if frames else None

    point_frames, window_rows = [], []
    slo_limits = entry.metadata.get("slo_limits") or {}
    for series, frame in sorted(frames.items()):
        points, blocks = score_frame(model, entry.scaler, thresholds, frame, timesteps, start, end,
                                     slo_limits=slo_limits.get(series))
        if len(points):
            points.insert(1, "entity", series)
            point_frames.append(points)
        for block in blocks:
            window_rows.append(dict(block, entity=series))

    scores = pd.concat(point_frames, ignore_index=True) if point_frames else pd.DataFrame()
    windows = pd.DataFrame(window_rows)
    summary = {"group": group.name, "model_version": entry.version, "rows": 0, "scored": 0, "anomalies": 0, "windows": 0}
    for day, slice_start, slice_end in day_slices(start, end):
        day_scores = _between(scores, "timestamp", slice_start, slice_end)
        day_windows = _between(windows, "window_end", slice_start, slice_end)
        scores_table = _scores_table(day_scores, group.name, entry.version)
        windows_table = _windows_table(day_windows, group.name, entry.version)
        write_slice(storage, SCORES, day, slice_start, slice_end, scores_table, group=group.name)
        write_slice(storage, WINDOWS, day, slice_start, slice_end, windows_table, group=group.name)
        scored = int(pa.compute.sum(pa.compute.equal(scores_table["status"], "scored")).as_py() or 0)
        flagged = int(pa.compute.sum(scores_table["is_anomaly"].cast(pa.int64())).as_py() or 0)
        log.info("Scored %s group %s day %s: %d rows, %d scored, %d anomalous points, %d windows",
                 entry.version, group.name, day.date(), scores_table.num_rows, scored, flagged, windows_table.num_rows)
        summary["rows"] += scores_table.num_rows
        summary["scored"] += scored
        summary["anomalies"] += flagged
        summary["windows"] += windows_table.num_rows
    summary["seconds"] = round(time.monotonic() - started, 2)
    log.info("Scored group %s %s..%s with %s: %d rows, %d scored, in %.2f s",
             group.name, start, end, entry.version, summary["rows"], summary["scored"], summary["seconds"])
    return summary


def _between(frame: pd.DataFrame, column: str, start, end) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame[column] >= start) & (frame[column] < end)]


def _scores_table(frame: pd.DataFrame, group: str, version: str) -> pa.Table:
    if frame.empty:
        return schema.SCORES.empty_table()
    frame = frame.assign(group=group, model_version=version)
    frame = frame.sort_values(["timestamp", "entity"], kind="stable")
    return pa.Table.from_pandas(frame[schema.SCORES.names], schema=schema.SCORES, preserve_index=False)


def _windows_table(frame: pd.DataFrame, group: str, version: str) -> pa.Table:
    if frame.empty:
        return schema.WINDOWS.empty_table()
    frame = frame.assign(group=group, model_version=version)
    frame = frame.sort_values(["window_end", "entity"], kind="stable")
    return pa.Table.from_pandas(frame[schema.WINDOWS.names], schema=schema.WINDOWS, preserve_index=False)


def incident_id(group: str, entity: str, start: pd.Timestamp) -> str:
    """Stable id of an incident: the same group, entity and start give the same id."""
    text = f"{group}\x1f{entity}\x1f{pd.Timestamp(start).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def combine_interval(storage: Storage, config: Config, start, end, merge_steps: int | None = None,
                     plots: bool = True) -> dict:
    """Combine the groups' scores of ``[start, end)`` into votes, anomalies, incidents and side checks.

    * ``votes/``: per entity and grid point, the summed weights of the groups
      that flag it; an anomaly when the sum reaches ``vote_threshold``.
    * ``anomalies/``: the anomalous windows of every group, with the vote of
      all groups over the window's time range.
    * ``incidents/``: runs of anomalous points of one entity and group,
      merged when at most ``merge_steps`` grid points apart. An incident that
      reaches the end of the interval is ``open``; the next interval continues
      it under the same id, with its start, and its ``points`` and peak
      counted over the whole incident so far. Each interval writes its own row
      (in the partition of the day of ``end``), so the latest row of an id is
      the incident's current state.
    * ``slo_violations/``: runs of at least ``slo_windows`` consecutive windows
      with a value above an SLO limit (see :mod:`lstmae.slo`).
    * ``drift_events/`` and ``requests/retrain/<group>.json``: runs of
      ``drift_windows`` consecutive anomalous windows (see :mod:`lstmae.drift`).
    * ``plots/date=D/<incident_id>.png`` for every incident, when ``plots``.

    Args:
        merge_steps: default ``config.incident_merge_steps``.
        plots: render incident plots. Default True.

    Returns:
        Counts per table, ``incident_ids`` (every incident of the interval,
        sorted), ``new_incidents`` (those that start inside the interval),
        ``drift_events`` and ``retrain_requests`` (groups).
    """
    from lstmae import drift, slo

    started = time.monotonic()
    start, end = utc(start), utc(end)
    merge_steps = config.incident_merge_steps if merge_steps is None else merge_steps
    weights = {g.name: g.weight for g in config.groups}
    step = config.step_delta
    lookback = merge_steps * step
    plot_margin = PLOT_MARGIN_STEPS * step if plots else pd.Timedelta(0)
    scores_table = read_days(storage, SCORES, start - max(lookback, plot_margin), end)
    scores = scores_table.select(["timestamp", "entity", "group", "model_version", "status", "anomaly_score", "score_threshold", "is_anomaly", "feature_errors"]).to_pandas() if scores_table is not None else pd.DataFrame()
    context_scores = scores
    if not scores.empty:
        scores = scores[(scores["timestamp"] >= start - lookback) & (scores["timestamp"] < end)]
    window_lookback = max(config.drift_windows, config.slo_windows) * max(g.timesteps for g in config.groups) * step
    windows_table = read_days(storage, WINDOWS, start - window_lookback, end)
    all_windows = windows_table.to_pandas() if windows_table is not None else pd.DataFrame()
    if not all_windows.empty:
        all_windows = all_windows[(all_windows["window_end"] >= start - window_lookback) & (all_windows["window_end"] < end)]
        if "slo_features" not in all_windows.columns:
            all_windows["slo_features"] = [[] for _ in range(len(all_windows))]
    windows = all_windows[all_windows["window_end"] >= start] if not all_windows.empty else all_windows

    votes = _votes(scores[scores["timestamp"] >= start] if not scores.empty else scores, weights, config.vote_threshold)
    anomalies = _anomalies(windows, scores, weights, config.vote_threshold)
    previous = _open_rows(storage, INCIDENTS, start, lookback)
    incidents = _incidents(scores, start, end, step, merge_steps, previous)
    previous_violations = _open_rows(storage, SLO_VIOLATIONS, start, max(g.timesteps for g in config.groups) * step + step)
    violations = slo.violations(all_windows, start, end, step, config.slo_windows, previous_violations)
    events = drift.drift_events(all_windows, start, end, step, config.drift_windows)

    summary = {"votes": 0, "vote_anomalies": 0, "anomalies": 0, "incidents": 0, "slo_violations": 0,
               "drift_events": 0, "plots": 0}
    for day, slice_start, slice_end in day_slices(start, end):
        day_votes = _between(votes, "timestamp", slice_start, slice_end)
        day_anomalies = _between(anomalies, "window_end", slice_start, slice_end)
        day_incidents = _between(incidents, "end", slice_start, slice_end)
        day_violations = _between(violations, "end", slice_start, slice_end)
        day_events = _between(events, "detected_at", slice_start, slice_end)
        write_slice(storage, VOTES, day, slice_start, slice_end, _table(day_votes, schema.VOTES))
        write_slice(storage, ANOMALIES, day, slice_start, slice_end, _table(day_anomalies, schema.ANOMALIES))
        write_slice(storage, INCIDENTS, day, slice_start, slice_end, _table(day_incidents, schema.INCIDENTS))
        write_slice(storage, SLO_VIOLATIONS, day, slice_start, slice_end, _table(day_violations, schema.SLO_VIOLATIONS))
        write_slice(storage, DRIFT_EVENTS, day, slice_start, slice_end, _table(day_events, schema.DRIFT_EVENTS))
        summary["votes"] += len(day_votes)
        summary["vote_anomalies"] += int(day_votes["is_vote_anomaly"].sum()) if len(day_votes) else 0
        summary["anomalies"] += len(day_anomalies)
        summary["incidents"] += len(day_incidents)
        summary["slo_violations"] += len(day_violations)
        summary["drift_events"] += len(day_events)
    if plots and len(incidents):
        from lstmae.plots import plot_incidents

        summary["plots"] = len(plot_incidents(storage, incidents, context_scores, step, PLOT_MARGIN_STEPS))
    summary["retrain_requests"] = []
    for group, group_events in events.groupby("group", sort=True) if len(events) else []:
        drift.request_retraining(storage, group, group_events, config.training_days)
        summary["retrain_requests"].append(group)
    summary["incident_ids"] = sorted(incidents["incident_id"].unique().tolist()) if len(incidents) else []
    summary["new_incidents"] = sorted(incidents.loc[incidents["start"] >= start, "incident_id"].unique().tolist()) if len(incidents) else []
    summary["drift_event_ids"] = sorted(events["event_id"].tolist()) if len(events) else []
    log.info("Combined %s..%s: %d vote rows (%d anomalous), %d anomalous windows, %d incidents, "
             "%d SLO violations, %d drift events, in %.2f s",
             start, end, summary["votes"], summary["vote_anomalies"], summary["anomalies"], summary["incidents"],
             summary["slo_violations"], summary["drift_events"], time.monotonic() - started)
    return summary


def _table(frame: pd.DataFrame, table_schema: pa.Schema) -> pa.Table:
    if frame.empty:
        return table_schema.empty_table()
    return pa.Table.from_pandas(frame[table_schema.names].reset_index(drop=True), schema=table_schema, preserve_index=False)


def _votes(scores: pd.DataFrame, weights: dict[str, float], vote_threshold: float) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame(columns=schema.VOTES.names)
    scored = scores[scores["status"] == "scored"].copy()
    scored["weight"] = scored["group"].map(weights).fillna(0.0) * scored["is_anomaly"].astype(bool)
    scored["flag_group"] = np.where(scored["is_anomaly"].astype(bool), scored["group"], None)
    grouped = scored.groupby(["timestamp", "entity"], sort=True)
    votes = grouped.agg(vote_score=("weight", "sum"), groups_scored=("group", "count")).reset_index()
    flagging = grouped["flag_group"].agg(lambda names: sorted(n for n in names if isinstance(n, str))).reset_index(drop=True)
    votes["groups_flagging"] = flagging.to_numpy()
    votes["vote_score"] = votes["vote_score"].round(12)
    votes["is_vote_anomaly"] = votes["vote_score"] >= vote_threshold
    return votes


def _anomalies(windows: pd.DataFrame, scores: pd.DataFrame, weights, vote_threshold) -> pd.DataFrame:
    if windows.empty:
        return pd.DataFrame(columns=schema.ANOMALIES.names)
    flagged = windows[windows["is_anomaly"]].copy()
    if flagged.empty:
        return pd.DataFrame(columns=schema.ANOMALIES.names)
    anomalous_points = scores[scores["is_anomaly"].fillna(False).astype(bool)] if not scores.empty else scores
    vote_scores, flags = [], []
    for row in flagged.itertuples():
        groups = {row.group}
        if not anomalous_points.empty:
            inside = anomalous_points[
                (anomalous_points["entity"] == row.entity)
                & (anomalous_points["timestamp"] >= row.window_start)
                & (anomalous_points["timestamp"] <= row.window_end)
            ]
            groups |= set(inside["group"])
        flags.append(sorted(groups))
        vote_scores.append(round(sum(weights.get(g, 0.0) for g in groups), 12))
    flagged["vote_score"] = vote_scores
    flagged["groups_flagging"] = flags
    flagged["is_vote_anomaly"] = flagged["vote_score"] >= vote_threshold
    return flagged


def _open_rows(storage: Storage, table: str, start: pd.Timestamp, lookback: pd.Timedelta) -> pd.DataFrame:
    """Open rows of ``incidents`` or ``slo_violations`` that end within ``lookback`` before ``start``.

    Returns the latest such row per entity and group, from earlier partitions.
    """
    found = read_days(storage, table, start - lookback - pd.Timedelta(days=1), start)
    if found is None:
        return pd.DataFrame()
    frame = found.to_pandas()
    frame = frame[frame["open"].fillna(False).astype(bool) & (frame["end"] >= start - lookback) & (frame["end"] < start)]
    return frame.sort_values("end").drop_duplicates(["entity", "group"], keep="last")


def _incidents(scores, start, end, step, merge_steps, previous: pd.DataFrame) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame(columns=schema.INCIDENTS.names)
    rows = []
    gap = merge_steps * step
    anomalous = scores[scores["is_anomaly"].fillna(False).astype(bool)].sort_values("timestamp")
    for (entity, group), points in anomalous.groupby(["entity", "group"], sort=True):
        times = points["timestamp"].to_numpy()
        breaks = np.flatnonzero(np.diff(times) > np.timedelta64(gap))
        bounds = np.split(np.arange(len(points)), breaks + 1)
        earlier = previous[(previous["entity"] == entity) & (previous["group"] == group)] if len(previous) else previous
        for positions in bounds:
            run = points.iloc[positions]
            run_start, run_end = run["timestamp"].iloc[0], run["timestamp"].iloc[-1]
            if run_end < start:
                continue  # lies wholly in the lookback: belongs to the previous interval
            incident_start, counted, points_before = run_start, run, 0
            peak = run.loc[run["anomaly_score"].idxmax()]
            peak_timestamp, peak_score = peak["timestamp"], float(peak["anomaly_score"])
            if len(earlier) and run_start - earlier["end"].iloc[0] <= gap:
                # Continues an open incident of an earlier interval, whose row
                # already counted the points before ``start``.
                incident_start = earlier["start"].iloc[0]
                counted = run[run["timestamp"] >= start]
                points_before = int(earlier["points"].iloc[0] or 0)
                if earlier["peak_score"].iloc[0] is not None and float(earlier["peak_score"].iloc[0]) >= peak_score:
                    peak_timestamp, peak_score = earlier["peak_timestamp"].iloc[0], float(earlier["peak_score"].iloc[0])
            contribution: dict[str, float] = {}
            for errors in run["feature_errors"]:
                for item in errors if errors is not None else []:
                    if item["ratio"] is not None and item["ratio"] > 1.0:
                        contribution[item["feature"]] = contribution.get(item["feature"], 0.0) + item["ratio"]
            top = [name for name, _ in sorted(contribution.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
            rows.append(
                {
                    "incident_id": incident_id(group, entity, incident_start),
                    "entity": entity,
                    "group": group,
                    "model_version": run["model_version"].iloc[-1],
                    "start": incident_start,
                    "end": run_end,
                    "peak_timestamp": peak_timestamp,
                    "peak_score": peak_score,
                    "points": points_before + int(len(counted)),
                    "top_features": top,
                    "open": bool(end - run_end <= gap),
                }
            )
    return pd.DataFrame(rows, columns=schema.INCIDENTS.names)
