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
    for series, frame in sorted(frames.items()):
        points, blocks = score_frame(model, entry.scaler, thresholds, frame, timesteps, start, end)
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


def combine_interval(storage: Storage, config: Config, start, end, merge_steps: int = 6) -> dict:
    """Combine the groups' scores of ``[start, end)`` into votes, anomalies and incidents.

    * ``votes/``: per entity and grid point, the summed weights of the groups
      that flag it; an anomaly when the sum reaches ``vote_threshold``.
    * ``anomalies/``: the anomalous windows of every group, with the vote of
      all groups over the window's time range.
    * ``incidents/``: runs of anomalous points of one entity and group,
      merged when at most ``merge_steps`` grid points apart. An incident that
      reaches the end of the interval is ``open``; the next interval continues
      it under the same id.
    """
    start, end = utc(start), utc(end)
    weights = {g.name: g.weight for g in config.groups}
    step = config.step_delta
    lookback = merge_steps * step
    scores_table = read_days(storage, SCORES, start - lookback, end)
    scores = scores_table.select(["timestamp", "entity", "group", "model_version", "status", "anomaly_score", "is_anomaly", "feature_errors"]).to_pandas() if scores_table is not None else pd.DataFrame()
    if not scores.empty:
        scores = scores[(scores["timestamp"] >= start - lookback) & (scores["timestamp"] < end)]
    windows_table = read_days(storage, WINDOWS, start, end)
    windows = windows_table.to_pandas() if windows_table is not None else pd.DataFrame()
    if not windows.empty:
        windows = windows[(windows["window_end"] >= start) & (windows["window_end"] < end)]

    votes = _votes(scores[scores["timestamp"] >= start] if not scores.empty else scores, weights, config.vote_threshold)
    anomalies = _anomalies(windows, scores, weights, config.vote_threshold)
    previous = _open_incidents(storage, start, lookback)
    incidents = _incidents(scores, start, end, step, merge_steps, previous)

    summary = {"votes": 0, "vote_anomalies": 0, "anomalies": 0, "incidents": 0, "new_incidents": []}
    for day, slice_start, slice_end in day_slices(start, end):
        day_votes = _between(votes, "timestamp", slice_start, slice_end)
        day_anomalies = _between(anomalies, "window_end", slice_start, slice_end)
        day_incidents = _between(incidents, "end", slice_start, slice_end)
        write_slice(storage, VOTES, day, slice_start, slice_end, _table(day_votes, schema.VOTES))
        write_slice(storage, ANOMALIES, day, slice_start, slice_end, _table(day_anomalies, schema.ANOMALIES))
        write_slice(storage, INCIDENTS, day, slice_start, slice_end, _table(day_incidents, schema.INCIDENTS))
        summary["votes"] += len(day_votes)
        summary["vote_anomalies"] += int(day_votes["is_vote_anomaly"].sum()) if len(day_votes) else 0
        summary["anomalies"] += len(day_anomalies)
        summary["incidents"] += len(day_incidents)
    summary["incident_ids"] = sorted(incidents["incident_id"].unique().tolist()) if len(incidents) else []
    log.info("Combined %s..%s: %d vote rows (%d anomalous), %d anomalous windows, %d incidents",
             start, end, summary["votes"], summary["vote_anomalies"], summary["anomalies"], summary["incidents"])
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
    flagging = grouped["flag_group"].agg(lambda names: sorted(n for n in names if n is not None)).reset_index(drop=True)
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


def _open_incidents(storage: Storage, start: pd.Timestamp, lookback: pd.Timedelta) -> pd.DataFrame:
    """Open incidents that end within ``lookback`` before ``start``, from earlier partitions."""
    table = read_days(storage, INCIDENTS, start - lookback - pd.Timedelta(days=1), start)
    if table is None:
        return pd.DataFrame(columns=schema.INCIDENTS.names)
    frame = table.to_pandas()
    frame = frame[frame["open"] & (frame["end"] >= start - lookback) & (frame["end"] < start)]
    return frame.sort_values("end").drop_duplicates(["entity", "group"], keep="last")


def _incidents(scores, start, end, step, merge_steps, previous: pd.DataFrame) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame(columns=schema.INCIDENTS.names)
    rows = []
    anomalous = scores[scores["is_anomaly"].fillna(False).astype(bool)].sort_values("timestamp")
    for (entity, group), points in anomalous.groupby(["entity", "group"], sort=True):
        times = points["timestamp"].to_numpy()
        breaks = np.flatnonzero(np.diff(times) > np.timedelta64(merge_steps * step))
        bounds = np.split(np.arange(len(points)), breaks + 1)
        for positions in bounds:
            run = points.iloc[positions]
            run_start, run_end = run["timestamp"].iloc[0], run["timestamp"].iloc[-1]
            if run_end < start:
                continue  # lies wholly in the lookback: belongs to the previous interval
            incident_start = run_start
            earlier = previous[(previous["entity"] == entity) & (previous["group"] == group)] if len(previous) else previous
            if len(earlier) and run_start - earlier["end"].iloc[0] <= merge_steps * step:
                incident_start = earlier["start"].iloc[0]
            peak = run.loc[run["anomaly_score"].idxmax()]
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
                    "peak_timestamp": peak["timestamp"],
                    "peak_score": float(peak["anomaly_score"]),
                    "points": int(len(run)),
                    "top_features": top,
                    "open": bool(end - run_end <= merge_steps * step),
                }
            )
    return pd.DataFrame(rows, columns=schema.INCIDENTS.names)
