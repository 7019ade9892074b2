"""PNG plots of incidents: actual against reconstructed values, with thresholds.

Written to ``plots/date=D/<incident_id>.png`` (D is the day of the incident's
last point), next to the ``incidents/`` partition of the same day. Rendering
uses matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd

from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)

PLOTS = "plots"


def plot_key(day: pd.Timestamp, incident_id: str) -> str:
    return f"{PLOTS}/date={pd.Timestamp(day).strftime('%Y-%m-%d')}/{escape_segment(incident_id)}.png"


def feature_series(points: pd.DataFrame, features: list[str]) -> dict[str, pd.DataFrame]:
    """Unpack ``feature_errors`` of scores rows into one frame per feature.

    Returns:
        ``{feature: DataFrame(index=timestamp, columns=[value, reconstruction,
        threshold])}``; rows without feature errors (unscorable) are NaN.
    """
    wanted = set(features)
    records: dict[str, list[dict]] = {feature: [] for feature in features}
    for row in points.itertuples():
        errors = row.feature_errors if row.feature_errors is not None else []
        found = {item["feature"]: item for item in errors if item["feature"] in wanted}
        for feature in features:
            item = found.get(feature)
            records[feature].append({
                "timestamp": row.timestamp,
                "value": item["value"] if item else np.nan,
                "reconstruction": item["reconstruction"] if item else np.nan,
                "threshold": item["threshold"] if item else np.nan,
            })
    return {feature: pd.DataFrame(rows).set_index("timestamp") for feature, rows in records.items()}


def render_incident(incident: dict, points: pd.DataFrame, max_features: int = 4) -> bytes:
    """Render one incident as PNG bytes.

    One panel per top feature (at most ``max_features``): the actual value,
    the reconstruction, and the band ``reconstruction ± threshold`` outside
    which the feature's error is over its threshold. A last panel shows the
    anomaly score against the score threshold. The incident is shaded.

    Args:
        incident: an ``incidents`` row (``incident_id, entity, group, start,
            end, top_features``).
        points: scores rows of the incident's entity and group around it
            (``timestamp, anomaly_score, score_threshold, feature_errors``),
            sorted by time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Lists read back from Parquet are numpy arrays, whose truth value is ambiguous: test for None instead.
    top_features = incident.get("top_features")
    features = list(top_features if top_features is not None else [])[:max_features]
    if not features and len(points):
        first = next((e for e in points["feature_errors"] if e is not None), None)
        features = [item["feature"] for item in (first if first is not None else [])][:max_features]
    series = feature_series(points, features)
    panels = len(features) + 1
    figure, axes = plt.subplots(panels, 1, figsize=(9, 1.9 * panels + 0.6), dpi=100, sharex=True, squeeze=False)
    axes = axes[:, 0]
    for axis, feature in zip(axes, features):
        frame = series[feature]
        axis.plot(frame.index, frame["value"], color="black", linewidth=1, label="actual")
        axis.plot(frame.index, frame["reconstruction"], color="tab:blue", linewidth=1, label="reconstructed")
        axis.fill_between(frame.index, frame["reconstruction"] - frame["threshold"],
                          frame["reconstruction"] + frame["threshold"], color="tab:blue", alpha=0.15,
                          label="reconstructed ± threshold")
        axis.set_ylabel(feature, fontsize=8)
    score_axis = axes[-1]
    score_axis.plot(points["timestamp"], points["anomaly_score"], color="tab:red", linewidth=1, label="anomaly score")
    score_axis.plot(points["timestamp"], points["score_threshold"], color="tab:red", linestyle="--", linewidth=1,
                    label="score threshold")
    score_axis.set_ylabel("anomaly score", fontsize=8)
    for axis in axes:
        axis.axvspan(incident["start"], incident["end"], color="orange", alpha=0.2)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="upper left")
    score_axis.legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{incident['entity']} / {incident['group']}: incident {incident['incident_id']}", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def plot_incidents(storage: Storage, incidents: pd.DataFrame, scores: pd.DataFrame, step: pd.Timedelta,
                   margin_steps: int = 60) -> list[str]:
    """Write one PNG per incident; return the keys written.

    Args:
        incidents: ``incidents`` rows.
        scores: scores rows covering the incidents and ``margin_steps`` grid
            points on each side where available.
        step: grid step.
        margin_steps: context shown before the start and after the end.
    """
    keys = []
    if incidents.empty or scores.empty:
        return keys
    margin = margin_steps * step
    for incident in incidents.to_dict("records"):
        mask = (
            (scores["entity"] == incident["entity"]) & (scores["group"] == incident["group"])
            & (scores["timestamp"] >= incident["start"] - margin) & (scores["timestamp"] <= incident["end"] + margin)
        )
        points = scores[mask].sort_values("timestamp")
        if points.empty:
            continue
        key = plot_key(incident["end"], incident["incident_id"])
        storage.write_bytes(key, render_incident(incident, points))
        keys.append(key)
    log.info("Wrote %d incident plot(s)", len(keys))
    return keys
