"""Combine on hand-made score tables: weighted vote, anomalous windows, incidents and their plots."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from lstmae import schema
from lstmae.config import config_from_dict
from lstmae.lake import day_slices, write_slice
from lstmae.pipeline import combine_interval, incident_id

STEP = pd.Timedelta("5min")
T0 = pd.Timestamp("2026-09-01T00:00:00Z")
CONFIG = config_from_dict({
    "step": "5min",
    "vote_threshold": 0.5,
    "incident_merge_steps": 6,
    "min_incident_points": 1,
    "groups": [{"name": "cpu", "weight": 0.5, "timesteps": 4}, {"name": "memory", "weight": 0.3, "timesteps": 4},
               {"name": "disk", "weight": 0.2, "timesteps": 4}],
})


def score_rows(group: str, flags: dict[int, float], points: int, start: pd.Timestamp = T0, entity: str = "host"):
    """Scored rows of one group: ``flags`` maps point index to an anomaly score above 1 (threshold 1)."""
    rows = []
    for i in range(points):
        score = flags.get(i, 0.2)
        rows.append({
            "timestamp": start + i * STEP, "entity": entity, "group": group, "model_version": "v1",
            "status": "scored", "reason": None, "anomaly_score": score, "score_threshold": 1.0,
            "is_anomaly": score > 1.0, "early_warning_score": None,
            "feature_errors": [{"feature": "a", "value": 1.0, "reconstruction": 0.5, "error": 0.5, "threshold": 0.25,
                                "ratio": 2 * score},
                               {"feature": "b", "value": 1.0, "reconstruction": 0.9, "error": 0.1, "threshold": 0.25,
                                "ratio": 0.4 * score}],
        })
    return pd.DataFrame(rows)


def publish(lake, table: str, frame: pd.DataFrame, table_schema: pa.Schema, column: str, group: str) -> None:
    for day, slice_start, slice_end in day_slices(frame[column].min(), frame[column].max() + STEP):
        part = frame[(frame[column] >= slice_start) & (frame[column] < slice_end)]
        write_slice(lake, table, day, slice_start, slice_end,
                    pa.Table.from_pandas(part[table_schema.names], schema=table_schema, preserve_index=False), group=group)


def window_rows(group: str, anomalous: list[bool], entity: str = "host") -> pd.DataFrame:
    rows = []
    for i, flag in enumerate(anomalous):
        start = T0 + 4 * i * STEP
        rows.append({"window_start": start, "window_end": start + 3 * STEP, "entity": entity, "group": group,
                     "model_version": "v1", "is_anomaly": flag, "max_ratio": 2.0 if flag else 0.5,
                     "first_offending_timestamp": start + STEP if flag else None,
                     "features_over_threshold": ["a"] if flag else [], "slo_features": []})
    return pd.DataFrame(rows)


def test_weighted_vote_per_point(lake):
    publish(lake, "scores", score_rows("cpu", {1: 2.0, 2: 2.0}, 8), schema.SCORES, "timestamp", "cpu")
    publish(lake, "scores", score_rows("memory", {2: 3.0, 3: 3.0}, 8), schema.SCORES, "timestamp", "memory")
    publish(lake, "scores", score_rows("disk", {3: 1.5, 5: 1.5}, 8), schema.SCORES, "timestamp", "disk")
    summary = combine_interval(lake, CONFIG, T0, T0 + 8 * STEP, plots=False)
    votes = lake.read_parquet(lake.list("votes/date=2026-09-01/")[0]).to_pandas().set_index("timestamp")
    assert summary["votes"] == 8
    expected = {0: 0.0, 1: 0.5, 2: 0.8, 3: 0.5, 4: 0.0, 5: 0.2, 6: 0.0, 7: 0.0}
    for i, score in expected.items():
        assert votes.loc[T0 + i * STEP, "vote_score"] == score
    assert votes["is_vote_anomaly"].tolist() == [False, True, True, True, False, False, False, False]
    assert list(votes.loc[T0 + 3 * STEP, "groups_flagging"]) == ["disk", "memory"]
    assert votes["groups_scored"].tolist() == [3] * 8
    assert summary["vote_anomalies"] == 3


def test_anomalous_windows_carry_the_vote(lake):
    publish(lake, "scores", score_rows("cpu", {1: 2.0}, 8), schema.SCORES, "timestamp", "cpu")
    publish(lake, "scores", score_rows("disk", {6: 2.0}, 8), schema.SCORES, "timestamp", "disk")
    publish(lake, "windows", window_rows("cpu", [True, False]), schema.WINDOWS, "window_end", "cpu")
    publish(lake, "windows", window_rows("disk", [False, True]), schema.WINDOWS, "window_end", "disk")
    combine_interval(lake, CONFIG, T0, T0 + 8 * STEP, plots=False)
    anomalies = lake.read_parquet(lake.list("anomalies/date=2026-09-01/")[0]).to_pandas().sort_values("window_start")
    assert anomalies["group"].tolist() == ["cpu", "disk"]
    # Window 1 of disk: only disk flags a point in 00:20..00:35, 0.2 < 0.5.
    assert anomalies["vote_score"].tolist() == [0.5, 0.2]
    assert anomalies["is_vote_anomaly"].tolist() == [True, False]
    assert anomalies["first_offending_timestamp"].tolist() == [T0 + STEP, T0 + 5 * STEP]


def test_incident_rows_and_ids(lake):
    # Points 3, 4 and 7 merge (gap 3 <= 6 steps), point 20 starts a new incident.
    publish(lake, "scores", score_rows("cpu", {3: 2.0, 4: 5.0, 7: 1.5, 20: 1.2}, 30), schema.SCORES, "timestamp", "cpu")
    summary = combine_interval(lake, CONFIG, T0, T0 + 30 * STEP, plots=False)
    incidents = lake.read_parquet(lake.list("incidents/date=2026-09-01/")[0]).to_pandas().sort_values("start")
    assert len(incidents) == 2
    first = incidents.iloc[0]
    assert (first["start"], first["end"], first["peak_timestamp"]) == (T0 + 3 * STEP, T0 + 7 * STEP, T0 + 4 * STEP)
    assert first["peak_score"] == 5.0
    assert first["points"] == 3
    assert list(first["top_features"]) == ["a", "b"]
    assert first["incident_id"] == incident_id("cpu", "host", T0 + 3 * STEP)
    assert not first["open"]
    assert summary["incident_ids"] == sorted(incidents["incident_id"])
    assert summary["new_incidents"] == summary["incident_ids"]


def test_incident_continues_across_midnight(lake):
    """A run from 23:40 to 00:20 keeps one id, its start and its peak, and counts all its points."""
    day2 = T0 + pd.Timedelta(days=1)
    start = day2 - 24 * STEP  # 22:00 on day 1
    flags = {i: 2.0 for i in range(20, 29)}  # 23:40 .. 00:20
    flags[21] = 9.0
    publish(lake, "scores", score_rows("cpu", flags, 48, start=start), schema.SCORES, "timestamp", "cpu")

    first = combine_interval(lake, CONFIG, start, day2, plots=False)
    second = combine_interval(lake, CONFIG, day2, day2 + 24 * STEP, plots=False)
    day1_rows = lake.read_parquet(lake.list("incidents/date=2026-09-01/")[0]).to_pandas()
    day2_rows = lake.read_parquet(lake.list("incidents/date=2026-09-02/")[0]).to_pandas()
    assert first["incident_ids"] == second["incident_ids"]
    assert second["new_incidents"] == []
    assert bool(day1_rows["open"].iloc[0])
    assert day1_rows["points"].iloc[0] == 4
    latest = day2_rows.iloc[0]
    assert latest["start"] == start + 20 * STEP
    assert latest["end"] == start + 28 * STEP
    assert latest["points"] == 9
    assert latest["peak_score"] == 9.0
    assert latest["peak_timestamp"] == start + 21 * STEP
    assert not bool(latest["open"])

    # Rerunning the second day gives the same row, not a second one.
    combine_interval(lake, CONFIG, day2, day2 + 24 * STEP, plots=False)
    again = lake.read_parquet(lake.list("incidents/date=2026-09-02/")[0]).to_pandas()
    assert len(again) == 1
    assert again["incident_id"].iloc[0] == latest["incident_id"]


def test_incident_plot_written(lake):
    publish(lake, "scores", score_rows("cpu", {10: 2.0, 11: 3.0}, 30), schema.SCORES, "timestamp", "cpu")
    summary = combine_interval(lake, CONFIG, T0, T0 + 30 * STEP, plots=True)
    assert summary["plots"] == 1
    key = f"plots/date=2026-09-01/{summary['incident_ids'][0]}.png"
    assert lake.read_bytes(key)[:8] == b"\x89PNG\r\n\x1a\n"


def test_incident_plots_capped_by_peak(lake):
    """With max_incident_plots 1, only the incident with the highest peak is drawn."""
    import dataclasses

    publish(lake, "scores", score_rows("cpu", {3: 2.0, 4: 2.5, 20: 7.0, 21: 3.0}, 30), schema.SCORES, "timestamp", "cpu")
    capped = dataclasses.replace(CONFIG, max_incident_plots=1)
    summary = combine_interval(lake, capped, T0, T0 + 30 * STEP, plots=True)
    incidents = lake.read_parquet(lake.list("incidents/date=2026-09-01/")[0]).to_pandas()
    assert len(incidents) == 2
    assert summary["plots"] == 1
    highest = incidents.sort_values("peak_score").iloc[-1]["incident_id"]
    assert lake.list("plots/") == [f"plots/date=2026-09-01/{highest}.png"]

    none = dataclasses.replace(CONFIG, max_incident_plots=0)
    assert combine_interval(lake, none, T0, T0 + 30 * STEP, plots=True)["plots"] == 0


def incident_rows(lake) -> pd.DataFrame:
    """Every row of the incidents table, over all day partitions."""
    return pd.concat([lake.read_parquet(key).to_pandas() for key in lake.list("incidents/")], ignore_index=True)


def test_short_closed_incident_dropped(lake):
    """With min_incident_points 3: a closed 3-point run stays, a closed 1-point run goes, an open one stays."""
    import dataclasses

    # Runs (merge gap 6 steps): 3..7 (3 points, closed), 20 (1 point, 10 steps before the
    # end: closed), 27 (1 point, 3 steps before the end: open).
    publish(lake, "scores", score_rows("cpu", {3: 2.0, 4: 5.0, 7: 1.5, 20: 1.2, 27: 1.1}, 30), schema.SCORES,
            "timestamp", "cpu")
    config = dataclasses.replace(CONFIG, min_incident_points=3)
    summary = combine_interval(lake, config, T0, T0 + 30 * STEP, plots=False)
    incidents = incident_rows(lake).sort_values("start")
    assert incidents["start"].tolist() == [T0 + 3 * STEP, T0 + 27 * STEP]
    assert incidents["points"].tolist() == [3, 1]
    assert incidents["open"].tolist() == [False, True]
    assert summary["incident_ids"] == sorted([incident_id("cpu", "host", T0 + 3 * STEP),
                                              incident_id("cpu", "host", T0 + 27 * STEP)])


def test_short_incident_at_midnight_kept(lake, tmp_path):
    """Short runs open at midnight survive a two-day run as in daily runs, so both give the same ids."""
    import dataclasses

    from lstmae.storage import LocalStorage

    config = dataclasses.replace(CONFIG, min_incident_points=3)
    day2 = T0 + pd.Timedelta(days=1)
    start = day2 - 24 * STEP  # 22:00 on day 1
    # host a: 22:30 alone (closed at midnight: dropped), 23:45 and 23:50 (2 points, 10 minutes
    # before midnight: open then, kept). host b: 23:55 and 00:05 (2 points across midnight: kept).
    frame = pd.concat([score_rows("cpu", {6: 2.0, 21: 2.0, 22: 3.0}, 48, start=start, entity="a"),
                       score_rows("cpu", {23: 2.0, 25: 4.0}, 48, start=start, entity="b")], ignore_index=True)
    one_shot = LocalStorage(tmp_path / "one-shot")
    for storage in (lake, one_shot):
        publish(storage, "scores", frame, schema.SCORES, "timestamp", "cpu")

    combine_interval(lake, config, start, day2, plots=False)
    combine_interval(lake, config, day2, day2 + 24 * STEP, plots=False)
    combine_interval(one_shot, config, start, day2 + 24 * STEP, plots=False)
    daily, whole = incident_rows(lake), incident_rows(one_shot)

    expected = sorted([incident_id("cpu", "a", start + 21 * STEP), incident_id("cpu", "b", start + 23 * STEP)])
    assert sorted(whole["incident_id"]) == expected
    assert sorted(set(daily["incident_id"])) == expected
    latest = daily.sort_values("end").drop_duplicates("incident_id", keep="last").set_index("entity")
    assert latest.loc["a", "points"] == 2
    assert latest.loc["b", "points"] == 2
    assert latest.loc["b", "end"] == start + 25 * STEP
    assert whole.set_index("entity").loc["b", "points"] == 2
    assert not whole["open"].any()
