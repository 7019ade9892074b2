"""Windows, their timestamps, the epoch-anchored grid and gap handling, with hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmae.config import Config, GroupConfig
from lstmae.frames import grid, group_frames, missing_reasons, resolve_features, series_name
from lstmae.windows import cut_windows, trailing_window_ends, window_starts

T0 = pd.Timestamp("2026-09-01T00:00:00Z")


def minutes(*values: float) -> list[pd.Timestamp]:
    return [T0 + pd.Timedelta(minutes=v) for v in values]


# window_starts


def test_window_starts_stride_within_run():
    # 7 valid rows, windows of 3: the last start is 7 - 3 = 4.
    starts = window_starts(np.ones(7, dtype=bool), timesteps=3, stride=2)
    np.testing.assert_array_equal(starts, [0, 2, 4])
    assert starts.dtype == np.int64


def test_window_starts_restart_after_gap():
    valid = np.array([True, True, True, False, True, True, True, True])
    # Run [0, 3) contains one window; run [4, 8) contains windows at 4 and 5.
    np.testing.assert_array_equal(window_starts(valid, 3, 1), [0, 4, 5])


def test_window_starts_stride_counts_from_run_start():
    valid = np.array([False, True, True, True, True, True, True])
    # The run starts at row 1, so the starts are 1, 3, 5 (the last possible start is 7 - 2 = 5).
    np.testing.assert_array_equal(window_starts(valid, 2, 2), [1, 3, 5])


def test_window_starts_run_shorter_than_window():
    valid = np.array([True, True, False, True, True])
    starts = window_starts(valid, 3, 1)
    assert starts.shape == (0,)
    assert starts.dtype == np.int64


def test_window_starts_reference_overlap():
    # The reference cut: 60 rows shifted by 30. 150 rows give starts 0, 30, 60, 90.
    np.testing.assert_array_equal(window_starts(np.ones(150, dtype=bool), 60, 30), [0, 30, 60, 90])
    # One row fewer and the window at 90 no longer fits.
    np.testing.assert_array_equal(window_starts(np.ones(149, dtype=bool), 60, 30), [0, 30, 60])


@pytest.mark.parametrize("timesteps, stride", [(0, 1), (3, 0), (-1, 1)])
def test_window_starts_rejects_non_positive(timesteps, stride):
    with pytest.raises(ValueError, match="must be positive"):
        window_starts(np.ones(5, dtype=bool), timesteps, stride)


# cut_windows


def test_cut_windows_values_and_shape():
    values = np.arange(10.0).reshape(5, 2)  # rows [0, 1], [2, 3], [4, 5], [6, 7], [8, 9]
    windows = cut_windows(values, np.array([0, 2]), 3)
    assert windows.shape == (2, 3, 2)
    assert windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(windows[1], [[4, 5], [6, 7], [8, 9]])


def test_cut_windows_returns_copy():
    values = np.arange(10.0).reshape(5, 2)
    windows = cut_windows(values, np.array([0]), 3)
    windows[0, 0, 0] = 99.0
    assert values[0, 0] == 0.0


def test_cut_windows_empty_starts():
    windows = cut_windows(np.zeros((5, 2)), np.zeros(0, dtype=np.int64), 3)
    assert windows.shape == (0, 3, 2)


def test_cut_windows_rejects_one_dimension():
    with pytest.raises(ValueError, match=r"\(rows, features\)"):
        cut_windows(np.zeros(5), np.array([0]), 3)


# trailing_window_ends


def test_trailing_window_ends_after_gap():
    valid = np.array([True, True, True, False, True, True])
    np.testing.assert_array_equal(trailing_window_ends(valid, 2), [False, True, True, False, False, True])


def test_trailing_window_ends_one_step_is_valid_mask():
    valid = np.array([True, False, True, True])
    np.testing.assert_array_equal(trailing_window_ends(valid, 1), valid)


def test_trailing_window_ends_first_rows():
    # With windows of 3, the first two rows never have a full window behind them.
    np.testing.assert_array_equal(trailing_window_ends(np.ones(4, dtype=bool), 3), [False, False, True, True])


# Window timestamps


def test_window_timestamps_from_starts():
    index = pd.date_range(T0, periods=8, freq="5min")
    valid = np.array([True, True, True, False, True, True, True, True])
    starts = window_starts(valid, 3, 1)
    assert list(index[starts]) == minutes(0, 20, 25)
    # A window of 3 rows that starts at row s ends at row s + 2.
    assert list(index[starts + 2]) == minutes(10, 30, 35)


def test_trailing_window_end_timestamps():
    index = pd.date_range(T0, periods=8, freq="5min")
    valid = np.array([True, True, True, False, True, True, True, True])
    # Rows 2, 6 and 7 end a complete window of 3 rows: 00:10, 00:30 and 00:35.
    assert list(index[trailing_window_ends(valid, 3)]) == minutes(10, 30, 35)


# Epoch-anchored grid


def test_grid_rounds_start_up():
    points = grid(T0 + pd.Timedelta("2min30s"), T0 + pd.Timedelta("12min"), pd.Timedelta("5min"))
    assert list(points) == minutes(5, 10)


def test_grid_end_is_exclusive():
    points = grid(T0, T0 + pd.Timedelta("15min"), pd.Timedelta("5min"))
    assert list(points) == minutes(0, 5, 10)


def test_grid_empty_range():
    points = grid(T0, T0, pd.Timedelta("5min"))
    assert len(points) == 0


def test_grid_anchored_at_epoch():
    # 2026-09-01 is day 20,697 after 1970-01-01, so midnight is minute
    # 20,697 * 1,440 = 29,803,680 = 7 * 4,257,668 + 4 since the epoch. The first
    # 7-minute grid point at or after midnight is therefore 00:03.
    points = grid(T0, T0 + pd.Timedelta("30min"), pd.Timedelta("7min"))
    assert list(points) == minutes(3, 10, 17, 24)


def test_grid_same_points_for_any_start():
    step = pd.Timedelta("7min")
    whole = grid(T0, T0 + pd.Timedelta("1h"), step)
    later = grid(T0 + pd.Timedelta("11min"), T0 + pd.Timedelta("1h"), step)
    assert set(later) <= set(whole)
    assert list(later) == [p for p in whole if p >= T0 + pd.Timedelta("11min")]


# Gap handling in group frames


def _curated(rows: list[tuple[pd.Timestamp, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["timestamp", "entity", "metric", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


@pytest.fixture
def gap_frame() -> pd.DataFrame:
    """Ten 5-minute points of host h1 with max_gap_steps = 2.

    Metric a misses 00:10 alone; both metrics miss 00:25, 00:30 and 00:35
    (a gap of 3 points, one more than the limit). a's 00:05 value arrives at
    00:05:40, and two a values (3 and 5) fall on the 00:15 point.
    """
    rows = [
        (*minutes(0), "h1", "a", 1.0),
        (*minutes(5 + 40 / 60), "h1", "a", 2.0),
        (*minutes(14), "h1", "a", 3.0),
        (*minutes(15 + 50 / 60), "h1", "a", 5.0),
        (*minutes(20), "h1", "a", 6.0),
        (*minutes(40), "h1", "a", 7.0),
        (*minutes(45), "h1", "a", 8.0),
    ]
    rows += [(*minutes(5 * i), "h1", "b", float(i)) for i in range(10) if i not in (5, 6, 7)]
    config = Config(lake="unused", step="5min", max_gap_steps=2)
    frames = group_frames(_curated(rows), GroupConfig(name="g"), ["a", "b"], config, T0, T0 + pd.Timedelta("50min"))
    assert list(frames) == ["h1"]
    return frames["h1"]


def test_group_frame_grid_index(gap_frame):
    assert list(gap_frame.index) == minutes(*range(0, 50, 5))
    assert list(gap_frame.columns) == ["a", "b"]


def test_group_frame_rounds_and_averages(gap_frame):
    # 00:05:40 rounds to 00:05; 00:14 and 00:15:50 both round to 00:15 and average to 4.
    assert gap_frame.loc[minutes(5)[0], "a"] == 2.0
    assert gap_frame.loc[minutes(15)[0], "a"] == 4.0


def test_group_frame_fills_short_gap(gap_frame):
    # a at 00:10 is missing; the gap of 1 point is within max_gap_steps and takes the last value.
    assert gap_frame.loc[minutes(10)[0], "a"] == 2.0


def test_group_frame_long_gap_breaks(gap_frame):
    a = gap_frame["a"].to_numpy()
    b = gap_frame["b"].to_numpy()
    # The last value before the 3-point gap is carried over at most 2 points; the third stays missing.
    np.testing.assert_array_equal(a, [1, 2, 2, 4, 6, 6, 6, np.nan, 7, 8])
    np.testing.assert_array_equal(b, [0, 1, 2, 3, 4, 4, 4, np.nan, 8, 9])


def test_group_frame_gap_reason(gap_frame):
    reasons = missing_reasons(gap_frame)
    assert reasons.iloc[7] == "gap: no data at this grid point"
    assert reasons.drop(reasons.index[7]).isna().all()


def test_group_frame_gap_breaks_windows(gap_frame):
    valid = ~gap_frame.isna().any(axis=1).to_numpy()
    # Windows of 3: rows 2..6 end a complete window; after the gap, rows 8 and 9 do not.
    np.testing.assert_array_equal(
        trailing_window_ends(valid, 3), [False, False, True, True, True, True, True, False, False, False]
    )
    np.testing.assert_array_equal(window_starts(valid, 3, 1), [0, 1, 2, 3, 4])


def test_group_frame_no_fill_before_first_value():
    rows = [(*minutes(10), "h1", "a", 1.0), (*minutes(15), "h1", "a", 2.0)]
    config = Config(lake="unused", step="5min", max_gap_steps=3)
    frame = group_frames(_curated(rows), GroupConfig(name="g"), ["a"], config, T0, T0 + pd.Timedelta("20min"))["h1"]
    # The fill only looks backwards: points before the first value stay missing.
    np.testing.assert_array_equal(frame["a"].to_numpy(), [np.nan, np.nan, 1.0, 2.0])


def test_group_frame_missing_feature_reason():
    rows = [(*minutes(0), "h1", "a", 1.0), (*minutes(0), "h1", "b", 2.0), (*minutes(5), "h1", "a", 3.0)]
    config = Config(lake="unused", step="5min", max_gap_steps=0)
    frame = group_frames(_curated(rows), GroupConfig(name="g"), ["a", "b"], config, T0, T0 + pd.Timedelta("10min"))["h1"]
    reasons = missing_reasons(frame)
    assert reasons.iloc[0] is None
    assert reasons.iloc[1] == "missing feature(s): b"


def test_resolve_features_sorted_from_data():
    rows = [(*minutes(0), "h1", "memory", 1.0), (*minutes(0), "h1", "cpu", 2.0), (*minutes(0), "h2", "disk", 3.0)]
    assert resolve_features(GroupConfig(name="g"), _curated(rows)) == ["cpu", "disk", "memory"]


def test_nodes_layout_one_series():
    group = GroupConfig(name="cpu", layout="nodes", metrics=("cpu",), entities=("node2", "node1"))
    rows = [(*minutes(0), "node1", "cpu", 10.0), (*minutes(0), "node2", "cpu", 20.0), (*minutes(0), "node3", "cpu", 30.0)]
    features = resolve_features(group, _curated(rows))
    # The entities' order is the feature order; one metric names each feature after its entity.
    assert features == ["node2", "node1"]
    config = Config(lake="unused", step="5min")
    frames = group_frames(_curated(rows), group, features, config, T0, T0 + pd.Timedelta("5min"))
    assert series_name(group) == "node2+node1"
    assert list(frames) == ["node2+node1"]
    assert frames["node2+node1"].iloc[0].tolist() == [20.0, 10.0]
