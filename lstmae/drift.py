"""Context drift: a long run of anomalous windows means normal behaviour has changed.

When ``drift_windows`` (default 40) consecutive epoch-anchored windows of one
entity and group are anomalous, ``combine`` records a drift event in
``drift_events/`` and writes a retraining request to
``requests/retrain/<group>.json``. The training pipeline reads the request
and trains on the most recent data. The new model is promoted only if it
passes the same gates as any nightly model, so a drift never installs an
unchecked model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone

import pandas as pd

from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)

REQUESTS = "requests/retrain"
EVENT_COLUMNS = ["event_id", "entity", "group", "model_version", "run_start", "detected_at", "windows"]


def event_id(group: str, entity: str, run_start: pd.Timestamp) -> str:
    """Stable id of a drift event: one per run of anomalous windows."""
    text = f"drift\x1f{group}\x1f{entity}\x1f{pd.Timestamp(run_start).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def drift_events(windows: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta, drift_windows: int) -> pd.DataFrame:
    """Find the windows at which a run of anomalous windows reaches ``drift_windows``.

    Args:
        windows: window verdicts (``window_start, window_end, entity, group,
            model_version, is_anomaly``) over ``[start, end)`` and at least the
            ``drift_windows - 1`` windows before it.
        start, end: the data interval; an event is reported when its
            ``drift_windows``-th window ends inside it, so each run gives one
            event however long it lasts and however the range is cut.
        step: grid step; windows are consecutive when the second starts one
            step after the first ends (a gap breaks the run).
        drift_windows: run length that signals drift.

    Returns:
        One row per event: ``event_id, entity, group, model_version,
        run_start, detected_at`` (end of the ``drift_windows``-th window),
        ``windows`` (= ``drift_windows``).
    """
    rows = []
    if windows.empty:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    for (entity, group), part in windows.sort_values("window_start").groupby(["entity", "group"], sort=True):
        run_start, length, previous_end = None, 0, None
        for row in part.itertuples():
            adjacent = previous_end is not None and row.window_start == previous_end + step
            if row.is_anomaly:
                if length and adjacent:
                    length += 1
                else:
                    run_start, length = row.window_start, 1
            else:
                length = 0
            previous_end = row.window_end
            if length == drift_windows and start <= row.window_end < end:
                rows.append({
                    "event_id": event_id(group, entity, run_start),
                    "entity": entity,
                    "group": group,
                    "model_version": row.model_version,
                    "run_start": run_start,
                    "detected_at": row.window_end,
                    "windows": drift_windows,
                })
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def request_key(group: str) -> str:
    """Lake key of the retraining request of ``group``."""
    return f"{REQUESTS}/{escape_segment(group)}.json"


def request_retraining(storage: Storage, group: str, events: pd.DataFrame, training_days: int) -> dict:
    """Write (or replace) the retraining request of ``group`` for the latest of ``events``.

    The request names a training range of ``training_days`` whole UTC days
    ending at the midnight after the latest detection, so that the new model
    learns the behaviour that caused the drift. It is a JSON object::

        {"group", "reason", "requested_at", "start", "end",
         "events": [{"event_id", "entity", "detected_at"}, ...]}

    Returns:
        The request as written.
    """
    latest = pd.Timestamp(events["detected_at"].max())
    end = latest.floor("D") + pd.Timedelta(days=1)
    request = {
        "group": group,
        "reason": f"context drift: {len(events)} run(s) of anomalous windows",
        "requested_at": datetime.now(timezone.utc).isoformat(),
        "start": (end - pd.Timedelta(days=training_days)).isoformat(),
        "end": end.isoformat(),
        "events": [
            {"event_id": row.event_id, "entity": row.entity, "detected_at": pd.Timestamp(row.detected_at).isoformat()}
            for row in events.sort_values("detected_at").itertuples()
        ],
    }
    storage.write_bytes(request_key(group), json.dumps(request, indent=2).encode())
    log.warning("Context drift in group %s (%d event(s), latest at %s): requested retraining on %s..%s",
                group, len(events), latest, request["start"], request["end"])
    return request


def read_request(storage: Storage, group: str) -> dict | None:
    """Return the pending retraining request of ``group``, or None."""
    key = request_key(group)
    if not storage.exists(key):
        return None
    return json.loads(storage.read_bytes(key))


def clear_request(storage: Storage, group: str) -> None:
    """Delete the request of ``group`` once a training run has taken it."""
    storage.delete(request_key(group))
