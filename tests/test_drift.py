"""Context drift: runs of anomalous windows, drift events and retraining requests."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from lstmae import drift, schema
from lstmae.config import config_from_dict
from lstmae.lake import write_slice
from lstmae.pipeline import combine_interval

STEP = pd.Timedelta("5min")
T0 = pd.Timestamp("2026-09-01T00:00:00Z")
TIMESTEPS = 12  # one window is one hour


def windows_frame(anomalous: list[bool], entity: str = "host", group: str = "all") -> pd.DataFrame:
    rows = []
    for i, flag in enumerate(anomalous):
        start = T0 + i * TIMESTEPS * STEP
        rows.append({"window_start": start, "window_end": start + (TIMESTEPS - 1) * STEP, "entity": entity,
                     "group": group, "model_version": "v1", "is_anomaly": flag, "max_ratio": 2.0 if flag else 0.5,
                     "first_offending_timestamp": start if flag else None,
                     "features_over_threshold": ["cpu"] if flag else [], "slo_features": []})
    return pd.DataFrame(rows)


def test_event_at_the_nth_window():
    windows = windows_frame([False] + [True] * 5 + [False])
    events = drift.drift_events(windows, T0, T0 + pd.Timedelta(days=1), STEP, drift_windows=4)
    assert len(events) == 1
    event = events.iloc[0]
    assert event["run_start"] == T0 + pd.Timedelta(hours=1)
    # The fourth anomalous window is window 4, ending at 04:55.
    assert event["detected_at"] == T0 + pd.Timedelta(hours=4, minutes=55)
    assert event["event_id"] == drift.event_id("all", "host", T0 + pd.Timedelta(hours=1))


def test_short_runs_and_interrupted_runs_give_nothing():
    windows = windows_frame([True, True, True, False, True, True, True])
    assert drift.drift_events(windows, T0, T0 + pd.Timedelta(days=1), STEP, drift_windows=4).empty


def test_event_reported_only_in_its_interval():
    windows = windows_frame([True] * 6)
    detected = T0 + pd.Timedelta(hours=3, minutes=55)
    before = drift.drift_events(windows, T0, detected, STEP, drift_windows=4)
    at = drift.drift_events(windows, detected, T0 + pd.Timedelta(days=1), STEP, drift_windows=4)
    assert before.empty
    assert len(at) == 1


def test_request_names_range_and_events(lake):
    events = drift.drift_events(windows_frame([True] * 4), T0, T0 + pd.Timedelta(days=1), STEP, drift_windows=4)
    request = drift.request_retraining(lake, "all", events, training_days=7)
    stored = json.loads(lake.read_bytes("requests/retrain/all.json"))
    assert stored == request
    assert stored["end"] == "2026-09-02T00:00:00+00:00"
    assert stored["start"] == "2026-08-26T00:00:00+00:00"
    assert [e["event_id"] for e in stored["events"]] == events["event_id"].tolist()
    assert drift.read_request(lake, "all") == stored
    drift.clear_request(lake, "all")
    assert drift.read_request(lake, "all") is None


def test_combine_records_drift_across_days(lake):
    """A 40-window run spanning two days is detected once, on the second day, and requests retraining."""
    config = config_from_dict({"groups": [{"name": "all", "timesteps": TIMESTEPS}], "drift_windows": 40})
    windows = windows_frame([False] * 10 + [True] * 45)  # windows 10..54 anomalous: 40th is window 49
    windows = pd.DataFrame(windows)
    for day in (T0, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=2)):
        part = windows[(windows["window_end"] >= day) & (windows["window_end"] < day + pd.Timedelta(days=1))]
        table = pa.Table.from_pandas(part.assign(model_version="v1")[schema.WINDOWS.names], schema=schema.WINDOWS,
                                     preserve_index=False)
        write_slice(lake, "windows", day, day, day + pd.Timedelta(days=1), table, group="all")

    # Window 49 (the 40th anomalous one) ends at 49:55, on the third day.
    for day in range(2):
        start = T0 + pd.Timedelta(days=day)
        result = combine_interval(lake, config, start, start + pd.Timedelta(days=1), plots=False)
        assert result["drift_events"] == 0
    assert not lake.exists("requests/retrain/all.json")

    third_day = T0 + pd.Timedelta(days=2)
    third = combine_interval(lake, config, third_day, third_day + pd.Timedelta(days=1), plots=False)
    assert third["drift_events"] == 1
    assert third["retrain_requests"] == ["all"]
    assert lake.exists("requests/retrain/all.json")
    events = lake.read_parquet(lake.list("drift_events/date=2026-09-03/")[0]).to_pandas()
    assert len(events) == 1
    assert events["run_start"].iloc[0] == T0 + pd.Timedelta(hours=10)
    assert events["detected_at"].iloc[0] == T0 + pd.Timedelta(hours=49, minutes=55)
    assert third["drift_event_ids"] == events["event_id"].tolist()

    rerun = combine_interval(lake, config, third_day, third_day + pd.Timedelta(days=1), plots=False)
    assert rerun["drift_event_ids"] == third["drift_event_ids"]
    assert len(lake.read_parquet(lake.list("drift_events/date=2026-09-03/")[0])) == 1
