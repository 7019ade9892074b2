"""lstmae's inference and scoring path give the same numbers as plain ``model.predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

TIMESTEPS = 10
FEATURES = 3
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def autoencoder():
    import keras

    from lstmae.model import build_autoencoder

    keras.utils.set_random_seed(3)
    return build_autoencoder(TIMESTEPS, FEATURES, units=(8, 6, 8))


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(5).standard_normal((23, TIMESTEPS, FEATURES)).astype(np.float32)


def test_predict_matches_model_predict(autoencoder, windows):
    from lstmae.model import predict

    expected = autoencoder.predict(windows, verbose=0)
    # batch_size 7 leaves a last batch of 2 windows.
    actual = predict(autoencoder, windows, batch_size=7)
    assert actual.shape == (23, TIMESTEPS, FEATURES)
    assert actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_predict_xla_matches_model_predict(autoencoder, windows):
    from lstmae.model import predict

    expected = autoencoder.predict(windows, verbose=0)
    actual = predict(autoencoder, windows, batch_size=16, jit_compile=True)
    assert actual.shape == (23, TIMESTEPS, FEATURES)
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_predict_accepts_float64_and_empty(autoencoder, windows):
    from lstmae.model import predict

    expected = autoencoder.predict(windows[:4], verbose=0)
    assert np.abs(predict(autoencoder, windows[:4].astype(np.float64)) - expected).max() <= TOLERANCE
    assert predict(autoencoder, windows[:0]).shape == (0, TIMESTEPS, FEATURES)


def test_predict_rejects_bad_batch_size(autoencoder, windows):
    from lstmae.model import predict

    with pytest.raises(ValueError, match="batch_size"):
        predict(autoencoder, windows, batch_size=0)


def test_predictor_outputs_match_model_predict(windows):
    import keras

    from lstmae.model import build_predictor, predict

    keras.utils.set_random_seed(4)
    model = build_predictor(TIMESTEPS, FEATURES, look_ahead=2, units=(6, 6, 6))
    expected = model.predict(windows, verbose=0)
    actual = predict(model, windows, batch_size=10)
    assert sorted(actual) == ["prediction", "reconstruction"]
    assert actual["prediction"].shape == (23, 2, FEATURES)
    for key in actual:
        assert np.abs(actual[key] - expected[key]).max() <= TOLERANCE


def test_series_errors_match_model_predict(autoencoder):
    from lstmae.scaler import Scaler
    from lstmae.scoring import series_errors
    from lstmae.windows import cut_windows

    rows = 40
    values = np.random.default_rng(6).normal(10.0, 2.0, (rows, FEATURES))
    values[25, 1] = np.nan  # a missing value: rows 25..34 cannot end a complete window
    index = pd.date_range("2026-09-01", periods=rows, freq="1min", tz="UTC")
    frame = pd.DataFrame(values, index=index, columns=["a", "b", "c"])
    scaler = Scaler.fit(["a", "b", "c"], values[~np.isnan(values).any(axis=1)])

    result = series_errors(autoencoder, scaler, frame, TIMESTEPS)

    ends = np.flatnonzero(result.scorable)
    expected_ends = np.r_[np.arange(TIMESTEPS - 1, 25), np.arange(25 + TIMESTEPS, rows)]
    np.testing.assert_array_equal(ends, expected_ends)
    windows = cut_windows(scaler.transform(values), ends - TIMESTEPS + 1, TIMESTEPS)
    expected = autoencoder.predict(windows, verbose=0)[:, -1, :]
    actual = scaler.transform(result.reconstruction[ends])
    assert np.abs(actual - expected).max() <= TOLERANCE
    assert np.isnan(result.reconstruction[~result.scorable]).all()
