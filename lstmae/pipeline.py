"""The batch steps that DAG tasks and the CLI call: score a group, combine groups.

Each function takes the lake, the configuration and a data interval, writes
its partitions, and returns a small JSON-serialisable dict (counts, versions,
keys) so that Airflow tasks pass nothing bigger through XCom.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from contextlib import ExitStack

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lstmae import registry, schema
from lstmae.config import Config
from lstmae.frames import group_frames
from lstmae.ingest import METRICS
from lstmae.lake import SliceWriter, day_slices, read_days, utc
from lstmae.scoring import batch_series_errors, score_series
from lstmae.storage import Storage

log = logging.getLogger(__name__)

SCORES = "scores"
WINDOWS = "windows"
VOTES = "votes"
ANOMALIES = "anomalies"
INCIDENTS = "incidents"
SLO_VIOLATIONS = "slo_violations"
DRIFT_EVENTS = "drift_events"
# Series scored together: their windows go through one predict call, and
# their curated rows are read together. Memory of scoring grows with it.
SCORE_BATCH_SERIES = 64
# Entities combined together: their scores and windows are read and their
# votes, anomalies and incidents built and written together. Memory of
# combining grows with it, not with the number of entities.
COMBINE_BATCH_ENTITIES = 128
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

    Series are scored ``SCORE_BATCH_SERIES`` at a time, and each batch's rows
    are written at once as one row group of each day's slice file, so memory
    does not grow with the number of series. Within a file, rows are ordered
    by entity and then time. The slices are published when every batch is
    written; a failure publishes none of them.

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
    slices = day_slices(start, end)
    counts = {day: {"rows": 0, "scored": 0, "anomalies": 0, "windows": 0} for day, _, _ in slices}
    model = None
    slo_limits = entry.metadata.get("slo_limits") or {}
    with ExitStack() as stack:
        score_writers, window_writers = {}, {}
        for day, slice_start, slice_end in slices:
            score_writers[day] = stack.enter_context(
                SliceWriter(storage, SCORES, day, slice_start, slice_end, schema.SCORES, group=group.name))
            window_writers[day] = stack.enter_context(
                SliceWriter(storage, WINDOWS, day, slice_start, slice_end, schema.WINDOWS, group=group.name))
        for frames in _series_batches(storage, config, group, entry.features, start - context, end):
            if model is None:
                model = registry.load_keras_model(storage, entry)
            names = sorted(frames)
            results = batch_series_errors(model, entry.scaler, [frames[name] for name in names], timesteps)
            tables, window_rows = [], []
            for series, result in zip(names, results):
                points, blocks = score_series(model, entry.scaler, thresholds, frames[series], timesteps, start, end,
                                              slo_limits=slo_limits.get(series), result=result)
                if points.num_rows:
                    tables.append(points.add_column(1, "entity", pa.array([series] * points.num_rows, type=pa.string())))
                for block in blocks:
                    window_rows.append(dict(block, entity=series))
            del frames, results
            batch_scores = _scores_table(tables, group.name, entry.version)
            batch_windows = pd.DataFrame(window_rows)
            del tables, window_rows
            for day, slice_start, slice_end in slices:
                day_scores = _between_table(batch_scores, "timestamp", slice_start, slice_end)
                day_windows = _windows_table(_between(batch_windows, "window_end", slice_start, slice_end),
                                             group.name, entry.version)
                score_writers[day].write(day_scores)
                window_writers[day].write(day_windows)
                counts[day]["rows"] += day_scores.num_rows
                counts[day]["scored"] += int(pc.sum(pc.equal(day_scores["status"], "scored")).as_py() or 0)
                counts[day]["anomalies"] += int(pc.sum(day_scores["is_anomaly"].cast(pa.int64())).as_py() or 0)
                counts[day]["windows"] += day_windows.num_rows
            del batch_scores, batch_windows

        for day, _, _ in slices:
            score_writers[day].close()
            window_writers[day].close()
            log.info("Scored %s group %s day %s: %d rows, %d scored, %d anomalous points, %d windows",
                     entry.version, group.name, day.date(), counts[day]["rows"], counts[day]["scored"],
                     counts[day]["anomalies"], counts[day]["windows"])

    summary = {"group": group.name, "model_version": entry.version}
    for name in ("rows", "scored", "anomalies", "windows"):
        summary[name] = sum(day_counts[name] for day_counts in counts.values())
    summary["seconds"] = round(time.monotonic() - started, 2)
    log.info("Scored group %s %s..%s with %s: %d rows, %d scored, in %.2f s",
             group.name, start, end, entry.version, summary["rows"], summary["scored"], summary["seconds"])
    return summary


def _between(frame: pd.DataFrame, column: str, start, end) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame[column] >= start) & (frame[column] < end)]


def _scores_table(tables: list[pa.Table], group: str, version: str) -> pa.Table:
    """Concatenate point tables (columns of ``score_series`` plus ``entity``) into ``scores`` rows.

    Rows keep the order of ``tables``, unsorted.
    """
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return schema.SCORES.empty_table()
    table = pa.concat_tables(tables)
    del tables
    table = table.append_column("group", pa.array([group] * table.num_rows, type=pa.string()))
    table = table.append_column("model_version", pa.array([version] * table.num_rows, type=pa.string()))
    return table.select(schema.SCORES.names).cast(schema.SCORES)


def _between_table(table: pa.Table, column: str, start, end) -> pa.Table:
    time_type = table.schema.field(column).type
    keep = pc.and_(pc.greater_equal(table[column], pa.scalar(start, type=time_type)),
                   pc.less(table[column], pa.scalar(end, type=time_type)))
    return table.filter(keep)


def _series_batches(storage: Storage, config: Config, group, features: list[str], start, end):
    """Yield the group's gridded series over ``[start, end)`` in batches of at most ``SCORE_BATCH_SERIES``.

    Each batch reads only its own entities' curated rows of ``[start, end)``,
    so memory depends on the batch size, not on the number of entities. A
    ``nodes`` group has a single series and comes as one batch.

    Yields:
        ``{series: DataFrame}`` as :func:`lstmae.frames.group_frames` returns.
    """
    time_type = schema.CURATED.field("timestamp").type
    in_range = (pc.field("timestamp") >= pa.scalar(start, type=time_type)) & (
        pc.field("timestamp") < pa.scalar(end, type=time_type))
    columns = ["timestamp", "entity", "metric", "value"]
    if group.layout == "metrics":
        # Only the entity column is kept, as dictionary indices: about 4 bytes per curated row.
        found = read_days(storage, METRICS, start, end, time_column="timestamp", columns=["entity"], filters=in_range,
                          read_dictionary=["entity"])
        if found is None:
            return
        entities = sorted(set().union(*(set(chunk.dictionary.to_pylist()) for chunk in found["entity"].chunks)))
        del found
        if "*" not in group.entities:
            entities = [entity for entity in entities if entity in set(group.entities)]
        batches = [entities[i : i + SCORE_BATCH_SERIES] for i in range(0, len(entities), SCORE_BATCH_SERIES)]
    else:
        batches = [None if "*" in group.entities else sorted(group.entities)]
    for batch in batches:
        keep = in_range if batch is None else in_range & _entity_filter(batch)
        table = read_days(storage, METRICS, start, end, time_column="timestamp", columns=columns, filters=keep)
        if table is None or table.num_rows == 0:
            continue
        curated = table.to_pandas()
        del table
        frames = group_frames(curated, group, features, config, start, end)
        del curated
        if frames:
            yield frames


def _windows_table(frame: pd.DataFrame, group: str, version: str) -> pa.Table:
    if frame.empty:
        return schema.WINDOWS.empty_table()
    frame = frame.assign(group=group, model_version=version)
    frame = frame.sort_values(["entity", "window_end"], kind="stable")
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
      the incident's current state. A closed incident with fewer than
      ``config.min_incident_points`` anomalous points is not written.
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
    step = config.step_delta
    lookback = merge_steps * step
    plot_margin = PLOT_MARGIN_STEPS * step if plots else pd.Timedelta(0)
    settings = {
        "start": start, "end": end, "step": step, "merge_steps": merge_steps, "lookback": lookback,
        "weights": {g.name: g.weight for g in config.groups}, "vote_threshold": config.vote_threshold,
        "read_start": start - max(lookback, plot_margin),
        "window_lookback": max(config.drift_windows, config.slo_windows) * max(g.timesteps for g in config.groups) * step,
        "slo_windows": config.slo_windows, "drift_windows": config.drift_windows,
        "min_incident_points": config.min_incident_points,
    }
    previous = _open_rows(storage, INCIDENTS, start, lookback)
    previous_violations = _open_rows(storage, SLO_VIOLATIONS, start, max(g.timesteps for g in config.groups) * step + step)
    entities = _combine_entities(storage, settings["read_start"], start - settings["window_lookback"], end)
    slices = day_slices(start, end)
    tables = {VOTES: schema.VOTES, ANOMALIES: schema.ANOMALIES, INCIDENTS: schema.INCIDENTS,
              SLO_VIOLATIONS: schema.SLO_VIOLATIONS, DRIFT_EVENTS: schema.DRIFT_EVENTS}
    time_columns = {VOTES: "timestamp", ANOMALIES: "window_end", INCIDENTS: "end", SLO_VIOLATIONS: "end",
                    DRIFT_EVENTS: "detected_at"}
    summary = {"votes": 0, "vote_anomalies": 0, "anomalies": 0, "incidents": 0, "slo_violations": 0,
               "drift_events": 0, "plots": 0}
    counted = {VOTES: "votes", ANOMALIES: "anomalies", INCIDENTS: "incidents", SLO_VIOLATIONS: "slo_violations",
               DRIFT_EVENTS: "drift_events"}
    # Incidents and drift events are few (about two per entity and day), so
    # they are kept for the plots, the retraining requests and the summary.
    incident_parts, event_parts = [], []
    with ExitStack() as stack:
        writers = {
            (name, day): stack.enter_context(SliceWriter(storage, name, day, slice_start, slice_end, table_schema))
            for day, slice_start, slice_end in slices
            for name, table_schema in tables.items()
        }
        for first in range(0, len(entities), COMBINE_BATCH_ENTITIES):
            batch = entities[first : first + COMBINE_BATCH_ENTITIES]
            outputs = _combine_batch(storage, batch, settings, _entity_rows(previous, batch),
                                     _entity_rows(previous_violations, batch), drift, slo)
            for day, slice_start, slice_end in slices:
                for name, frame in outputs.items():
                    day_rows = _between(frame, time_columns[name], slice_start, slice_end)
                    writers[(name, day)].write(_table(day_rows, tables[name]))
                    summary[counted[name]] += len(day_rows)
                    if name == VOTES and len(day_rows):
                        summary["vote_anomalies"] += int(day_rows["is_vote_anomaly"].sum())
            if len(outputs[INCIDENTS]):
                incident_parts.append(outputs[INCIDENTS])
            if len(outputs[DRIFT_EVENTS]):
                event_parts.append(outputs[DRIFT_EVENTS])
            del outputs
        for day, _, _ in slices:
            for name in tables:
                writers[(name, day)].close()

    incidents = pd.concat(incident_parts, ignore_index=True) if incident_parts else pd.DataFrame(columns=schema.INCIDENTS.names)
    events = pd.concat(event_parts, ignore_index=True) if event_parts else pd.DataFrame(columns=schema.DRIFT_EVENTS.names)
    if plots and len(incidents) and config.max_incident_plots > 0:
        from lstmae.plots import plot_incidents

        # The highest peaks first, and at most max_incident_plots of them.
        chosen = incidents.sort_values(["peak_score", "incident_id"], ascending=[False, True], kind="stable")
        chosen = chosen.head(config.max_incident_plots)
        if len(chosen) < len(incidents):
            log.info("Plotting %d of %d incidents (max_incident_plots)", len(chosen), len(incidents))
        # Entities are plotted by combine batch: each read then decodes only
        # the few row groups of the scores files that hold its entities.
        batch_of = {entity: i // COMBINE_BATCH_ENTITIES for i, entity in enumerate(entities)}
        chosen_entities = sorted(set(chosen["entity"]))
        for _, members in itertools.groupby(chosen_entities, key=lambda entity: batch_of.get(entity, -1)):
            batch = chosen[chosen["entity"].isin(list(members))]
            context_scores = _incident_context(storage, batch, settings["read_start"], end, PLOT_MARGIN_STEPS * step)
            summary["plots"] += len(plot_incidents(storage, batch, context_scores, step, PLOT_MARGIN_STEPS))
            del context_scores
    summary["retrain_requests"] = []
    for group, group_events in events.groupby("group", sort=True) if len(events) else []:
        drift.request_retraining(storage, group, group_events, config.training_days)
        summary["retrain_requests"].append(group)
    summary["incident_ids"] = sorted(incidents["incident_id"].unique().tolist()) if len(incidents) else []
    summary["new_incidents"] = sorted(incidents.loc[incidents["start"] >= start, "incident_id"].unique().tolist()) if len(incidents) else []
    summary["drift_event_ids"] = sorted(events["event_id"].tolist()) if len(events) else []
    log.info("Combined %s..%s for %d entities: %d vote rows (%d anomalous), %d anomalous windows, %d incidents, "
             "%d SLO violations, %d drift events, in %.2f s",
             start, end, len(entities), summary["votes"], summary["vote_anomalies"], summary["anomalies"],
             summary["incidents"], summary["slo_violations"], summary["drift_events"], time.monotonic() - started)
    return summary


def _combine_batch(storage: Storage, entities: list[str], settings: dict, previous: pd.DataFrame,
                   previous_violations: pd.DataFrame, drift, slo) -> dict[str, pd.DataFrame]:
    """Combine the scores and windows of ``entities`` (sorted) for :func:`combine_interval`.

    Every output row depends only on the rows of its own entity, so a batch
    gives the same rows as the whole fleet at once.

    Returns:
        ``{table: frame}`` of the votes, anomalous windows, incidents, SLO
        violations and drift events of the batch over the interval.
    """
    start, end, lookback = settings["start"], settings["end"], settings["lookback"]
    read_start, window_lookback = settings["read_start"], settings["window_lookback"]
    # The scores are read in two parts so that the per-feature errors, the
    # bulk of a scores file, are only decoded for anomalous points: every
    # point's flags for the vote, and anomalous points whole for incidents.
    scores = _read_scores(storage, read_start, end, start, _LIGHT_SCORE_COLUMNS, entities=entities)
    anomalous_points = _read_scores(storage, read_start, end, start - lookback,
                                    _LIGHT_SCORE_COLUMNS + ["feature_errors"], anomalous_only=True, entities=entities)
    windows_table = read_days(storage, WINDOWS, start - window_lookback, end, filters=_entity_filter(entities))
    all_windows = windows_table.to_pandas() if windows_table is not None else pd.DataFrame()
    del windows_table
    if not all_windows.empty:
        all_windows = all_windows[(all_windows["window_end"] >= start - window_lookback) & (all_windows["window_end"] < end)]
        if "slo_features" not in all_windows.columns:
            all_windows["slo_features"] = [[] for _ in range(len(all_windows))]
    windows = all_windows[all_windows["window_end"] >= start] if not all_windows.empty else all_windows

    return {
        VOTES: _votes(scores, settings["weights"], settings["vote_threshold"]),
        ANOMALIES: _anomalies(windows, anomalous_points, settings["weights"], settings["vote_threshold"]),
        INCIDENTS: _incidents(anomalous_points, start, end, settings["step"], settings["merge_steps"], previous,
                              settings["min_incident_points"]),
        SLO_VIOLATIONS: slo.violations(all_windows, start, end, settings["step"], settings["slo_windows"],
                                       previous_violations),
        DRIFT_EVENTS: drift.drift_events(all_windows, start, end, settings["step"], settings["drift_windows"]),
    }


def _combine_entities(storage: Storage, read_start, window_start, end) -> list[str]:
    """Return the sorted entities of the ``scores`` files of ``[read_start, end)`` and ``windows`` files of ``[window_start, end)``.

    Only the ``entity`` column is read, as dictionary arrays. The list may
    name an entity without rows in the interval; its batch then gives no rows.
    """
    found: set[str] = set()
    for table, first in ((SCORES, read_start), (WINDOWS, window_start)):
        entities = read_days(storage, table, first, end, columns=["entity"], read_dictionary=["entity"])
        if entities is not None:
            for chunk in entities["entity"].chunks:
                found.update(chunk.dictionary.to_pylist())
    return sorted(found)


def _entity_filter(entities: list[str]):
    """Row filter of ``entities`` (sorted). The range test lets Parquet skip row groups by their statistics."""
    return ((pc.field("entity") >= pa.scalar(entities[0], pa.string()))
            & (pc.field("entity") <= pa.scalar(entities[-1], pa.string()))
            & pc.field("entity").isin(entities))


def _entity_rows(frame: pd.DataFrame, entities: list[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["entity"].isin(entities)]


def _table(frame: pd.DataFrame, table_schema: pa.Schema) -> pa.Table:
    if frame.empty:
        return table_schema.empty_table()
    return pa.Table.from_pandas(frame[table_schema.names].reset_index(drop=True), schema=table_schema, preserve_index=False)


_LIGHT_SCORE_COLUMNS = ["timestamp", "entity", "group", "model_version", "status", "anomaly_score", "score_threshold",
                        "is_anomaly"]


def _read_scores(storage: Storage, read_start, end, keep_start, columns: list[str],
                 anomalous_only: bool = False, entities: list[str] | None = None) -> pd.DataFrame:
    """Scores rows with ``keep_start <= timestamp < end`` from the days of ``[read_start, end)``.

    Args:
        columns: the columns to read.
        anomalous_only: keep only rows with ``is_anomaly`` true; the filter
            runs while the files are decoded.
        entities: keep only rows of these entities (sorted); default all.

    Returns:
        The rows as a frame; an empty frame without columns when no scores
        file exists.
    """
    time_type = schema.SCORES.field("timestamp").type
    keep = (pc.field("timestamp") >= pa.scalar(keep_start, type=time_type)) & (
        pc.field("timestamp") < pa.scalar(end, type=time_type))
    if anomalous_only:
        keep &= pc.field("is_anomaly") == pa.scalar(True)
    if entities is not None:
        keep &= _entity_filter(entities)
    table = read_days(storage, SCORES, read_start, end, columns=columns, filters=keep)
    return table.to_pandas() if table is not None else pd.DataFrame()


def _incident_context(storage: Storage, incidents: pd.DataFrame, read_start, end, margin: pd.Timedelta) -> pd.DataFrame:
    """Read the scores rows that the plots of ``incidents`` show.

    Returns every row of the days of ``[read_start, end)`` of an incident's
    entity and group within ``margin`` of the incident's start or end. Other
    rows are dropped before their per-feature errors become Python objects.
    """
    entities = sorted(set(incidents["entity"]))
    table = read_days(storage, SCORES, read_start, end, columns=_LIGHT_SCORE_COLUMNS + ["feature_errors"],
                      filters=_entity_filter(entities))
    if table is None:
        return pd.DataFrame()
    # Per (entity, group), the union of the incidents' shown ranges as sorted
    # disjoint intervals of one int64 key, looked up by bisection per row.
    pairs = pd.Index(sorted(set(zip(incidents["entity"], incidents["group"]))))
    ranges = pd.DataFrame({
        "pair": pairs.get_indexer(list(zip(incidents["entity"], incidents["group"]))),
        "low": _millis(incidents["start"]) - margin // pd.Timedelta(milliseconds=1),
        "high": _millis(incidents["end"]) + margin // pd.Timedelta(milliseconds=1),
    }).sort_values(["pair", "low"])
    times = table["timestamp"].cast(pa.int64()).to_numpy()
    codes = pairs.get_indexer(list(zip(table["entity"].to_pylist(), table["group"].to_pylist())))
    base = min(int(ranges["low"].min()), int(times.min()) if len(times) else 0)
    span = max(int(ranges["high"].max()), int(times.max()) if len(times) else 0) - base + 1
    lows, highs = [], []
    for pair, low, high in ranges.itertuples(index=False):
        if lows and pair * span + low - base <= highs[-1]:
            highs[-1] = max(highs[-1], pair * span + high - base)
        else:
            lows.append(pair * span + low - base)
            highs.append(pair * span + high - base)
    keys = np.maximum(codes, 0).astype(np.int64) * span + (times - base)
    slot = np.searchsorted(np.asarray(lows, dtype=np.int64), keys, side="right") - 1
    covered = (codes >= 0) & (slot >= 0) & (keys <= np.asarray(highs, dtype=np.int64)[np.maximum(slot, 0)])
    return table.filter(pa.array(covered)).to_pandas()


def _votes(scores: pd.DataFrame, weights: dict[str, float], vote_threshold: float) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame(columns=schema.VOTES.names)
    scored = scores[scores["status"] == "scored"].copy()
    flags = scored["is_anomaly"].astype(bool)
    scored["weight"] = scored["group"].map(weights).fillna(0.0) * flags
    # One count column per group name; a point's flagging groups are the
    # names with a count above zero, repeated count times, in name order.
    names = sorted(scored["group"].unique().tolist())
    counts = [f"_flags_{i}" for i in range(len(names))]
    for column, name in zip(counts, names):
        scored[column] = (flags & (scored["group"] == name)).astype(np.int64)
    grouped = scored.groupby(["timestamp", "entity"], sort=True)
    votes = grouped.agg(vote_score=("weight", "sum"), groups_scored=("group", "count"),
                        **{column: (column, "sum") for column in counts}).reset_index()
    flagging = []
    if len(votes):
        matrix = votes[counts].to_numpy(dtype=np.int64).reshape(len(votes), len(names))
        combos, inverse = np.unique(matrix, axis=0, return_inverse=True)
        lists = [[name for name, count in zip(names, combo) for _ in range(int(count))] for combo in combos]
        flagging = [list(lists[i]) for i in inverse.reshape(-1)]
    votes["groups_flagging"] = pd.Series(flagging, index=votes.index, dtype=object)
    votes = votes.drop(columns=counts)
    votes["vote_score"] = votes["vote_score"].round(12)
    votes["is_vote_anomaly"] = votes["vote_score"] >= vote_threshold
    return votes


def _anomalies(windows: pd.DataFrame, anomalous_points: pd.DataFrame, weights, vote_threshold) -> pd.DataFrame:
    """Return the anomalous windows with the vote of every group that flags a point of the window's entity and time range.

    Args:
        windows: window verdicts.
        anomalous_points: scores rows (``entity``, ``group``, ``timestamp``)
            whose ``is_anomaly`` is true; other rows are ignored.
    """
    if windows.empty:
        return pd.DataFrame(columns=schema.ANOMALIES.names)
    flagged = windows[windows["is_anomaly"]].copy()
    if flagged.empty:
        return pd.DataFrame(columns=schema.ANOMALIES.names)
    points = anomalous_points
    if not points.empty:
        points = points[points["is_anomaly"].fillna(False).astype(bool)]
    # For each group with anomalous points: does the window's entity have one
    # inside [window_start, window_end]? Points are sorted by (entity, time)
    # into one int64 key, and each window looks up its range by bisection.
    window_starts = _millis(flagged["window_start"])
    window_ends = _millis(flagged["window_end"])
    inside: dict[str, np.ndarray] = {}
    if not points.empty:
        entities = pd.Index(sorted(set(points["entity"])))
        times = _millis(points["timestamp"])
        low = min(int(times.min()), int(window_starts.min()))
        span = max(int(times.max()), int(window_ends.max())) - low + 1
        window_codes = entities.get_indexer(flagged["entity"])
        known = window_codes >= 0
        for name, part in points.groupby("group", sort=True):
            keys = np.sort(entities.get_indexer(part["entity"]).astype(np.int64) * span + (_millis(part["timestamp"]) - low))
            base = np.maximum(window_codes, 0).astype(np.int64) * span
            first = np.searchsorted(keys, base + (window_starts - low), side="left")
            last = np.searchsorted(keys, base + (window_ends - low), side="right")
            inside[str(name)] = known & (last > first)
    names = sorted(inside)
    vote_scores, flags = [], []
    for position, group in enumerate(flagged["group"]):
        groups = sorted({group, *(name for name in names if inside[name][position])})
        flags.append(groups)
        vote_scores.append(round(sum(weights.get(g, 0.0) for g in groups), 12))
    flagged["vote_score"] = vote_scores
    flagged["groups_flagging"] = flags
    flagged["is_vote_anomaly"] = flagged["vote_score"] >= vote_threshold
    return flagged


def _millis(column: pd.Series) -> np.ndarray:
    """Milliseconds since the epoch of a time-zone-aware timestamp column, as int64."""
    return pd.DatetimeIndex(column).as_unit("ms").asi8


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


def _near_day_end(nanos: np.ndarray, gap: pd.Timedelta) -> bool:
    """Return True when any of ``nanos`` (ns since the epoch) lies at most ``gap`` before the next UTC midnight.

    A daily run ending at that midnight treats such a run as open, so a run
    over a longer range must keep it too for backfills to equal one-shot runs.
    """
    day = pd.Timedelta(days=1).value
    return bool(np.any((nanos // day + 1) * day - nanos <= gap.value))


def _incidents(scores, start, end, step, merge_steps, previous: pd.DataFrame, min_points: int = 1) -> pd.DataFrame:
    """Merge anomalous points into incident rows (see :func:`combine_interval`).

    A closed run with fewer than ``min_points`` anomalous points, counted over
    the whole incident, is left out. A run that is open at the end of the
    interval, or was open at a UTC midnight inside it, is kept whatever its
    size.
    """
    if scores.empty:
        return pd.DataFrame(columns=schema.INCIDENTS.names)
    rows = []
    gap = merge_steps * step
    anomalous = scores[scores["is_anomaly"].fillna(False).astype(bool)]
    anomalous = anomalous.sort_values(["entity", "group", "timestamp"], kind="stable").reset_index(drop=True)
    if anomalous.empty:
        return pd.DataFrame(columns=schema.INCIDENTS.names)
    # Runs: a new one starts where the (entity, group) changes or the time
    # to the previous anomalous point exceeds ``gap``.
    entities = anomalous["entity"].to_numpy(dtype=object)
    groups = anomalous["group"].to_numpy(dtype=object)
    times = pd.DatetimeIndex(anomalous["timestamp"]).as_unit("ns")
    nanos = times.asi8
    point_scores = anomalous["anomaly_score"].to_numpy(dtype=np.float64)
    versions = anomalous["model_version"].to_numpy(dtype=object)
    feature_errors = anomalous["feature_errors"].to_numpy(dtype=object)

    new_series = np.ones(len(anomalous), dtype=bool)
    new_series[1:] = (entities[1:] != entities[:-1]) | (groups[1:] != groups[:-1])
    new_run = new_series.copy()
    new_run[1:] |= np.diff(nanos) > gap.value
    bounds = np.append(np.flatnonzero(new_run), len(anomalous))

    earlier_rows = {}
    if len(previous):
        for row in previous.itertuples(index=False):
            earlier_rows.setdefault((row.entity, row.group), row)
    for first, stop in zip(bounds[:-1], bounds[1:]):
        entity, group = entities[first], groups[first]
        run_start, run_end = times[first], times[stop - 1]
        if run_end < start:
            continue  # lies wholly in the lookback: belongs to the previous interval
        incident_start, points_counted, points_before = run_start, stop - first, 0
        peak = first + int(np.nanargmax(point_scores[first:stop]))
        peak_timestamp, peak_score = times[peak], float(point_scores[peak])
        earlier = earlier_rows.get((entity, group))
        if earlier is not None and run_start - earlier.end <= gap:
            # Continues an open incident of an earlier interval, whose row
            # already counted the points before ``start``.
            incident_start = earlier.start
            points_counted = int(np.count_nonzero(nanos[first:stop] >= start.value))
            points_before = int(earlier.points or 0)
            if earlier.peak_score is not None and float(earlier.peak_score) >= peak_score:
                peak_timestamp, peak_score = earlier.peak_timestamp, float(earlier.peak_score)

        contribution: dict[str, float] = {}
        for errors in feature_errors[first:stop]:
            for item in errors if errors is not None else []:
                if item["ratio"] is not None and item["ratio"] > 1.0:
                    contribution[item["feature"]] = contribution.get(item["feature"], 0.0) + item["ratio"]
        top = [name for name, _ in sorted(contribution.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
        points = points_before + int(points_counted)
        is_open = bool(end - run_end <= gap)
        if points < min_points and not is_open and not _near_day_end(nanos[first:stop], gap):
            continue  # a short closed run: a blip, not an incident
        rows.append(
            {
                "incident_id": incident_id(group, entity, incident_start),
                "entity": entity,
                "group": group,
                "model_version": versions[stop - 1],
                "start": incident_start,
                "end": run_end,
                "peak_timestamp": peak_timestamp,
                "peak_score": peak_score,
                "points": points,
                "top_features": top,
                "open": is_open,
            }
        )
    return pd.DataFrame(rows, columns=schema.INCIDENTS.names)
