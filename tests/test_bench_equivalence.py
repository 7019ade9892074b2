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


def test_reference_autoencoder_runs_fused_and_matches(autoencoder, windows):
    import keras

    from lstmae.fused import FUSED_MAX_TIMESTEPS
    from lstmae.fused import autoencoder_function as _fused_autoencoder
    from lstmae.model import build_autoencoder, build_predictor

    fused = _fused_autoencoder(autoencoder, (TIMESTEPS, FEATURES))
    assert fused is not None
    expected = autoencoder.predict(windows, verbose=0)
    assert np.abs(fused(windows).numpy() - expected).max() <= TOLERANCE

    # 60 steps, the reference window, with trained-looking weights of larger scale.
    keras.utils.set_random_seed(8)
    model = build_autoencoder(60, 5, units=(12, 10, 12))
    for variable in model.trainable_variables:
        variable.assign(variable.numpy() * 1.5)
    long_windows = np.random.default_rng(9).standard_normal((9, 60, 5)).astype(np.float32)
    assert np.abs(_fused_autoencoder(model, (60, 5))(long_windows).numpy() - model.predict(long_windows, verbose=0)).max() <= TOLERANCE

    # Other architectures and unrolled graphs that would be too large run through Keras.
    assert _fused_autoencoder(build_predictor(TIMESTEPS, FEATURES, look_ahead=2, units=(4, 4, 4)), (TIMESTEPS, FEATURES)) is None
    too_long = build_autoencoder(FUSED_MAX_TIMESTEPS + 1, 2, units=(2, 2, 2))
    assert _fused_autoencoder(too_long, (FUSED_MAX_TIMESTEPS + 1, 2)) is None


@pytest.mark.parametrize(
    ("setting", "windows", "expected"),
    [(None, 199_999, False), (None, 200_000, True), ("auto", 250_000, True), ("1", 1, True), ("on", 1, True),
     ("0", 10**6, False), ("off", 10**6, False)],
)
def test_jit_setting_by_env_and_size(monkeypatch, setting, windows, expected):
    from lstmae.model import JIT_MIN_WINDOWS, _jit_setting

    assert JIT_MIN_WINDOWS == 200_000
    if setting is None:
        monkeypatch.delenv("LSTMAE_JIT", raising=False)
    else:
        monkeypatch.setenv("LSTMAE_JIT", setting)
    assert _jit_setting(windows) is expected


def test_jit_setting_rejects_unknown_value(monkeypatch):
    from lstmae.model import _jit_setting

    monkeypatch.setenv("LSTMAE_JIT", "sometimes")
    with pytest.raises(ValueError, match="LSTMAE_JIT='sometimes'"):
        _jit_setting(10)


def test_model_switches_to_xla_after_threshold(monkeypatch, windows):
    import keras
    import lstmae.model as model_module

    monkeypatch.delenv("LSTMAE_JIT", raising=False)
    monkeypatch.setattr(model_module, "JIT_MIN_WINDOWS", 20)
    keras.utils.set_random_seed(3)
    autoencoder = model_module.build_autoencoder(TIMESTEPS, FEATURES, units=(8, 6, 8))
    expected = autoencoder.predict(windows, verbose=0)

    # 5 windows so far: the graph without XLA. 5 + 23 = 28 >= 20: the XLA graph.
    small = model_module.predict(autoencoder, windows[:5], batch_size=16)
    assert list(model_module._INFERENCE_FUNCTIONS[autoencoder]) == [(TIMESTEPS, FEATURES, None)]
    large = model_module.predict(autoencoder, windows, batch_size=16)

    graphs = model_module._INFERENCE_FUNCTIONS[autoencoder]
    assert (TIMESTEPS, FEATURES, None) in graphs
    assert (TIMESTEPS, FEATURES, 16) in graphs
    assert np.abs(small - expected[:5]).max() <= TOLERANCE
    assert np.abs(large - expected).max() <= TOLERANCE
