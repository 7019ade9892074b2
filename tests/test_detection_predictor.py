"""The predictor variant: forecast errors aligned to the right rows, and the early-warning score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmae.config import ThresholdConfig, config_from_dict
from lstmae.scaler import Scaler
from lstmae.scoring import point_scores, series_errors
from lstmae.thresholds import fit_thresholds

START = pd.Timestamp("2026-09-01T00:00:00Z")


def persistence_model(timesteps: int, features: int, predictor: bool = True):
    """A Keras model that reconstructs its input exactly and forecasts the window's last row."""
    import keras
    from keras import layers

    inputs = keras.Input((timesteps, features))
    reconstruction = layers.Identity(name="reconstruction")(inputs)
    if not predictor:
        return keras.Model(inputs, reconstruction)
    prediction = layers.Cropping1D((timesteps - 1, 0), name="prediction")(inputs)
    return keras.Model(inputs, {"reconstruction": reconstruction, "prediction": prediction})


def test_forecast_error_belongs_to_the_next_row():
    values = np.array([[1.0], [2.0], [4.0], [7.0], [11.0]])
    frame = pd.DataFrame(values, columns=["cpu"], index=pd.date_range(START, periods=5, freq="5min"))
    result = series_errors(persistence_model(2, 1), Scaler(("cpu",), (0.0,), (1.0,)), frame, timesteps=2)
    # Windows end at rows 1..4; the window ending at row e forecasts row e + 1 as row e's value.
    expected = [np.nan, np.nan, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(result.prediction_errors[:, 0], expected)
    np.testing.assert_allclose(result.errors[1:, 0], 0.0, atol=1e-6)


def test_early_warning_score_uses_prediction_thresholds():
    values = np.array([[1.0], [2.0], [4.0], [7.0], [11.0]])
    frame = pd.DataFrame(values, columns=["cpu"], index=pd.date_range(START, periods=5, freq="5min"))
    result = series_errors(persistence_model(2, 1), Scaler(("cpu",), (0.0,), (1.0,)), frame, timesteps=2)
    settings = ThresholdConfig(quantile=0.5, score_quantile=None, smoothing=1)
    thresholds = fit_thresholds(["cpu"], np.array([[0.1], [0.2]]), settings)
    thresholds = thresholds.with_prediction(np.array([[1.0], [2.0], [3.0], [np.nan]]))
    # Median forecast error 2.0 is the per-feature threshold; scores 2/2, 3/2, 4/2 on rows 2..4.
    assert thresholds.prediction_thresholds == (2.0,)
    assert thresholds.early_warning_threshold == pytest.approx(1.0)
    _, _, early_warning = point_scores(result, thresholds)
    np.testing.assert_allclose(early_warning, [np.nan, np.nan, 1.0, 1.5, 2.0])


def test_autoencoder_has_no_early_warning():
    frame = pd.DataFrame({"cpu": [1.0, 2.0, 3.0]}, index=pd.date_range(START, periods=3, freq="5min"))
    result = series_errors(persistence_model(2, 1, predictor=False), Scaler(("cpu",), (0.0,), (1.0,)), frame, timesteps=2)
    thresholds = fit_thresholds(["cpu"], np.array([[0.1], [0.2]]), ThresholdConfig())
    _, _, early_warning = point_scores(result, thresholds)
    assert np.isnan(early_warning).all()


@pytest.mark.slow
def test_predictor_trains_and_scores(lake):
    from lstmae import registry
    from lstmae.ingest import curated_table
    from lstmae.lake import day_slices, write_slice
    from lstmae.pipeline import score_group
    from lstmae.training import train_group

    index = pd.date_range(START, periods=3 * 288, freq="5min")
    rng = np.random.default_rng(0)
    phase = 2 * np.pi * (index.hour * 60 + index.minute) / 1440
    rows = pd.concat([
        pd.DataFrame({"timestamp": index, "entity": "host", "metric": metric, "value": level + 0.1 * np.sin(phase)
                      + rng.normal(0, 0.01, len(index)), "labels": None, "source": "test"})
        for metric, level in (("cpu", 0.5), ("memory", 0.3))
    ])
    for day, slice_start, slice_end in day_slices(START, START + pd.Timedelta(days=3)):
        part = rows[(rows["timestamp"] >= slice_start) & (rows["timestamp"] < slice_end)]
        write_slice(lake, "metrics", day, slice_start, slice_end, curated_table(part))
    config = config_from_dict({"groups": [{"name": "all", "model_type": "predictor", "look_ahead": 3, "timesteps": 6,
                                           "train_stride": 3, "units": [4, 4, 4], "epochs": 1}]})
    trained = train_group(lake, config, "all", START, START + pd.Timedelta(days=2), plots=False)
    entry = registry.get_version(lake, "all", trained["version"])
    assert entry.metadata["model_type"] == "predictor"
    assert len(entry.thresholds.prediction_thresholds) == 2
    assert entry.thresholds.early_warning_threshold > 0

    day = START + pd.Timedelta(days=2)
    summary = score_group(lake, config, "all", day, day + pd.Timedelta(days=1))
    assert summary["scored"] == 288
    scores = lake.read_parquet(lake.list("scores/date=2026-09-03/group=all/")[0]).to_pandas()
    assert scores["early_warning_score"].notna().all()
    assert np.isfinite(scores["early_warning_score"]).all()
    assert (scores["early_warning_score"] > 0).all()
