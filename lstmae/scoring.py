"""Scoring: reconstruction errors, anomaly scores and window verdicts of one series.

Each grid point ``t`` is scored with the window of ``timesteps`` rows that ends
at ``t``; its per-feature error is the absolute difference, in original units,
between the value at ``t`` and the window's reconstruction of it. A point
therefore depends only on itself and earlier rows, which makes scoring a day
alone give the same numbers as scoring it inside a longer range.

The prototype's window verdicts are kept as well: the grid is cut into
non-overlapping blocks of ``timesteps`` points anchored at the Unix epoch, and
each complete block is judged on its own reconstruction (every timestep of
every feature) in the run whose interval contains the block's last point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from lstmae import schema
from lstmae.frames import missing_reasons
from lstmae.scaler import Scaler
from lstmae.slo import window_violations
from lstmae.thresholds import Thresholds, feature_ratios, prediction_scores, raw_scores, smooth_scores
from lstmae.windows import cut_windows, trailing_window_ends

log = logging.getLogger(__name__)


@dataclass
class SeriesErrors:
    """Errors of every scorable point of one series.

    Attributes:
        index: grid timestamps of the series, ``(rows,)``.
        scorable: ``(rows,)`` True where the window ending at the row is complete.
        values: ``(rows, features)`` actual values (NaN where missing).
        reconstruction: ``(rows, features)`` reconstruction of the last step of
            the window ending at each scorable row (NaN elsewhere).
        errors: ``(rows, features)`` absolute errors in original units.
        prediction_errors: ``(rows, features)`` absolute error, in original
            units, of the predictor variant's one-step-ahead forecast of each
            row, made from the window that ends one row earlier. NaN where
            there is no such window, and everywhere for the plain autoencoder.
    """

    index: pd.DatetimeIndex
    scorable: np.ndarray
    values: np.ndarray
    reconstruction: np.ndarray
    errors: np.ndarray
    prediction_errors: np.ndarray


def reconstruct(model, windows: np.ndarray, batch_size: int = 1024):
    """Return ``(reconstruction, prediction or None)`` for scaled windows."""
    from lstmae.model import predict

    output = predict(model, windows, batch_size=batch_size)
    if isinstance(output, dict):
        return output["reconstruction"], output["prediction"]
    return output, None


def series_errors(model, scaler: Scaler, frame: pd.DataFrame, timesteps: int, batch_size: int = 1024) -> SeriesErrors:
    """Reconstruct every complete trailing window of ``frame`` and return the errors."""
    return batch_series_errors(model, scaler, [frame], timesteps, batch_size)[0]


def batch_series_errors(model, scaler: Scaler, frames: list[pd.DataFrame], timesteps: int,
                        batch_size: int = 1024) -> list[SeriesErrors]:
    """Return :func:`series_errors` of each of ``frames``, with one ``predict`` call for all of them.

    The windows of every frame are concatenated, so a model call costs its
    fixed overhead once per ``batch_size`` windows instead of once per series.
    Memory grows with the total number of windows: about ``windows *
    timesteps * features * 8`` bytes for the windows and the reconstruction.
    """
    prepared, windows = [], []
    for frame in frames:
        values = frame.to_numpy(dtype=np.float64)
        valid = ~np.isnan(values).any(axis=1)
        scorable = trailing_window_ends(valid, timesteps)
        ends = np.flatnonzero(scorable)
        if len(ends):
            scaled = scaler.transform(np.where(np.isnan(values), 0.0, values))
            windows.append(cut_windows(scaled, ends - timesteps + 1, timesteps))
        prepared.append((values, scorable, ends))
    restored_all = prediction_all = None
    if windows:
        restored_all, prediction_all = reconstruct(model, np.concatenate(windows) if len(windows) > 1 else windows[0],
                                                   batch_size)
        restored_all = np.asarray(restored_all)[:, -1, :]
        if prediction_all is not None:
            prediction_all = np.asarray(prediction_all)[:, 0, :]
    results, offset = [], 0
    for frame, (values, scorable, ends) in zip(frames, prepared):
        rows, features = values.shape
        reconstruction = np.full((rows, features), np.nan)
        prediction_errors = np.full((rows, features), np.nan)
        if len(ends):
            reconstruction[ends] = scaler.inverse_transform(restored_all[offset : offset + len(ends)])
            if prediction_all is not None:
                # The window ending at row e forecasts row e + 1; keep forecasts of rows that exist.
                forecast = scaler.inverse_transform(prediction_all[offset : offset + len(ends)])
                targets = ends + 1
                inside = targets < rows
                prediction_errors[targets[inside]] = np.abs(values[targets[inside]] - forecast[inside])
            offset += len(ends)
        errors = np.abs(values - reconstruction)
        results.append(SeriesErrors(frame.index, scorable, values, reconstruction, errors, prediction_errors))
    return results


def block_verdicts(
    model, scaler: Scaler, thresholds: Thresholds, frame: pd.DataFrame, timesteps: int,
    point_anomaly: np.ndarray, ratios: np.ndarray, start: pd.Timestamp, end: pd.Timestamp,
    slo_limits: dict[str, float] | None = None,
) -> list[dict]:
    """Judge every complete epoch-anchored block of ``timesteps`` points ending in ``[start, end)``.

    With the ``reference`` method a block is anomalous when any timestep of
    any feature of its own reconstruction exceeds the feature's threshold (the
    prototype's rule); with the other methods when any of its points is an
    anomaly. Every verdict also lists the features with a value above their
    SLO limit (``slo_features``).
    """
    index = frame.index
    if len(index) < 2:
        return []
    step = index[1] - index[0]
    positions = ((index - pd.Timestamp(0, tz="UTC")) // step).to_numpy()
    values = frame.to_numpy(dtype=np.float64)
    valid = ~np.isnan(values).any(axis=1)
    is_block_end = (positions % timesteps) == timesteps - 1
    in_range = (index >= start) & (index < end)
    ends = [i for i in np.flatnonzero(is_block_end & in_range) if i >= timesteps - 1 and valid[i - timesteps + 1 : i + 1].all()]
    if not ends:
        return []
    features = list(frame.columns)
    limits = slo_limits or {}
    verdicts = []
    if thresholds.method == "reference":
        scaled = scaler.transform(values[: max(ends) + 1])
        windows = cut_windows(np.nan_to_num(scaled), np.array(ends) - timesteps + 1, timesteps)
        restored, _ = reconstruct(model, windows)
        for window, end_index in zip(np.asarray(restored), ends):
            start_index = end_index - timesteps + 1
            actual = values[start_index : end_index + 1]
            errors = np.abs(actual - scaler.inverse_transform(window))
            block_ratios = feature_ratios(errors, thresholds.feature_thresholds)
            over = block_ratios > 1.0
            anomalous = bool(over.any())
            first = index[start_index + int(np.flatnonzero(over.any(axis=1))[0])] if anomalous else None
            ranked = np.argsort(-np.where(over, block_ratios, 0).sum(axis=0))
            verdicts.append(_verdict(index, start_index, end_index, anomalous, float(block_ratios.max()), first,
                                     [features[i] for i in ranked if over[:, i].any()],
                                     window_violations(actual, features, limits)))
        return verdicts
    for end_index in ends:
        start_index = end_index - timesteps + 1
        labels = point_anomaly[start_index : end_index + 1]
        block = ratios[start_index : end_index + 1]
        anomalous = bool(np.nan_to_num(labels.astype(float)).any())
        first = index[start_index + int(np.flatnonzero(labels)[0])] if anomalous else None
        contribution = np.nansum(np.where(labels[:, None], block, 0.0), axis=0)
        ranked = [features[i] for i in np.argsort(-contribution) if anomalous and np.nanmax(block[labels][:, i]) > 1.0]
        verdicts.append(_verdict(index, start_index, end_index, anomalous, float(np.nanmax(block)), first, ranked,
                                 window_violations(values[start_index : end_index + 1], features, limits)))
    return verdicts


def _verdict(index, start_index, end_index, anomalous, score, first, features, slo_features) -> dict:
    return {
        "window_start": index[start_index],
        "window_end": index[end_index],
        "is_anomaly": anomalous,
        "max_ratio": score,
        "first_offending_timestamp": first,
        "features_over_threshold": features,
        "slo_features": slo_features,
    }


def point_scores(result: SeriesErrors, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(ratios, anomaly_score, early_warning_score)`` of every row of ``result``.

    ``ratios`` is ``(rows, features)``; the two scores are ``(rows,)`` and NaN
    where a row cannot be scored. The early-warning score is NaN unless the
    model is the predictor variant and its thresholds hold prediction
    thresholds.
    """
    settings = thresholds.config
    ratios = feature_ratios(result.errors, thresholds.feature_thresholds)
    scores = smooth_scores(raw_scores(result.errors, thresholds.feature_thresholds, settings, thresholds.score_include),
                           settings.smoothing)
    scores[~result.scorable] = np.nan
    early_warning = np.full(len(scores), np.nan)
    if thresholds.prediction_thresholds:
        early_warning = smooth_scores(
            prediction_scores(result.prediction_errors, thresholds.prediction_thresholds), settings.smoothing
        )
    return ratios, scores, early_warning


def score_frame(model, scaler: Scaler, thresholds: Thresholds, frame: pd.DataFrame, timesteps: int,
                start: pd.Timestamp, end: pd.Timestamp,
                slo_limits: dict[str, float] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Score the points of ``frame`` in ``[start, end)``; earlier rows serve as context.

    Args:
        slo_limits: ``{feature: limit}`` of this series, for the SLO check of
            the window verdicts; None or empty skips it.

    Returns:
        ``(points, blocks)``: one row per grid point of the interval with
        ``status`` ``"scored"`` or ``"unscorable"`` and a reason, and the block
        verdicts of blocks ending in the interval. ``points`` has the columns
        of :func:`score_series`; its ``feature_errors`` hold one dict per feature.
    """
    points, blocks = score_series(model, scaler, thresholds, frame, timesteps, start, end, slo_limits)
    return points.to_pandas(), blocks


POINT_COLUMNS = ("timestamp", "status", "reason", "anomaly_score", "score_threshold", "is_anomaly", "early_warning_score",
                 "feature_errors")


def score_series(model, scaler: Scaler, thresholds: Thresholds, frame: pd.DataFrame, timesteps: int,
                 start: pd.Timestamp, end: pd.Timestamp, slo_limits: dict[str, float] | None = None,
                 result: SeriesErrors | None = None) -> tuple[pa.Table, list[dict]]:
    """Score the points of ``frame`` in ``[start, end)`` as an Arrow table; earlier rows serve as context.

    Args:
        slo_limits: as in :func:`score_frame`.
        result: the frame's :func:`series_errors`, when already computed (for
            example by :func:`batch_series_errors`); default computed here.

    Returns:
        ``(points, blocks)``: ``points`` has the columns ``POINT_COLUMNS``
        with the types of :data:`lstmae.schema.SCORES`, one row per grid
        point of the interval; ``blocks`` as in :func:`score_frame`.
    """
    result = series_errors(model, scaler, frame, timesteps) if result is None else result
    ratios, scores, early_warning = point_scores(result, thresholds)
    point_anomaly = np.where(result.scorable, scores > thresholds.score_threshold, False)
    in_range = (frame.index >= start) & (frame.index < end)
    positions = np.flatnonzero(in_range)
    scored = result.scorable[positions]
    count, features = len(positions), list(frame.columns)

    reasons = missing_reasons(frame).to_numpy(dtype=object)[positions]
    history = f"insufficient history: fewer than {timesteps} complete rows before this point"
    reasons = np.where(scored, None, np.where(pd.isna(reasons), history, reasons))

    # feature_errors: a list of one struct per feature on scored rows, null elsewhere.
    rows = positions[scored]
    width = len(features)
    thresholds_per_feature = np.asarray(thresholds.feature_thresholds, dtype=np.float64)
    children = [
        pa.array(features, type=pa.string()).take(pa.array(np.tile(np.arange(width), len(rows)))),
        *(pa.array(np.ascontiguousarray(array[rows]).reshape(-1), type=pa.float64(), from_pandas=True)
          for array in (result.values, result.reconstruction, result.errors)),
        pa.array(np.tile(thresholds_per_feature, len(rows)), type=pa.float64(), from_pandas=True),
        pa.array(np.ascontiguousarray(ratios[rows]).reshape(-1), type=pa.float64(), from_pandas=True),
    ]
    structs = pa.StructArray.from_arrays(children, fields=list(schema.FEATURE_ERROR))
    offsets = np.zeros(count + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.where(scored, width, 0))
    feature_errors = pa.ListArray.from_arrays(pa.array(offsets), structs, type=schema.SCORES.field("feature_errors").type,
                                              mask=pa.array(~scored))

    stamps = pd.DatetimeIndex(frame.index[positions]).as_unit("ms")
    points = pa.table(
        {
            "timestamp": pa.array(stamps, type=schema.TIMESTAMP),
            "status": pa.array(np.where(scored, "scored", "unscorable"), type=pa.string()),
            "reason": pa.array(reasons, type=pa.string()),
            "anomaly_score": pa.array(scores[positions], type=pa.float64(), from_pandas=True),
            "score_threshold": pa.array(np.full(count, thresholds.score_threshold, dtype=np.float64), type=pa.float64()),
            "is_anomaly": pa.array(point_anomaly[positions].astype(bool), type=pa.bool_(), mask=~scored),
            "early_warning_score": pa.array(early_warning[positions], type=pa.float64(), from_pandas=True),
            "feature_errors": feature_errors,
        }
    )
    blocks = block_verdicts(model, scaler, thresholds, frame, timesteps, point_anomaly, ratios, start, end, slo_limits)
    return points, blocks
