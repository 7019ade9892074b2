"""Thresholds of both methods on a small error matrix, computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lstmae.config import ThresholdConfig
from lstmae.thresholds import Thresholds, feature_ratios, fit_thresholds, raw_scores, smooth_scores

# Validation errors, (points, features): a = 1, 2, 3, 4 and b = 2, 2, 2, 10.
ERRORS = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [4.0, 10.0]])


# reference: Gaussian per feature, high = mean + sigma * std (population std)


def test_reference_gaussian_fit():
    thresholds = fit_thresholds(["a", "b"], ERRORS, ThresholdConfig(method="reference", sigma=3.0))
    # a: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    # b: mean 4, variance (4 + 4 + 4 + 36) / 4 = 12.
    assert thresholds.mean == pytest.approx((2.5, 4.0))
    assert thresholds.std == pytest.approx((math.sqrt(1.25), math.sqrt(12.0)))


def test_reference_high_threshold():
    thresholds = fit_thresholds(["a", "b"], ERRORS, ThresholdConfig(method="reference", sigma=3.0))
    # a: 2.5 + 3 * 1.118034 = 5.854102; b: 4 + 3 * 3.464102 = 14.392305.
    assert thresholds.feature_thresholds == pytest.approx((5.854102, 14.392305), abs=1e-6)
    assert thresholds.low == pytest.approx((-0.854102, -6.392305), abs=1e-6)
    assert thresholds.score_threshold == 1.0
    assert thresholds.method == "reference"
    assert thresholds.features == ("a", "b")


def test_reference_sigma_two():
    thresholds = fit_thresholds(["a", "b"], ERRORS, ThresholdConfig(method="reference", sigma=2.0))
    # a: 2.5 + 2 * 1.118034 = 4.736068.
    assert thresholds.feature_thresholds[0] == pytest.approx(4.736068, abs=1e-6)


def test_reference_constant_feature_gets_floor():
    errors = np.array([[1.0, 0.0], [3.0, 0.0]])
    thresholds = fit_thresholds(["a", "flat"], errors, ThresholdConfig(method="reference", min_threshold=1e-6))
    # a: mean 2, std 1, high 2 + 3 = 5; flat: mean 0, std 0, high 0 -> the floor.
    assert thresholds.feature_thresholds == (5.0, 1e-6)


def test_reference_skips_non_finite_rows():
    errors = np.vstack([ERRORS, [np.nan, 100.0], [np.inf, 0.0]])
    thresholds = fit_thresholds(["a", "b"], errors, ThresholdConfig(method="reference"))
    assert thresholds.mean == pytest.approx((2.5, 4.0))


def test_reference_score_is_max_ratio():
    settings = ThresholdConfig(method="reference")
    errors = np.array([[1.0, 0.5], [6.0, 0.0]])
    # Ratios to thresholds (2, 0.25): [0.5, 2] and [3, 0]; the score is the row maximum.
    np.testing.assert_allclose(feature_ratios(errors, [2.0, 0.25]), [[0.5, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(raw_scores(errors, [2.0, 0.25], settings), [2.0, 3.0])


# quantile: per-feature validation quantile, mean of ratios, quantile of the score


def quantile_settings(**changes) -> ThresholdConfig:
    """The quantile method with one quantile for features and score, no smoothing, all features."""
    return ThresholdConfig(**{"method": "quantile", "score_quantile": None, "smoothing": 1, "top_features": 0, **changes})


def test_quantile_feature_thresholds():
    settings = quantile_settings(quantile=0.75)
    thresholds = fit_thresholds(["a", "b"], ERRORS, settings)
    # Linear interpolation at position 0.75 * (4 - 1) = 2.25 of the sorted errors:
    # a: 3 + 0.25 * (4 - 3) = 3.25; b: 2 + 0.25 * (10 - 2) = 4.
    assert thresholds.feature_thresholds == pytest.approx((3.25, 4.0))


def test_quantile_score_threshold():
    settings = quantile_settings(quantile=0.75)
    thresholds = fit_thresholds(["a", "b"], ERRORS, settings)
    # Ratios a / 3.25 = 4/13, 8/13, 12/13, 16/13 and b / 4 = 0.5, 0.5, 0.5, 2.5.
    # Mean over features: 21/52, 29/52, 37/52, 97/52.
    # Quantile 0.75: 37/52 + 0.25 * (97 - 37)/52 = 52/52 = 1.
    assert thresholds.score_threshold == pytest.approx(1.0)


def test_quantile_scores_by_hand():
    settings = quantile_settings(quantile=0.75)
    scores = raw_scores(ERRORS, [3.25, 4.0], settings)
    np.testing.assert_allclose(scores, np.array([21, 29, 37, 97]) / 52)


def test_quantile_factor_scales_threshold():
    settings = quantile_settings(quantile=0.75, factor=1.5)
    assert fit_thresholds(["a", "b"], ERRORS, settings).score_threshold == pytest.approx(1.5)


def test_quantile_top_features():
    settings = quantile_settings(quantile=0.75, top_features=1)
    # With one feature kept, the score is the largest ratio: 0.5, 8/13, 12/13, 2.5.
    np.testing.assert_allclose(raw_scores(ERRORS, [3.25, 4.0], settings), [0.5, 8 / 13, 12 / 13, 2.5])


def test_quantile_smoothing_in_calibration():
    settings = quantile_settings(quantile=0.75, smoothing=2)
    thresholds = fit_thresholds(["a", "b"], ERRORS, settings)
    # Trailing means of 2 of 21, 29, 37, 97 (/52): 21, 25, 33, 67 (/52).
    # Quantile 0.75: 33/52 + 0.25 * 34/52 = 41.5/52.
    assert thresholds.score_threshold == pytest.approx(41.5 / 52)


def test_quantile_calibrates_on_score_errors():
    settings = quantile_settings(quantile=0.75)
    # Feature thresholds still come from ERRORS (3.25, 4); the score quantile
    # comes from the separate point errors: scores 0.5 and 1.5 -> 0.5 + 0.75 * 1.0 = 1.25.
    point_errors = np.array([[1.625, 2.0], [np.nan, np.nan], [4.875, 6.0]])
    thresholds = fit_thresholds(["a", "b"], ERRORS, settings, score_errors=point_errors)
    assert thresholds.feature_thresholds == pytest.approx((3.25, 4.0))
    assert thresholds.score_threshold == pytest.approx(1.25)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="Unknown threshold method 'median'"):
        fit_thresholds(["a", "b"], ERRORS, ThresholdConfig(method="median"))


def test_no_finite_errors_raises():
    with pytest.raises(ValueError, match="no finite validation errors"):
        fit_thresholds(["a"], np.array([[np.nan], [np.inf]]), ThresholdConfig())


def test_thresholds_json_round_trip():
    thresholds = fit_thresholds(["a", "b"], ERRORS, quantile_settings(quantile=0.75, smoothing=3))
    restored = Thresholds.from_dict(json.loads(json.dumps(thresholds.to_dict())))
    assert restored == thresholds
    assert restored.config == quantile_settings(quantile=0.75, smoothing=3)


# smooth_scores


def test_smooth_scores_skips_nan():
    np.testing.assert_allclose(smooth_scores(np.array([1.0, 2.0, np.nan, 4.0]), 2), [1.0, 1.5, np.nan, 4.0])


def test_smooth_scores_trailing_window():
    # Index 4 averages 3 and 5 (its NaN neighbour is skipped); NaN stays NaN.
    smoothed = smooth_scores(np.array([1.0, 2.0, 3.0, np.nan, 5.0]), 3)
    np.testing.assert_allclose(smoothed, [1.0, 1.5, 2.0, np.nan, 4.0])


def test_smooth_scores_is_causal():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    changed = scores.copy()
    changed[4] = 500.0
    # Changing the last score changes no earlier smoothed value.
    np.testing.assert_array_equal(smooth_scores(scores, 3)[:4], smooth_scores(changed, 3)[:4])


def test_smooth_scores_length_one_copies():
    scores = np.array([1.0, np.nan, 3.0])
    smoothed = smooth_scores(scores, 1)
    np.testing.assert_array_equal(smoothed, scores)
    assert smoothed is not scores
