"""Per-feature standardisation, stored as JSON next to the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scaler:
    """Standardise each feature with the mean and standard deviation of training data.

    A feature with zero standard deviation (constant, or all zero) is scaled
    with a standard deviation of 1, so it maps to exactly 0 instead of NaN.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, features: list[str] | tuple[str, ...], values: np.ndarray) -> "Scaler":
        """Fit on ``(rows, features)`` values; NaN rows are ignored per feature."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(features):
            raise ValueError(
                f"values must have shape (rows, {len(features)}). Received shape {values.shape}."
            )
        if values.shape[0] == 0 or np.isnan(values).all(axis=0).any():
            empty = [f for f, col in zip(features, values.T) if np.isnan(col).all()]
            raise ValueError(f"Cannot fit the scaler: no values for feature(s) {empty or list(features)}.")
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(features), tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - np.array(self.mean)) / np.array(self.std)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * np.array(self.std) + np.array(self.mean)

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "Scaler":
        return cls(tuple(data["features"]), tuple(data["mean"]), tuple(data["std"]))
