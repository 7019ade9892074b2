"""The default quantile settings: separate score quantile, top features, constant features left out."""

from __future__ import annotations

import numpy as np
import pytest

from lstmae.config import ConfigError, ThresholdConfig, config_from_dict
from lstmae.thresholds import Thresholds, fit_thresholds, raw_scores, score_mask

# Validation errors of three features; c never changed in training.
ERRORS = np.array([[1.0, 2.0, 0.0], [2.0, 2.0, 0.0], [3.0, 2.0, 0.0], [4.0, 10.0, 0.0]])


def settings(**changes) -> ThresholdConfig:
    return ThresholdConfig(**{"quantile": 0.75, "score_quantile": 0.5, "smoothing": 1, "top_features": 0, **changes})


def test_defaults_are_the_measured_ones():
    default = ThresholdConfig()
    assert (default.method, default.quantile, default.score_quantile) == ("quantile", 0.999, 0.995)
    assert (default.smoothing, default.top_features, default.factor) == (6, 3, 1.0)
    assert default.exclude_constant is True
    assert config_from_dict({}).incident_merge_steps == 30
    assert config_from_dict({}).min_incident_points == 6


def test_constant_feature_left_out_of_score():
    thresholds = fit_thresholds(["a", "b", "c"], ERRORS, settings(), constant_features=["c"])
    # Feature thresholds at 0.75: a 3.25, b 4, c 0 -> the floor 1e-6.
    assert thresholds.feature_thresholds == pytest.approx((3.25, 4.0, 1e-6))
    assert thresholds.constant_features == ("c",)
    assert thresholds.score_include.tolist() == [True, True, False]
    # A test point where c moved by 0.001 would have ratio 1000; it does not count.
    test = np.array([[3.25, 4.0, 0.001]])
    assert raw_scores(test, thresholds.feature_thresholds, thresholds.config, thresholds.score_include) == pytest.approx([1.0])
    assert raw_scores(test, thresholds.feature_thresholds, thresholds.config) == pytest.approx([(1 + 1 + 1000) / 3])


def test_score_quantile_separate_from_feature_quantile():
    thresholds = fit_thresholds(["a", "b", "c"], ERRORS, settings(), constant_features=["c"])
    # Scores (mean of a/3.25 and b/4): 21/52, 29/52, 37/52, 97/52; median 33/52.
    assert thresholds.score_threshold == pytest.approx(33 / 52)


def test_constant_feature_counted_when_disabled():
    mask = score_mask(["a", "c"], ["c"], settings(exclude_constant=False))
    assert mask.tolist() == [True, True]


def test_all_constant_features_keep_every_feature():
    errors = np.array([[0.5, 1.0], [1.5, 3.0]])
    # With every feature excluded, the mask is ignored rather than leaving nothing to average.
    scores = raw_scores(errors, [1.0, 1.0], settings(), include=np.array([False, False]))
    np.testing.assert_allclose(scores, [0.75, 2.25])


def test_top_features_mean_of_largest():
    scores = raw_scores(np.array([[1.0, 5.0, 3.0, 0.0]]), [1.0, 1.0, 1.0, 1.0], settings(top_features=2))
    assert scores == pytest.approx([4.0])


def test_round_trip_keeps_constant_features():
    thresholds = fit_thresholds(["a", "b", "c"], ERRORS, settings(), constant_features=["c"])
    restored = Thresholds.from_dict(thresholds.to_dict())
    assert restored.constant_features == ("c",)
    assert restored.config == thresholds.config


def test_old_metadata_without_new_fields_loads():
    data = fit_thresholds(["a", "b", "c"], ERRORS, settings()).to_dict()
    for key in ("constant_features", "prediction_thresholds", "early_warning_threshold"):
        data.pop(key)
    for key in ("score_quantile", "exclude_constant"):
        data["settings"].pop(key)
    restored = Thresholds.from_dict(data)
    assert restored.constant_features == ()
    assert restored.config.exclude_constant is True


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ({"score_quantile": 0.2}, r"threshold\.score_quantile: expected a number between 0\.5 and 1\.0"),
        ({"exclude_constant": "yes"}, r"threshold\.exclude_constant: expected true or false\. Received: 'yes'"),
    ],
)
def test_threshold_setting_errors(threshold, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"groups": [{"name": "a", "threshold": threshold}]})
