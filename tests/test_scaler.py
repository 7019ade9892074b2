"""Per-feature standardisation with hand-computed means and standard deviations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lstmae.scaler import Scaler


def test_scaler_fit_values():
    # a: mean (1 + 3) / 2 = 2, population std 1; b: mean 15, std 5.
    scaler = Scaler.fit(["a", "b"], np.array([[1.0, 10.0], [3.0, 20.0]]))
    assert scaler.features == ("a", "b")
    assert scaler.mean == (2.0, 15.0)
    assert scaler.std == (1.0, 5.0)


def test_scaler_transform_values():
    scaler = Scaler.fit(["a", "b"], np.array([[1.0, 10.0], [3.0, 20.0]]))
    np.testing.assert_allclose(scaler.transform(np.array([[1.0, 10.0], [4.0, 25.0]])), [[-1.0, -1.0], [2.0, 2.0]])


def test_scaler_round_trip():
    values = np.array([[0.5, -3.0, 100.0], [1.5, 7.0, 250.0], [9.0, 1.0, 50.0]])
    scaler = Scaler.fit(["a", "b", "c"], values)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(values)), values, rtol=0, atol=1e-12)


def test_scaler_round_trip_3d_windows():
    values = np.arange(24.0).reshape(2, 4, 3)  # (windows, timesteps, features)
    scaler = Scaler.fit(["a", "b", "c"], values.reshape(-1, 3))
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(values)), values, atol=1e-12)


def test_scaler_constant_column_maps_to_zero():
    scaler = Scaler.fit(["constant", "zero"], np.array([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0]]))
    assert scaler.std == (1.0, 1.0)
    scaled = scaler.transform(np.array([[5.0, 0.0], [6.0, 2.0]]))
    assert not np.isnan(scaled).any()
    np.testing.assert_array_equal(scaled, [[0.0, 0.0], [1.0, 2.0]])


def test_scaler_ignores_nan_rows_per_feature():
    # a ignores its NaN: mean of 2 and 4 is 3, std 1. b uses all three rows: mean 2, std sqrt(2/3).
    scaler = Scaler.fit(["a", "b"], np.array([[2.0, 1.0], [np.nan, 2.0], [4.0, 3.0]]))
    assert scaler.mean == (3.0, 2.0)
    assert scaler.std[0] == 1.0
    assert scaler.std[1] == pytest.approx(np.sqrt(2.0 / 3.0))


def test_scaler_rejects_feature_without_values():
    with pytest.raises(ValueError, match=r"no values for feature\(s\) \['b'\]"):
        Scaler.fit(["a", "b"], np.array([[1.0, np.nan], [2.0, np.nan]]))


def test_scaler_rejects_no_rows():
    with pytest.raises(ValueError, match="Cannot fit the scaler"):
        Scaler.fit(["a"], np.zeros((0, 1)))


def test_scaler_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"shape \(rows, 2\)"):
        Scaler.fit(["a", "b"], np.zeros((3, 3)))


def test_scaler_json_round_trip():
    scaler = Scaler.fit(["a", "b"], np.array([[1.0, 10.0], [3.0, 20.0]]))
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored == scaler
