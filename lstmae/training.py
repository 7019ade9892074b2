"""Training: curated metrics of a time range → a registered (and maybe promoted) model version."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from lstmae import registry
from lstmae.config import Config, GroupConfig, ThresholdConfig
from lstmae.frames import group_frames, resolve_features
from lstmae.ingest import read_curated
from lstmae.lake import utc
from lstmae.scaler import Scaler
from lstmae.scoring import reconstruct, series_errors
from lstmae.slo import feature_metrics, fit_limits
from lstmae.storage import Storage
from lstmae.thresholds import fit_thresholds
from lstmae.windows import cut_windows, window_starts

log = logging.getLogger(__name__)


class TrainingError(ValueError):
    """Raised when the data cannot produce a usable model; nothing is published."""


def split_point(config: Config, start: pd.Timestamp, end: pd.Timestamp) -> pd.Timestamp:
    """First timestamp of the validation part: the last ``validation_fraction`` of the range, on the grid."""
    return (start + (end - start) * (1 - config.validation_fraction)).floor(config.step_delta)


def _windows(frames: dict[str, pd.DataFrame], scaler: Scaler, timesteps: int, stride: int) -> np.ndarray:
    pieces = []
    for frame in frames.values():
        values = frame.to_numpy(dtype=np.float64)
        valid = ~np.isnan(values).any(axis=1)
        starts = window_starts(valid, timesteps, stride)
        pieces.append(cut_windows(scaler.transform(np.nan_to_num(values)), starts, timesteps))
    if not pieces:
        return np.zeros((0, timesteps, len(scaler.features)), dtype=np.float32)
    return np.concatenate(pieces)


def _validation_errors(model, scaler: Scaler, frames: dict[str, pd.DataFrame], group: GroupConfig):
    """Return ``(window_errors, point_errors, mean_squared_error)`` on the validation frames.

    ``window_errors`` are absolute errors in original units at every timestep of
    the validation windows (cut with the training stride), for the Gaussian of
    the reference rule; ``point_errors`` are the per-point errors that scoring
    produces (window ending at each point), in time order with NaN rows where a
    point cannot be scored; the mean squared error is in standardised units.
    """
    windows = _windows(frames, scaler, group.timesteps, group.train_stride)
    if len(windows) == 0:
        raise TrainingError(
            f"Group {group.name!r}: the validation period has no complete window of {group.timesteps} rows. "
            "Train on a longer range or lower validation_fraction."
        )
    restored, _ = reconstruct(model, windows)
    restored = np.asarray(restored)
    mse = float(np.mean((restored - windows) ** 2))
    features = windows.shape[2]
    actual = scaler.inverse_transform(windows.reshape(-1, features))
    window_errors = np.abs(actual - scaler.inverse_transform(restored.reshape(-1, features)))
    point_errors = np.concatenate(
        [series_errors(model, scaler, frame, group.timesteps).errors for frame in frames.values()]
    )
    return window_errors, point_errors, mse


def _validation_prediction_errors(model, scaler: Scaler, frames: dict[str, pd.DataFrame], group: GroupConfig) -> np.ndarray:
    """One-step forecast errors of the predictor on the validation frames, ``(points, features)`` in time order."""
    return np.concatenate(
        [series_errors(model, scaler, frame, group.timesteps).prediction_errors for frame in frames.values()]
    )


def _predictor_targets(frames, scaler: Scaler, group: GroupConfig):
    total = group.timesteps + group.look_ahead
    windows = _windows(frames, scaler, total, group.train_stride)
    return windows[:, : group.timesteps], {"reconstruction": windows[:, : group.timesteps], "prediction": windows[:, group.timesteps :]}


def train_group(storage: Storage, config: Config, group_name: str, start, end, *, promote: bool = True, plots: bool = True,
                validation_start=None) -> dict:
    """Train one group on curated metrics of ``[start, end)`` and register a version.

    The last ``validation_fraction`` of the range (by time) is held out: the
    scaler and model see only the first part; thresholds and gates use the
    held-out part. The version is promoted to current when it passes the gates
    (finite losses, enough windows, validation error no worse than the current
    model's on the same data beyond ``promotion_tolerance``) and ``promote``.

    Args:
        validation_start: first timestamp of the validation part, for callers
            that hold a separate validation period (``lstmae train TRAIN VAL``).
            Default: the last ``validation_fraction`` of the range.

    Returns:
        A small dict for XCom: group, version, status, reason, windows, losses.

    Raises:
        TrainingError: no data, too few windows, or a diverging fit; nothing is
            registered in that case.
    """
    from lstmae.model import build_autoencoder, build_predictor, configure_tensorflow, fit_model

    started = time.monotonic()
    group = config.group(group_name)
    start, end = utc(start), utc(end)
    requested = {"start": start.isoformat(), "end": end.isoformat()}
    curated = read_curated(storage, start, end)
    if curated.empty:
        raise TrainingError(
            f"No curated metrics between {start.isoformat()} and {end.isoformat()} in {storage.uri}. "
            "Ingest these days first (lstmae ingest, or the lstmae_ingest DAG)."
        )
    if validation_start is None:
        # Split the days that hold data, not the requested range: a young
        # deployment (or a drift request) may ask for more days than exist,
        # and a split inside the empty part would leave nothing to train on.
        step = config.step_delta
        start = max(start, curated["timestamp"].min().floor(step))
        end = min(end, curated["timestamp"].max().floor(step) + step)
    split = split_point(config, start, end) if validation_start is None else utc(validation_start)
    if not start < split < end:
        raise TrainingError(
            f"Validation start {split.isoformat()} is outside the training range {start.isoformat()} .. "
            f"{end.isoformat()}: give a validation start after the range's start and before its end."
        )
    features = resolve_features(group, curated)
    frames = group_frames(curated, group, features, config, start, end)
    if not frames:
        raise TrainingError(f"Group {group.name!r}: no series with the features {features[:5]} between {start} and {end}.")
    train_frames = {name: frame[frame.index < split] for name, frame in frames.items()}
    validation_frames = {name: frame[frame.index >= split] for name, frame in frames.items()}
    train_rows = np.concatenate([f.to_numpy(dtype=np.float64) for f in train_frames.values()])
    train_rows = train_rows[~np.isnan(train_rows).any(axis=1)]
    if len(train_rows) == 0:
        raise TrainingError(f"Group {group.name!r}: no complete training rows before {split.isoformat()}.")
    scaler = Scaler.fit(features, train_rows)

    configure_tensorflow(seed=config.seed)
    if group.model_type == "predictor":
        x, y = _predictor_targets(train_frames, scaler, group)
        model = build_predictor(group.timesteps, len(features), group.look_ahead, group.units, group.learning_rate)
    else:
        x = _windows(train_frames, scaler, group.timesteps, group.train_stride)
        y = x
        model = build_autoencoder(group.timesteps, len(features), group.units, group.learning_rate)
    if len(x) < config.min_training_windows:
        raise TrainingError(
            f"Group {group.name!r}: only {len(x)} training windows of {group.timesteps} rows "
            f"(at least {config.min_training_windows} needed). Train on more days, or lower "
            "timesteps, train_stride or min_training_windows."
        )
    log.info("Training group %s on %d windows of shape %s (%s..%s, validation from %s)",
             group.name, len(x), x.shape[1:], start, end, split)
    history = fit_model(model, x, y, epochs=group.epochs, batch_size=group.batch_size,
                        validation_split=group.validation_split, seed=config.seed)

    window_errors, point_errors, validation_mse = _validation_errors(model, scaler, validation_frames, group)
    constant = [feature for feature, spread in zip(features, np.std(train_rows, axis=0)) if spread == 0]
    thresholds = fit_thresholds(features, window_errors if group.threshold.method == "reference" else point_errors,
                                group.threshold, score_errors=point_errors, constant_features=constant)
    if group.model_type == "predictor":
        thresholds = thresholds.with_prediction(_validation_prediction_errors(model, scaler, validation_frames, group))
    slo_limits = fit_limits(train_frames, feature_metrics(group, features), group.slo_percentiles)

    gate_report = _gates(storage, config, group, history, len(x), validation_frames, validation_mse, features, scaler)
    gates, reason = gate_report["passed"], gate_report["reason"]
    if not gates:
        status = "rejected"
    elif promote:
        status = "promoted"
    else:
        status = "registered"
    version = registry.new_version_id()
    metadata = {
        "status": status,
        "reason": reason,
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "gates": gate_report,
        "model_type": group.model_type,
        "features": features,
        "timesteps": group.timesteps,
        "look_ahead": group.look_ahead if group.model_type == "predictor" else None,
        "scaler": scaler.to_dict(),
        "thresholds": thresholds.to_dict(),
        "slo_limits": slo_limits,
        "data_range": {"start": start.isoformat(), "end": end.isoformat(), "validation_start": split.isoformat(),
                       "requested": requested},
        "series": sorted(frames),
        "training_windows": int(len(x)),
        "history": history,
        "validation": {
            "mse": validation_mse,
            "windows": int(len(_windows(validation_frames, scaler, group.timesteps, group.train_stride))),
            **_error_statistics(point_errors),
        },
        "rows": {"train": int(len(train_rows)), "validation": int(sum(len(f) for f in validation_frames.values()))},
        "config": _config_dict(config, group),
        "library_versions": registry.library_versions(),
        "trained_seconds": round(time.monotonic() - started, 2),
    }
    entry = registry.register(storage, group.name, version, model, metadata)
    if plots:
        _plot_losses(storage, entry, history)
    if status == "promoted":
        registry.promote(storage, group.name, version, reason="passed training gates")
    log.info("Model %s/%s: %s (%s); validation MSE %.6g", group.name, version, status, reason, validation_mse)
    return {
        "group": group.name,
        "version": version,
        "status": status,
        "reason": reason,
        "training_windows": int(len(x)),
        "loss": history["loss"][-1],
        "val_loss": history.get("val_loss", [None])[-1],
        "validation_mse": validation_mse,
        "score_threshold": thresholds.score_threshold,
    }


def _group_dict(group: GroupConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(group)


def _config_dict(config: Config, group: GroupConfig) -> dict:
    """The settings that shaped this version: the group's and the deployment-wide ones (without the lake URI)."""
    settings = config.to_dict()
    settings.pop("lake", None)
    settings.pop("groups", None)
    return {"group": _group_dict(group), **settings}


def _error_statistics(point_errors: np.ndarray) -> dict:
    """Per-feature statistics of validation errors (original units), in feature order.

    ``point_errors`` has shape ``(points, features)`` with NaN rows where a
    point could not be scored; those rows are left out.
    """
    finite = point_errors[~np.isnan(point_errors).any(axis=1)] if point_errors.size else point_errors
    if len(finite) == 0:
        return {"points": 0}
    return {
        "points": int(len(finite)),
        "error_mean": [float(v) for v in finite.mean(axis=0)],
        "error_std": [float(v) for v in finite.std(axis=0)],
        "error_p50": [float(v) for v in np.quantile(finite, 0.5, axis=0)],
        "error_p99": [float(v) for v in np.quantile(finite, 0.99, axis=0)],
        "error_max": [float(v) for v in finite.max(axis=0)],
    }


def _gates(storage, config, group, history, windows, validation_frames, validation_mse, features, scaler) -> dict:
    """Check the promotion gates and return ``{"passed", "reason", "checks", ...}``.

    The comparison with the current model runs both models on the same
    validation windows and measures both errors in the new scaler's
    standardised units, so that a change of scaler cannot make a worse model
    look better.
    """
    checks = []
    losses = [v for values in history.values() for v in values]
    finite = bool(np.isfinite(losses).all())
    checks.append({"gate": "finite_losses", "passed": finite})
    if not finite:
        return {"passed": False, "reason": "non-finite loss", "checks": checks}
    enough = windows >= config.min_training_windows
    checks.append({"gate": "training_windows", "passed": enough, "value": windows, "minimum": config.min_training_windows})
    if not enough:
        return {"passed": False, "reason": f"only {windows} training windows", "checks": checks}
    current = registry.current_version(storage, group.name)
    if current is None:
        return {"passed": True, "reason": "first model of the group", "checks": checks}
    entry = registry.get_version(storage, group.name, current)
    if entry.features != features or entry.timesteps != group.timesteps:
        return {"passed": True, "reason": f"current model {current} has other features or timesteps; comparison not possible",
                "checks": checks, "compared_with": current}
    current_model = registry.load_keras_model(storage, entry)
    current_scaler = entry.scaler
    windows_current = _windows(validation_frames, current_scaler, group.timesteps, group.train_stride)
    restored, _ = reconstruct(current_model, windows_current)
    # Back to original units with the current scaler, then into the new scaler's units.
    actual = scaler.transform(current_scaler.inverse_transform(windows_current.reshape(-1, len(features))))
    rebuilt = scaler.transform(current_scaler.inverse_transform(np.asarray(restored).reshape(-1, len(features))))
    current_mse = float(np.mean((rebuilt - actual) ** 2))
    limit = current_mse * (1 + config.promotion_tolerance)
    passed = validation_mse <= limit
    checks.append({"gate": "validation_error", "passed": passed, "value": validation_mse, "limit": limit,
                   "current_mse": current_mse, "tolerance": config.promotion_tolerance})
    if passed:
        reason = f"validation MSE {validation_mse:.6g} <= {limit:.6g} (current {current} {current_mse:.6g} + tolerance)"
    else:
        reason = (f"validation MSE {validation_mse:.6g} worse than current {current} {current_mse:.6g} "
                  f"beyond tolerance {config.promotion_tolerance}")
    return {"passed": passed, "reason": reason, "checks": checks, "compared_with": current, "current_mse": current_mse}


def _plot_losses(storage: Storage, entry, history: dict) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, values in sorted(history.items()):
        if key.endswith("loss"):
            axis.plot(range(1, len(values) + 1), values, label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("mean squared error (standardised)")
    axis.set_title(f"{entry.group} {entry.version}")
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    storage.write_bytes(registry.artifact_key(entry.group, entry.version, "loss.png"), buffer.getvalue())


def rethreshold(storage: Storage, config: Config, group_name: str, version: str, threshold: ThresholdConfig,
                *, promote: bool = False) -> dict:
    """Register a copy of ``version`` whose thresholds are refitted with other settings.

    The model, scaler and SLO limits are kept. The thresholds are fitted on
    the validation part of the version's own training range, exactly as
    training would have fitted them with ``threshold``, so two threshold
    settings can be compared on one model without training twice.

    Returns:
        ``{"group", "version", "source_version", "status", "score_threshold"}``.
    """
    import dataclasses

    source = registry.get_version(storage, group_name, version)
    group = dataclasses.replace(config.group(group_name), threshold=threshold, timesteps=source.timesteps)
    data_range = source.metadata["data_range"]
    start, end = utc(data_range["start"]), utc(data_range["end"])
    split = utc(data_range["validation_start"])
    curated = read_curated(storage, split, end)
    frames = group_frames(curated, group, source.features, config, split, end)
    model = registry.load_keras_model(storage, source)
    window_errors, point_errors, _ = _validation_errors(model, source.scaler, frames, group)
    thresholds = fit_thresholds(source.features, window_errors if threshold.method == "reference" else point_errors,
                                threshold, score_errors=point_errors,
                                constant_features=source.thresholds.constant_features)
    if source.metadata.get("model_type") == "predictor":
        thresholds = thresholds.with_prediction(_validation_prediction_errors(model, source.scaler, frames, group))
    new_version = registry.new_version_id()
    metadata = {key: value for key, value in source.metadata.items() if key not in ("group", "version")}
    metadata.update(
        thresholds=thresholds.to_dict(),
        status="promoted" if promote else "registered",
        reason=f"thresholds refitted from {version} with method {threshold.method}",
        source_version=version,
    )
    metadata.setdefault("config", {}).setdefault("group", {})["threshold"] = dataclasses.asdict(threshold)
    registry.register(storage, group_name, new_version, model, metadata)
    if promote:
        registry.promote(storage, group_name, new_version, reason=metadata["reason"])
    log.info("Refitted thresholds of %s/%s as %s (%s): score threshold %.6g",
             group_name, version, new_version, threshold.method, thresholds.score_threshold)
    return {"group": group_name, "version": new_version, "source_version": version,
            "status": metadata["status"], "score_threshold": thresholds.score_threshold}
