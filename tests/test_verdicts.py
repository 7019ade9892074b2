"""Window verdicts: features over threshold and the first offending timestamp.

A fake model replaces the Keras model, so no training is needed.
:func:`lstmae.model.predict` calls ``model(batch, training=False)`` on batches
of scaled windows, possibly inside a traced ``tf.function``. The fake's
reconstructions therefore use only arithmetic operators, which work on numpy
arrays and TensorFlow tensors alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lstmae.config import ThresholdConfig
from lstmae.model import predict
from lstmae.scaler import Scaler
from lstmae.scoring import block_verdicts, score_frame
from lstmae.thresholds import Thresholds

T0 = pd.Timestamp("2026-09-01T00:00:00Z")


class FakeModel:
    """Return a chosen reconstruction of each batch of scaled windows.

    Attributes:
        reconstruct: maps a ``(batch, timesteps, features)`` array or tensor to
            its reconstruction; default all zeros, i.e. every point is
            reconstructed as the scaler's mean.
        trainings: the ``training`` argument of every call.
    """

    name = "fake_model"

    def __init__(self, reconstruct=lambda batch: batch * 0.0):
        self.reconstruct = reconstruct
        self.trainings: list[bool] = []

    def __call__(self, batch, training=False):
        self.trainings.append(training)
        return self.reconstruct(batch)


def minute(value: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=value)


def make_thresholds(method: str, feature_thresholds=(2.0, 10.0), score_threshold: float = 1.0) -> Thresholds:
    return Thresholds(
        method=method,
        features=("a", "b"),
        feature_thresholds=tuple(feature_thresholds),
        score_threshold=score_threshold,
        mean=(0.0, 0.0),
        std=(0.0, 0.0),
        low=(0.0, 0.0),
        settings=dataclasses.asdict(ThresholdConfig(method=method, smoothing=1, top_features=0)),
    )


# The scaler maps a's mean 10 and b's mean 0 to 0, so a model that returns
# zeros reconstructs every point as (10, 0) in original units.
SCALER = Scaler(("a", "b"), (10.0, 0.0), (2.0, 1.0))


@pytest.fixture
def frame() -> pd.DataFrame:
    """Six 1-minute points from 00:00; errors against (10, 0) are a: 0 0 0 0 3 1 and b: 0 0 0 0 0 30."""
    index = pd.date_range(T0, periods=6, freq="1min")
    return pd.DataFrame({"a": [10.0, 10, 10, 10, 13, 11], "b": [0.0, 0, 0, 0, 0, 30]}, index=index)


def test_predict_keeps_window_order():
    model = FakeModel(lambda batch: batch * 2.0)
    windows = np.arange(30, dtype=np.float32).reshape(5, 3, 2)
    # Five windows in batches of two: the outputs come back in input order.
    output = predict(model, windows, batch_size=2)
    assert output.shape == (5, 3, 2)
    np.testing.assert_array_equal(output, 2 * windows)
    assert model.trainings
    assert all(training is False for training in model.trainings)


# Reference rule: a block is anomalous when any timestep of any feature exceeds its threshold.


def test_reference_blocks_anchored_at_epoch(frame):
    verdicts = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), frame, 3,
                              np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))
    # Midnight is a multiple of 3 minutes since the epoch, so the blocks are 00:00-00:02 and 00:03-00:05.
    assert [(v["window_start"], v["window_end"]) for v in verdicts] == [(minute(0), minute(2)), (minute(3), minute(5))]


def test_reference_quiet_block(frame):
    quiet = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), frame, 3,
                           np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))[0]
    assert quiet["is_anomaly"] is False
    assert quiet["max_ratio"] == 0.0
    assert quiet["first_offending_timestamp"] is None
    assert quiet["features_over_threshold"] == []


def test_reference_anomalous_block(frame):
    verdict = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), frame, 3,
                             np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))[1]
    # Ratios to thresholds (2, 10): a = 0, 1.5, 0.5 and b = 0, 0, 3 at 00:03, 00:04, 00:05.
    assert verdict["is_anomaly"] is True
    assert verdict["max_ratio"] == pytest.approx(3.0)
    assert verdict["first_offending_timestamp"] == minute(4)
    # Ranked by the sum of ratios above 1: b (3) before a (1.5).
    assert verdict["features_over_threshold"] == ["b", "a"]


def test_reference_threshold_is_strict(frame):
    # An error exactly at the threshold (a = 3 with threshold 3) does not count.
    verdict = block_verdicts(FakeModel(), SCALER, make_thresholds("reference", (3.0, 30.0)), frame, 3,
                             np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))[1]
    assert verdict["is_anomaly"] is False
    assert verdict["max_ratio"] == pytest.approx(1.0)
    assert verdict["features_over_threshold"] == []


def test_reference_uses_block_reconstruction(frame):
    # A model that reconstructs every window perfectly leaves no error at all.
    verdicts = block_verdicts(FakeModel(lambda batch: batch * 1.0), SCALER, make_thresholds("reference"), frame, 3,
                              np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))
    assert [v["is_anomaly"] for v in verdicts] == [False, False]
    assert [v["max_ratio"] for v in verdicts] == pytest.approx([0.0, 0.0])


def test_blocks_outside_interval_skipped(frame):
    verdicts = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), frame, 3,
                              np.zeros(6, dtype=bool), np.zeros((6, 2)), minute(3), minute(6))
    # Only the block whose last point lies in [00:03, 00:06) is judged in this interval.
    assert [v["window_end"] for v in verdicts] == [minute(5)]


def test_incomplete_first_block_skipped(frame):
    shifted = frame.copy()
    shifted.index = shifted.index + pd.Timedelta("1min")  # 00:01 .. 00:06
    verdicts = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), shifted, 3,
                              np.zeros(6, dtype=bool), np.zeros((6, 2)), minute(0), minute(7))
    # The block 00:00-00:02 lacks 00:00 and is not judged; 00:06 starts the next, incomplete block.
    assert [(v["window_start"], v["window_end"]) for v in verdicts] == [(minute(3), minute(5))]
    # Shifted by a minute, a's 13 lies at 00:05 and b's 30 at 00:06, outside the block.
    assert verdicts[0]["first_offending_timestamp"] == minute(5)
    assert verdicts[0]["features_over_threshold"] == ["a"]


def test_block_with_gap_skipped(frame):
    gapped = frame.copy()
    gapped.iloc[3, 0] = np.nan
    verdicts = block_verdicts(FakeModel(), SCALER, make_thresholds("reference"), gapped, 3,
                              np.zeros(6, dtype=bool), np.zeros((6, 2)), T0, minute(6))
    assert [v["window_end"] for v in verdicts] == [minute(2)]


# Quantile method: a block is anomalous when any of its points is an anomaly.


def test_quantile_block_from_point_labels(frame):
    point_anomaly = np.array([False, False, False, False, True, True])
    ratios = np.array([[np.nan, np.nan], [np.nan, np.nan], [0.0, 0.0], [0.1, 0.0], [1.5, 0.5], [0.2, 3.0]])
    verdicts = block_verdicts(FakeModel(), SCALER, make_thresholds("quantile", score_threshold=0.5), frame, 3,
                              point_anomaly, ratios, T0, minute(6))
    quiet, anomalous = verdicts
    assert quiet["is_anomaly"] is False
    assert quiet["max_ratio"] == 0.0
    assert quiet["first_offending_timestamp"] is None
    assert quiet["features_over_threshold"] == []
    assert anomalous["is_anomaly"] is True
    assert anomalous["first_offending_timestamp"] == minute(4)
    assert anomalous["max_ratio"] == pytest.approx(3.0)
    # Sums over the anomalous points: a 1.5 + 0.2 = 1.7, b 0.5 + 3.0 = 3.5.
    assert anomalous["features_over_threshold"] == ["b", "a"]


def test_quantile_block_lists_only_features_over_one(frame):
    point_anomaly = np.array([False, False, False, True, False, False])
    ratios = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.9, 2.0], [0.0, 0.0], [5.0, 0.0]])
    verdict = block_verdicts(FakeModel(), SCALER, make_thresholds("quantile", score_threshold=0.5), frame, 3,
                             point_anomaly, ratios, T0, minute(6))[1]
    # a exceeds 1 only at 00:05, which is not an anomalous point, so only b is listed.
    assert verdict["first_offending_timestamp"] == minute(3)
    assert verdict["features_over_threshold"] == ["b"]
    assert verdict["max_ratio"] == pytest.approx(5.0)


# score_frame: point rows and window verdicts together


def test_score_frame_reference_points(frame):
    model = FakeModel()
    points, _ = score_frame(model, SCALER, make_thresholds("reference"), frame, 3, T0, minute(6))
    assert list(points["timestamp"]) == [minute(i) for i in range(6)]
    assert list(points["status"]) == ["unscorable", "unscorable", "scored", "scored", "scored", "scored"]
    assert points["reason"].iloc[0].startswith("insufficient history")
    # The reference score is the largest ratio: a 1.5 at 00:04, b 3.0 at 00:05.
    assert points["anomaly_score"].iloc[2:].tolist() == pytest.approx([0.0, 0.0, 1.5, 3.0])
    assert points["is_anomaly"].tolist() == [None, None, False, False, True, True]
    assert all(training is False for training in model.trainings)


def test_score_frame_feature_errors(frame):
    points, _ = score_frame(FakeModel(), SCALER, make_thresholds("reference"), frame, 3, T0, minute(6))
    a, b = points["feature_errors"].iloc[4]
    assert a == {"feature": "a", "value": 13.0, "reconstruction": 10.0, "error": 3.0, "threshold": 2.0, "ratio": 1.5}
    assert b["error"] == 0.0
    assert points["feature_errors"].iloc[0] is None


def test_score_frame_reference_blocks(frame):
    _, blocks = score_frame(FakeModel(), SCALER, make_thresholds("reference"), frame, 3, T0, minute(6))
    assert [b["is_anomaly"] for b in blocks] == [False, True]
    assert blocks[1]["first_offending_timestamp"] == minute(4)
    assert blocks[1]["features_over_threshold"] == ["b", "a"]


def test_score_frame_quantile_blocks(frame):
    thresholds = make_thresholds("quantile", score_threshold=0.5)
    points, blocks = score_frame(FakeModel(), SCALER, thresholds, frame, 3, T0, minute(6))
    # Mean of the ratios: 00:04 (1.5 + 0) / 2 = 0.75 and 00:05 (0.5 + 3) / 2 = 1.75 exceed 0.5.
    assert points["anomaly_score"].iloc[2:].tolist() == pytest.approx([0.0, 0.0, 0.75, 1.75])
    assert points["is_anomaly"].tolist() == [None, None, False, False, True, True]
    assert [b["is_anomaly"] for b in blocks] == [False, True]
    assert blocks[1]["first_offending_timestamp"] == minute(4)
    assert blocks[1]["features_over_threshold"] == ["b", "a"]


def test_score_frame_context_rows_not_output(frame):
    points, blocks = score_frame(FakeModel(), SCALER, make_thresholds("reference"), frame, 3, minute(3), minute(6))
    # Rows before 00:03 are context: 00:03 is scored from the window 00:01-00:03.
    assert list(points["timestamp"]) == [minute(3), minute(4), minute(5)]
    assert list(points["status"]) == ["scored", "scored", "scored"]
    assert [b["window_end"] for b in blocks] == [minute(5)]
