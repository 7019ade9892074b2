"""SLO limits from training percentiles, window violations, and runs of violating windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmae import slo
from lstmae.config import GroupConfig

STEP = pd.Timedelta("5min")
T0 = pd.Timestamp("2026-09-01T00:00:00Z")


def test_percentile_patterns_first_match_wins():
    percentiles = {"cpu_user": 90.0, "*cpu*": 99.0, "*MEM*": 95.0}
    assert slo.percentile_for("cpu_user", percentiles) == 90.0
    assert slo.percentile_for("node_cpu_seconds", percentiles) == 99.0
    assert slo.percentile_for("memory_used", percentiles) == 95.0
    assert slo.percentile_for("disk_io", percentiles) is None


def test_fit_limits_per_entity_percentiles():
    frame_a = pd.DataFrame({"cpu": np.arange(1.0, 101.0), "memory": np.arange(101.0, 201.0), "disk": 1.0})
    frame_b = pd.DataFrame({"cpu": np.full(100, 7.0), "memory": np.full(100, 3.0), "disk": 2.0})
    limits = slo.fit_limits({"a": frame_a, "b": frame_b}, {f: f for f in ("cpu", "memory", "disk")},
                            {"*cpu*": 99.0, "*mem*": 95.0})
    # numpy's linear percentile of 1..100: 99th is 99.01, 95th of 101..200 is 195.05.
    assert limits["a"]["cpu"] == pytest.approx(99.01)
    assert limits["a"]["memory"] == pytest.approx(195.05)
    assert "disk" not in limits["a"]
    assert limits["b"] == {"cpu": 7.0, "memory": 3.0}


def test_feature_metrics_of_nodes_layout():
    one_metric = GroupConfig(name="cpu", layout="nodes", metrics=("cpu",), entities=("n1", "n2"))
    assert slo.feature_metrics(one_metric, ["n1", "n2"]) == {"n1": "cpu", "n2": "cpu"}
    two_metrics = GroupConfig(name="x", layout="nodes", metrics=("cpu", "mem"), entities=("n1",))
    assert slo.feature_metrics(two_metrics, ["cpu@n1", "mem@n1"]) == {"cpu@n1": "cpu", "mem@n1": "mem"}


def test_window_violations_strictly_above():
    values = np.array([[0.5, 0.9], [0.8, 0.95]])
    assert slo.window_violations(values, ["cpu", "memory"], {"cpu": 0.8, "memory": 0.9}) == ["memory"]
    assert slo.window_violations(values, ["cpu", "memory"], {}) == []


def windows_table(flags: list[list[str]], entity: str = "host", timesteps: int = 3, first: int = 0) -> pd.DataFrame:
    """Consecutive windows of ``timesteps`` points; ``flags[i]`` lists the features over limit in window i."""
    rows = []
    for i, features in enumerate(flags):
        start = T0 + (first + i) * timesteps * STEP
        rows.append({"window_start": start, "window_end": start + (timesteps - 1) * STEP, "entity": entity,
                     "group": "all", "model_version": "v1", "is_anomaly": False, "slo_features": features})
    return pd.DataFrame(rows)


def test_three_consecutive_windows_raise_one_violation():
    windows = windows_table([[], ["cpu"], ["cpu", "memory"], ["memory"], [], ["cpu"], ["cpu"]])
    end = T0 + 7 * 3 * STEP
    found = slo.violations(windows, T0, end, STEP)
    assert len(found) == 1
    row = found.iloc[0]
    assert row["start"] == T0 + 3 * STEP
    assert row["end"] == T0 + 11 * STEP
    assert row["windows"] == 3
    assert row["features"] == ["cpu", "memory"]
    assert not row["open"]
    assert row["violation_id"] == slo.violation_id("all", "host", T0 + 3 * STEP)


def test_gap_between_windows_breaks_the_run():
    windows = windows_table([["cpu"], ["cpu"], [], ["cpu"]])
    windows = windows[windows.index != 2]  # the third window is missing (a gap), not clean
    found = slo.violations(windows, T0, T0 + pd.Timedelta(days=1), STEP)
    assert found.empty


def test_run_across_intervals_keeps_its_id():
    windows = windows_table([[], ["cpu"], ["cpu"], ["cpu"], ["cpu"], ["cpu"], []])
    split = T0 + 4 * 3 * STEP  # the first interval contains windows 0..3
    first = slo.violations(windows[windows["window_end"] < split], T0, split, STEP)
    assert len(first) == 1
    assert bool(first.iloc[0]["open"])
    assert first.iloc[0]["windows"] == 3

    # The second interval reads only one window before it, plus the open row.
    second_part = windows[windows["window_end"] >= split - 3 * STEP]
    second = slo.violations(second_part, split, T0 + 7 * 3 * STEP, STEP, previous=first)
    assert len(second) == 1
    assert second.iloc[0]["violation_id"] == first.iloc[0]["violation_id"]
    assert second.iloc[0]["start"] == T0 + 3 * STEP
    assert second.iloc[0]["windows"] == 5
    assert not bool(second.iloc[0]["open"])


def test_run_ending_before_interval_not_repeated():
    windows = windows_table([["cpu"], ["cpu"], ["cpu"], [], []])
    found = slo.violations(windows, T0 + 4 * 3 * STEP, T0 + 5 * 3 * STEP, STEP)
    assert found.empty


def test_window_verdicts_carry_slo_features():
    """score_frame marks the epoch-anchored windows whose values exceed the series' limits."""
    import keras

    from lstmae.config import ThresholdConfig
    from lstmae.scaler import Scaler
    from lstmae.scoring import score_frame
    from lstmae.thresholds import fit_thresholds

    inputs = keras.Input((4, 2))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    index = pd.date_range(T0, periods=8, freq=STEP)
    frame = pd.DataFrame({"cpu": [0.1, 0.2, 0.1, 0.2, 0.1, 0.95, 0.1, 0.2],
                          "memory": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}, index=index)
    thresholds = fit_thresholds(["cpu", "memory"], np.array([[0.1, 0.1], [0.2, 0.2]]), ThresholdConfig())
    _, blocks = score_frame(identity, Scaler(("cpu", "memory"), (0.0, 0.0), (1.0, 1.0)), thresholds, frame, 4,
                            T0, T0 + 8 * STEP, slo_limits={"cpu": 0.9, "memory": 0.5})
    # Blocks 00:00-00:15 and 00:20-00:35; memory equal to its limit is not above it.
    assert [b["window_start"] for b in blocks] == [T0, T0 + 4 * STEP]
    assert [b["slo_features"] for b in blocks] == [[], ["cpu"]]
