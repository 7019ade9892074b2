"""Choose the data interval of a scheduler run, from values Airflow puts in the task context.

No Airflow import: callers pass the context (a mapping) so that the rule can be
tested without a scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

NO_INTERVAL_HELP = (
    "Give a date range: trigger the DAG with a logical date (its data interval is then the "
    "schedule period ending there), set the params 'start' and 'end' (ISO 8601, UTC), or run "
    "a backfill from the Airflow UI (Trigger -> Backfill) or with 'airflow backfill create'."
)


def _timestamp(value, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name} {value!r}: expected an ISO 8601 timestamp such as 2026-09-01T00:00:00Z.") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")


def interval_from_asset_events(triggering_asset_events) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """Return the interval that covers every ``start``/``end`` pair in the extras of asset events.

    An asset-triggered run has no data interval. The ingest task stores the
    interval it wrote in the extra of its ``metrics`` asset event, so a run
    triggered by several events covers them all, from the earliest start to
    the latest end.

    Args:
        triggering_asset_events: Airflow's ``triggering_asset_events`` (a
            mapping of asset to events with an ``extra`` dict), or None.

    Returns:
        ``(start, end)``, or None when no event carries both ``start`` and ``end``.

    >>> class Event:
    ...     def __init__(self, extra): self.extra = extra
    >>> events = {"metrics": [Event({"start": "2026-09-02T00:00Z", "end": "2026-09-03T00:00Z"}),
    ...                       Event({"start": "2026-09-01T00:00Z", "end": "2026-09-02T00:00Z"})]}
    >>> [t.isoformat() for t in interval_from_asset_events(events)]
    ['2026-09-01T00:00:00+00:00', '2026-09-03T00:00:00+00:00']
    """
    if not triggering_asset_events:
        return None
    starts, ends = [], []
    for events in triggering_asset_events.values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            if extra.get("start") and extra.get("end"):
                starts.append(_timestamp(extra["start"], "asset event extra 'start'"))
                ends.append(_timestamp(extra["end"], "asset event extra 'end'"))
    if not starts:
        return None
    return min(starts), max(ends)


def interval_from_context(context: Mapping) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return ``(start, end)`` of the run: the params ``start``/``end`` when both are set,
    else the run's data interval, else (for an asset-triggered run) the
    interval named by the triggering asset events.

    Raises:
        ValueError: the run has no data interval (a manual run without a logical
            date), a zero-length one, or only one of the params.
    """
    params = context.get("params") or {}
    start_param, end_param = params.get("start"), params.get("end")
    if start_param or end_param:
        if not (start_param and end_param):
            raise ValueError(f"Set both params 'start' and 'end', or neither. Received: start={start_param!r}, end={end_param!r}.")
        start, end = _timestamp(start_param, "param 'start'"), _timestamp(end_param, "param 'end'")
    else:
        start_value = context.get("data_interval_start")
        end_value = context.get("data_interval_end")
        if start_value is None or end_value is None:
            from_events = interval_from_asset_events(context.get("triggering_asset_events"))
            if from_events is None:
                raise ValueError(f"This run has no data interval, so there is nothing to process. {NO_INTERVAL_HELP}")
            start, end = from_events
        else:
            start, end = _timestamp(start_value, "data_interval_start"), _timestamp(end_value, "data_interval_end")
    if end <= start:
        raise ValueError(
            f"The data interval {start.isoformat()} .. {end.isoformat()} is empty. {NO_INTERVAL_HELP} "
            "A plain cron schedule gives zero-length intervals in Airflow 3; lstmae's DAGs use "
            "CronDataIntervalTimetable."
        )
    return start, end
