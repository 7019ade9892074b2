"""Thresholds on reconstruction errors, and the anomaly score built from them.

Two methods, chosen per group by ``threshold.method``:

``reference``
    The prototype's rule. For each feature, fit a Gaussian to the absolute
    validation errors (in original units, over all timesteps) and set
    ``high = mean + sigma * std``; ``low = mean - sigma * std`` is stored but
    unused. A point's anomaly score is ``max_f(error_f / high_f)`` and it is
    anomalous when the score exceeds 1.

``quantile`` (default)
    Divide each feature's error by that feature's validation ``quantile``, so
    that features of different scale and noise weigh the same. Average the
    ``top_features`` largest of these ratios, leaving out features that were
    constant in training (``exclude_constant``). Take a trailing mean over
    ``smoothing`` points, and flag points whose score exceeds ``factor``
    times the validation ``score_quantile`` of the same score.

All functions are pure numpy so they can be tested with hand-computed arrays.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lstmae.config import ThresholdConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    """Fitted thresholds of one group.

    Attributes:
        method: ``"reference"`` or ``"quantile"``.
        features: feature names, in model order.
        feature_thresholds: per-feature error threshold in original units
            (``high`` for reference, the validation quantile for quantile).
        score_threshold: threshold on the anomaly score (1.0 for reference).
        mean, std, low: per-feature Gaussian fit of validation errors.
        settings: the :class:`ThresholdConfig` used, as a dict.
        prediction_thresholds: per-feature threshold on the one-step forecast
            error of the predictor variant (its validation quantile, original
            units); empty for the plain autoencoder.
        constant_features: features that were constant in the training data,
            left out of the anomaly score when ``exclude_constant`` is set.
        early_warning_threshold: threshold on the early-warning score
            (``factor`` times its validation quantile); None without
            prediction thresholds.
    """

    method: str
    features: tuple[str, ...]
    feature_thresholds: tuple[float, ...]
    score_threshold: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...]
    settings: dict
    prediction_thresholds: tuple[float, ...] = ()
    early_warning_threshold: float | None = None
    constant_features: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "features": list(self.features),
            "feature_thresholds": list(self.feature_thresholds),
            "score_threshold": self.score_threshold,
            "mean": list(self.mean),
            "std": list(self.std),
            "low": list(self.low),
            "settings": dict(self.settings),
            "prediction_thresholds": list(self.prediction_thresholds),
            "early_warning_threshold": self.early_warning_threshold,
            "constant_features": list(self.constant_features),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        return cls(
            method=data["method"],
            features=tuple(data["features"]),
            feature_thresholds=tuple(float(x) for x in data["feature_thresholds"]),
            score_threshold=float(data["score_threshold"]),
            mean=tuple(float(x) for x in data["mean"]),
            std=tuple(float(x) for x in data["std"]),
            low=tuple(float(x) for x in data["low"]),
            settings=dict(data["settings"]),
            prediction_thresholds=tuple(float(x) for x in data.get("prediction_thresholds") or ()),
            early_warning_threshold=data.get("early_warning_threshold"),
            constant_features=tuple(data.get("constant_features") or ()),
        )

    @property
    def config(self) -> ThresholdConfig:
        return ThresholdConfig(**self.settings)

    @property
    def score_include(self) -> np.ndarray:
        """``(features,)`` booleans: the features that enter the anomaly score."""
        return score_mask(self.features, self.constant_features, self.config)

    def with_prediction(self, prediction_errors: np.ndarray) -> "Thresholds":
        """Return a copy with early-warning thresholds fitted on validation forecast errors.

        Args:
            prediction_errors: ``(points, features)`` one-step forecast errors of
                the validation period in time order (NaN rows are skipped).
        """
        settings = self.config
        errors = _finite_rows(prediction_errors)
        feature_thresholds = np.maximum(np.quantile(errors, settings.quantile, axis=0), settings.min_threshold)
        scores = smooth_scores(prediction_scores(np.asarray(prediction_errors, dtype=np.float64), feature_thresholds),
                               settings.smoothing)
        scores = scores[np.isfinite(scores)]
        return dataclasses.replace(
            self,
            prediction_thresholds=tuple(float(x) for x in feature_thresholds),
            early_warning_threshold=float(settings.factor * np.quantile(scores, _score_quantile(settings))),
        )


def score_mask(features, constant_features, settings: ThresholdConfig) -> np.ndarray:
    """Return ``(features,)`` booleans: False for constant features when ``exclude_constant`` is set.

    >>> score_mask(["cpu", "flag"], ["flag"], ThresholdConfig()).tolist()
    [True, False]
    """
    constant = set(constant_features) if settings.exclude_constant else set()
    return np.array([feature not in constant for feature in features], dtype=bool)


def _score_quantile(settings: ThresholdConfig) -> float:
    return settings.quantile if settings.score_quantile is None else settings.score_quantile


def _finite_rows(errors: np.ndarray) -> np.ndarray:
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors must be (points, features). Received shape {errors.shape}.")
    errors = errors[np.isfinite(errors).all(axis=1)]
    if len(errors) == 0:
        raise ValueError("Cannot fit thresholds: no finite validation errors.")
    return errors


def fit_thresholds(
    features: list[str] | tuple[str, ...],
    errors: np.ndarray,
    settings: ThresholdConfig,
    score_errors: np.ndarray | None = None,
    constant_features: list[str] | tuple[str, ...] = (),
) -> Thresholds:
    """Fit thresholds on validation errors.

    Args:
        features: feature names.
        errors: ``(points, features)`` absolute validation errors in original
            units, over all timesteps of all validation windows. Used for the
            per-feature Gaussian and quantiles.
        settings: threshold settings of the group.
        score_errors: ``(points, features)`` errors in time order, one row per
            scored point, used to calibrate the score threshold of the
            quantile method. Defaults to ``errors``.
        constant_features: features whose training values were constant;
            with ``settings.exclude_constant`` they are left out of the
            anomaly score (their errors and ratios are still reported).

    Returns:
        The fitted :class:`Thresholds`.

    Raises:
        ValueError: on an unknown method or when there is no finite error.
    """
    errors = _finite_rows(errors)
    mean = errors.mean(axis=0)
    std = errors.std(axis=0)
    high = mean + settings.sigma * std
    low = mean - settings.sigma * std
    floor = settings.min_threshold
    if settings.method == "reference":
        feature_thresholds = np.maximum(high, floor)
        score_threshold = 1.0
    elif settings.method == "quantile":
        feature_thresholds = np.maximum(np.quantile(errors, settings.quantile, axis=0), floor)
        calibration = errors if score_errors is None else np.asarray(score_errors, dtype=np.float64)
        include = score_mask(features, constant_features, settings)
        scores = smooth_scores(raw_scores(calibration, feature_thresholds, settings, include), settings.smoothing)
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            raise ValueError("Cannot fit the score threshold: no scorable validation point.")
        score_threshold = float(settings.factor * np.quantile(scores, _score_quantile(settings)))
    else:
        raise ValueError(f"Unknown threshold method {settings.method!r}. Expected 'reference' or 'quantile'.")
    log.info(
        "Fitted %s thresholds on %d validation points: score threshold %.6g", settings.method, len(errors), score_threshold
    )
    return Thresholds(
        method=settings.method,
        features=tuple(features),
        feature_thresholds=tuple(float(x) for x in feature_thresholds),
        score_threshold=float(score_threshold),
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
        low=tuple(float(x) for x in low),
        settings={
            "method": settings.method,
            "sigma": settings.sigma,
            "quantile": settings.quantile,
            "score_quantile": settings.score_quantile,
            "factor": settings.factor,
            "smoothing": settings.smoothing,
            "top_features": settings.top_features,
            "min_threshold": settings.min_threshold,
            "exclude_constant": settings.exclude_constant,
        },
        constant_features=tuple(constant_features),
    )


def feature_ratios(errors: np.ndarray, feature_thresholds) -> np.ndarray:
    """Return ``errors / feature_thresholds``: 1.0 means exactly at the threshold."""
    return np.asarray(errors, dtype=np.float64) / np.asarray(feature_thresholds, dtype=np.float64)


def raw_scores(errors: np.ndarray, feature_thresholds, settings: ThresholdConfig, include=None) -> np.ndarray:
    """Return the unsmoothed anomaly score of each row of ``(points, features)`` errors.

    Rows with a NaN error get a NaN score.

    Args:
        include: ``(features,)`` booleans, the features that enter the score of
            the ``quantile`` method; None (default) or all False means all.
    """
    ratios = feature_ratios(errors, feature_thresholds)
    if settings.method == "reference":
        return ratios.max(axis=1)
    if settings.method != "quantile":
        raise ValueError(f"Unknown threshold method {settings.method!r}. Expected 'reference' or 'quantile'.")
    if include is not None and np.any(include):
        ratios = ratios[:, np.asarray(include, dtype=bool)]
    if 0 < settings.top_features < ratios.shape[1]:
        ratios = -np.sort(-ratios, axis=1)[:, : settings.top_features]
    return ratios.mean(axis=1)


def smooth_scores(scores: np.ndarray, length: int) -> np.ndarray:
    """Trailing mean of each score and up to ``length - 1`` scores before it.

    NaN scores (unscorable points) are skipped in the mean and stay NaN, and
    only earlier rows are used, so the result at a point never depends on later
    data.

    >>> smooth_scores(np.array([1.0, 2.0, np.nan, 4.0]), 2)
    array([1. , 1.5, nan, 4. ])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if length <= 1:
        return scores.copy()
    smoothed = pd.Series(scores).rolling(length, min_periods=1).mean().to_numpy(copy=True)
    smoothed[np.isnan(scores)] = np.nan
    return smoothed


def prediction_scores(prediction_errors: np.ndarray, prediction_thresholds) -> np.ndarray:
    """Return the unsmoothed early-warning score: mean over features of forecast error / threshold.

    A value of 1 means the one-step forecast misses by as much as its usual
    (validation quantile) error on every feature; rows without a forecast are NaN.

    >>> prediction_scores(np.array([[1.0, 4.0], [np.nan, np.nan]]), [1.0, 2.0])
    array([1.5, nan])
    """
    return feature_ratios(prediction_errors, prediction_thresholds).mean(axis=1)
