"""Alerts for new incidents and SLO violations, with a ledger so that none is sent twice.

This module builds the messages and keeps the ledger; it never talks to
Slack itself. The caller passes a ``post`` function (the Airflow task passes
``SlackWebhookHook.send_dict``), so the library stays free of Airflow and the
tests can post to a server of their own.

The ledger lives in the lake::

    alerts/sent/date=YYYY-MM-DD/<alert_id>.json

where the date is the UTC day the incident started and ``alert_id`` is the
incident's ``incident_id`` (or the violation's id). An entry is written right
after its message was accepted, so a rerun, a retry after a failed post, or a
backfill over the same days sends only what has no entry yet. An incident
that continues into the next interval keeps its id and is not sent again.

Backfills can score days out of order. The day after an incident's start may
then be combined first, and it opens the same incident under another id. An
incident whose time range touches an alerted incident of the same group and
entity (within ``merge_gap``) is therefore treated as the same one: it gets a
ledger entry with ``duplicate_of`` and no message.

NOTE: the ledger check and the ledger write are not atomic across runs. Two
runs that send alerts for neighbouring days at the same moment (a backfill
with several active runs) can both miss each other's entry and post one
incident twice under two ids.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from lstmae.lake import utc
from lstmae.query import read_incidents, read_slo_violations
from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)

LEDGER = "alerts/sent"
INCIDENT = "incident"
SLO_VIOLATION = "slo_violation"

# How far back from an alert's start the ledger is searched for an alerted
# incident that it continues (one extra day covers incidents that began the
# day before).
_LOOKBACK = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Alert:
    """One message to send: an incident or an SLO violation.

    Attributes:
        alert_id: the incident's ``incident_id``, or the violation's id.
        kind: ``"incident"`` or ``"slo_violation"``.
        group, entity: where it happened.
        start, end: time range seen so far (UTC).
        peak_timestamp, peak_score: the incident's highest anomaly score and
            when it occurred (None for an SLO violation without one).
        features: features that contributed most (metric names for an SLO
            violation).
        model_version: model that produced the scores, when known.
        details: further fields shown in the message (SLO metric, value, limit).
    """

    alert_id: str
    kind: str
    group: str
    entity: str
    start: pd.Timestamp
    end: pd.Timestamp
    peak_timestamp: pd.Timestamp | None = None
    peak_score: float | None = None
    features: tuple[str, ...] = ()
    model_version: str | None = None
    details: dict = field(default_factory=dict)

    def title(self) -> str:
        if self.kind == INCIDENT:
            return f"lstmae incident on {self.entity} (group {self.group})"
        return f"lstmae SLO violation on {self.entity} (group {self.group})"

    def lines(self) -> list[tuple[str, str]]:
        """Return the ``(label, value)`` pairs of the message, in display order."""
        lines = [("Group", self.group), ("Entity", self.entity), ("Start", _iso(self.start))]
        if self.peak_timestamp is not None:
            score = f" (anomaly score {self.peak_score:.4g})" if self.peak_score is not None else ""
            lines.append(("Peak", f"{_iso(self.peak_timestamp)}{score}"))
        lines.append(("Features", ", ".join(self.features) if self.features else "none reported"))
        for key, value in self.details.items():
            lines.append((key, str(value)))
        if self.model_version:
            lines.append(("Model version", self.model_version))
        lines.append(("Id", self.alert_id))
        return lines

    def message(self, link: str | None = None) -> dict:
        """Build the Slack incoming-webhook payload: a plain ``text`` fallback and Block Kit ``blocks``.

        Args:
            link: URL of the anomalies page; added as a last line when given.
        """
        lines = self.lines()
        text = self.title() + ": " + "; ".join(
            f"{label.lower()} {value}" for label, value in lines if label not in ("Group", "Entity", "Id")
        )
        fields = [{"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)}"} for label, value in lines]
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title()[:150]}},
            # Slack allows at most 10 fields per section block.
            *({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)),
        ]
        if link:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open the anomalies page>"}]})
        return {"text": text, "blocks": blocks}


def _iso(stamp) -> str:
    return utc(stamp).strftime("%Y-%m-%d %H:%M UTC")


def _escape(text: str) -> str:
    # Slack mrkdwn treats these three characters as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _optional_float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def incident_alerts(storage: Storage, start, end) -> list[Alert]:
    """Return an :class:`Alert` for every incident seen in ``[start, end)`` (sent or not)."""
    incidents = read_incidents(storage, since=start, until=end)
    alerts = []
    for row in incidents.sort_values(["start", "incident_id"]).itertuples(index=False):
        alerts.append(
            Alert(
                alert_id=str(row.incident_id),
                kind=INCIDENT,
                group=str(row.group),
                entity=str(row.entity),
                start=utc(row.start),
                end=utc(row.end),
                peak_timestamp=utc(row.peak_timestamp),
                peak_score=_optional_float(row.peak_score),
                features=tuple(row.top_features) if row.top_features is not None else (),
                model_version=str(row.model_version),
            )
        )
    return alerts


def slo_violation_alerts(storage: Storage, start, end) -> list[Alert]:
    """Return an :class:`Alert` for every SLO violation seen in ``[start, end)``.

    The ``slo_violations/`` table is optional: without partitions for these
    days the result is empty. Like incidents, a violation that spans several
    days has a row per day with the same ``violation_id``; the latest row is
    used. Rows need ``violation_id``, ``entity``, ``group``, ``start`` and
    ``end``; ``features``, ``windows`` and ``model_version`` are shown when present.

    Raises:
        ValueError: the table exists but lacks one of the needed columns.
    """
    frame = read_slo_violations(storage, start, end)
    if frame.empty:
        return []
    needed = ["violation_id", "entity", "group", "start", "end"]
    absent = [name for name in needed if name not in frame.columns]
    if absent:
        raise ValueError(
            f"slo_violations/ lacks the column(s) {absent} (columns: {list(frame.columns)}); "
            "alerts need violation_id, entity, group, start and end. Fix the writer of that table."
        )
    low, high = utc(start), utc(end)
    frame = frame[(frame["end"] >= low) & (frame["start"] < high)]
    frame = frame.sort_values(["violation_id", "end"], kind="stable").drop_duplicates("violation_id", keep="last")
    alerts = []
    for row in frame.sort_values(["start", "violation_id"]).to_dict("records"):
        features = row.get("features")
        details = {"Windows over limit": int(row["windows"])} if row.get("windows") is not None else {}
        alerts.append(
            Alert(
                alert_id=str(row["violation_id"]),
                kind=SLO_VIOLATION,
                group=str(row["group"]),
                entity=str(row["entity"]),
                start=utc(row["start"]),
                end=utc(row["end"]),
                features=tuple(str(f) for f in features) if features is not None else (),
                model_version=row.get("model_version"),
                details=details,
            )
        )
    return alerts


def ledger_key(alert: Alert) -> str:
    return f"{LEDGER}/date={alert.start.strftime('%Y-%m-%d')}/{escape_segment(alert.alert_id)}.json"


class Ledger:
    """The record of alerts already handled, read lazily one day at a time."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._days: dict[str, dict[str, dict]] = {}

    def _day(self, day: pd.Timestamp) -> dict[str, dict]:
        name = day.strftime("%Y-%m-%d")
        if name not in self._days:
            entries = {}
            for key in self.storage.list(f"{LEDGER}/date={name}/"):
                if key.endswith(".json"):
                    entry = json.loads(self.storage.read_bytes(key))
                    entries[entry["alert_id"]] = entry
            self._days[name] = entries
        return self._days[name]

    def find(self, alert: Alert, merge_gap: pd.Timedelta) -> dict | None:
        """Return the ledger entry that covers ``alert``: the same id, or an overlapping incident."""
        own = self._day(alert.start.floor("D")).get(alert.alert_id)
        if own is not None:
            return own
        if alert.kind != INCIDENT:
            return None
        low, high = alert.start - merge_gap, alert.end + merge_gap
        day = (low - _LOOKBACK).floor("D")
        while day <= high.floor("D"):
            for entry in self._day(day).values():
                if (
                    entry["kind"] == INCIDENT
                    and entry["group"] == alert.group
                    and entry["entity"] == alert.entity
                    and utc(entry["start"]) <= high
                    and low <= utc(entry["end"])
                ):
                    return entry
            day += pd.Timedelta(days=1)
        return None

    def record(self, alert: Alert, *, sent: bool, duplicate_of: str | None = None) -> dict:
        entry = {
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "group": alert.group,
            "entity": alert.entity,
            "start": alert.start.isoformat(),
            "end": alert.end.isoformat(),
            "peak_timestamp": alert.peak_timestamp.isoformat() if alert.peak_timestamp is not None else None,
            "features": list(alert.features),
            "sent": sent,
            "duplicate_of": duplicate_of,
            "recorded_at": datetime.now(timezone.utc).isoformat(),
        }
        self.storage.write_bytes(ledger_key(alert), json.dumps(entry, indent=2, sort_keys=True).encode())
        self._day(alert.start.floor("D"))[alert.alert_id] = entry
        return entry


def send_alerts(
    storage: Storage,
    alerts: list[Alert],
    post: Callable[[dict], object] | None,
    merge_gap: pd.Timedelta,
    link: str | None = None,
) -> dict:
    """Post every alert that the ledger does not cover, and record each one after its post.

    Args:
        alerts: candidates, e.g. from :func:`incident_alerts`.
        post: called with the Slack payload of one alert; it must raise when
            the webhook did not accept it. None sends nothing and records
            nothing (the alerts stay pending for a later run).
        merge_gap: incidents of the same group and entity closer than this
            are one incident (the merge distance of the combine step).
        link: URL of the anomalies page, added to each message.

    Returns:
        ``{"candidates", "sent", "already_sent", "duplicates", "pending", "sent_ids"}``.
        ``pending`` counts alerts not sent because ``post`` is None.

    Raises:
        Whatever ``post`` raises; the alerts posted before it stay recorded, so
        a retry sends only the rest.
    """
    ledger = Ledger(storage)
    summary = {"candidates": len(alerts), "sent": 0, "already_sent": 0, "duplicates": 0, "pending": 0, "sent_ids": []}
    for alert in alerts:
        entry = ledger.find(alert, merge_gap)
        if entry is not None and entry["alert_id"] == alert.alert_id:
            summary["already_sent"] += 1
            continue
        if entry is not None:
            original = entry.get("duplicate_of") or entry["alert_id"]
            log.info("Not alerting %s %s: it continues %s, which was already alerted", alert.kind, alert.alert_id, original)
            ledger.record(alert, sent=False, duplicate_of=original)
            summary["duplicates"] += 1
            continue
        if post is None:
            summary["pending"] += 1
            continue
        post(alert.message(link))
        ledger.record(alert, sent=True)
        log.info("Alerted %s %s: %s from %s", alert.kind, alert.alert_id, alert.entity, alert.start)
        summary["sent"] += 1
        summary["sent_ids"].append(alert.alert_id)
    log.info(
        "Alerts: %d candidates, %d sent, %d already sent, %d duplicates, %d pending",
        summary["candidates"], summary["sent"], summary["already_sent"], summary["duplicates"], summary["pending"],
    )
    return summary
