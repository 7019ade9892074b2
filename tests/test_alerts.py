"""Alerts: Slack messages for new incidents and SLO violations, sent once.

The library tests use the synthetic scored lake and a list as the webhook.
The DAG test runs lstmae_score with DAG.test() in a subprocess whose Slack
connection points at a capturing HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from lstmae import alerts
from lstmae.lake import write_slice
from lstmae.storage import LocalStorage

GAP = pd.Timedelta("30min")  # merge distance passed to send_alerts by the library tests
DAY = pd.Timestamp("2026-09-05T00:00:00Z")
NEXT_DAY = DAY + pd.Timedelta(days=1)


def copy_lake(scored_lake, tmp_path) -> LocalStorage:
    target = tmp_path / "lake"
    shutil.copytree(scored_lake["lake"], target)
    return LocalStorage(target)


def incident_ids_of_day(lake_root, day: pd.Timestamp) -> set[str]:
    """Incident ids stored in one day's partition, read with pyarrow.dataset."""
    path = lake_root / "incidents" / f"date={day.strftime('%Y-%m-%d')}"
    if not path.exists():
        return set()
    return set(ds.dataset(path, format="parquet").to_table()["incident_id"].to_pylist())


def spike_incident(storage) -> alerts.Alert:
    candidates = [
        a for a in alerts.incident_alerts(storage, DAY, NEXT_DAY)
        if a.entity == "host-a" and "cpu" in a.features and a.start <= pd.Timestamp("2026-09-05T10:30Z")
        and a.end >= pd.Timestamp("2026-09-05T10:00Z")
    ]
    assert len(candidates) == 1, candidates
    return candidates[0]


def test_incident_alerts_match_partition(scored_lake, tmp_path):
    storage = copy_lake(scored_lake, tmp_path)
    found = alerts.incident_alerts(storage, DAY, NEXT_DAY)
    assert {a.alert_id for a in found} == incident_ids_of_day(storage.root, DAY)
    assert all(a.kind == alerts.INCIDENT for a in found)


def test_message_names_group_entity_start_peak_features(scored_lake, tmp_path):
    storage = copy_lake(scored_lake, tmp_path)
    spike = spike_incident(storage)
    message = spike.message(link="http://127.0.0.1:8080/lstmae/")
    fields = {block["text"].split("\n")[0]: block["text"].split("\n")[1] for block in message["blocks"][1]["fields"]}
    assert message["blocks"][0]["text"]["text"] == "lstmae incident on host-a (group all)"
    assert fields["*Group*"] == "all"
    assert fields["*Entity*"] == "host-a"
    assert fields["*Start*"] == spike.start.strftime("%Y-%m-%d %H:%M UTC")
    assert fields["*Peak*"].startswith(spike.peak_timestamp.strftime("%Y-%m-%d %H:%M UTC"))
    assert fields["*Features*"].split(", ")[0] == "cpu"
    assert fields["*Id*"] == spike.alert_id
    assert f"start {spike.start:%Y-%m-%d %H:%M} UTC" in message["text"]
    assert message["blocks"][-1]["elements"][0]["text"] == "<http://127.0.0.1:8080/lstmae/|Open the anomalies page>"


def test_send_records_ledger_and_skips_repeats(scored_lake, tmp_path):
    storage = copy_lake(scored_lake, tmp_path)
    candidates = alerts.incident_alerts(storage, DAY, NEXT_DAY)
    posted = []
    first = alerts.send_alerts(storage, candidates, posted.append, GAP)
    second = alerts.send_alerts(storage, candidates, posted.append, GAP)
    assert first["sent"] == len(candidates)
    assert len(posted) == len(candidates)
    assert second["sent"] == 0
    assert second["already_sent"] == len(candidates)
    ledger = storage.list("alerts/sent/")
    assert len(ledger) == len(candidates)
    entry = json.loads(storage.read_bytes(alerts.ledger_key(candidates[0])))
    assert entry["sent"] is True
    assert entry["alert_id"] == candidates[0].alert_id


def test_failed_post_keeps_earlier_records(scored_lake, tmp_path):
    storage = copy_lake(scored_lake, tmp_path)
    candidates = alerts.incident_alerts(storage, DAY, NEXT_DAY)
    assert len(candidates) >= 3
    posted = []

    def flaky(payload):
        if len(posted) == 2:
            raise ConnectionError("webhook returned 500")
        posted.append(payload)

    with pytest.raises(ConnectionError):
        alerts.send_alerts(storage, candidates, flaky, GAP)
    retried = []
    summary = alerts.send_alerts(storage, candidates, retried.append, GAP)
    assert summary["already_sent"] == 2
    assert summary["sent"] == len(candidates) - 2
    assert len(posted) + len(retried) == len(candidates)


def test_continuation_under_new_id_is_duplicate(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    base = dict(kind=alerts.INCIDENT, group="all", entity="host-a", features=("cpu",))
    # Day 2 combined first: the incident appears to start at midnight.
    later = alerts.Alert(alert_id="b", start=pd.Timestamp("2026-09-06T00:00Z"), end=pd.Timestamp("2026-09-06T02:00Z"), **base)
    earlier = alerts.Alert(alert_id="a", start=pd.Timestamp("2026-09-05T22:00Z"), end=pd.Timestamp("2026-09-05T23:55Z"), **base)
    other_host = alerts.Alert(alert_id="c", start=pd.Timestamp("2026-09-05T22:00Z"), end=pd.Timestamp("2026-09-05T23:55Z"),
                              **dict(base, entity="host-b"))
    far_away = alerts.Alert(alert_id="d", start=pd.Timestamp("2026-09-05T20:00Z"), end=pd.Timestamp("2026-09-05T21:00Z"), **base)
    posted = []
    alerts.send_alerts(storage, [later], posted.append, GAP)
    summary = alerts.send_alerts(storage, [earlier, other_host, far_away], posted.append, GAP)
    assert summary["duplicates"] == 1
    assert summary["sent_ids"] == ["c", "d"]
    entry = json.loads(storage.read_bytes(alerts.ledger_key(earlier)))
    assert entry["sent"] is False
    assert entry["duplicate_of"] == "b"
    # A later rerun that finds the incident under the first id sends nothing either.
    assert alerts.send_alerts(storage, [earlier, later], posted.append, GAP)["sent"] == 0
    assert len(posted) == 3


def test_without_post_nothing_is_recorded(scored_lake, tmp_path):
    storage = copy_lake(scored_lake, tmp_path)
    candidates = alerts.incident_alerts(storage, DAY, NEXT_DAY)
    summary = alerts.send_alerts(storage, candidates, None, GAP)
    assert summary["pending"] == len(candidates)
    assert storage.list("alerts/") == []


def test_slo_violations_are_alerted_once(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    assert alerts.slo_violation_alerts(storage, DAY, NEXT_DAY) == []
    rows = pa.table(
        {
            "violation_id": ["v1", "v1"],
            "entity": ["host-a", "host-a"],
            "group": ["all", "all"],
            "model_version": ["m1", "m1"],
            "start": pa.array([pd.Timestamp("2026-09-05T10:00Z"), pd.Timestamp("2026-09-05T10:00Z")], pa.timestamp("ms", tz="UTC")),
            "end": pa.array([pd.Timestamp("2026-09-05T11:00Z"), pd.Timestamp("2026-09-05T12:00Z")], pa.timestamp("ms", tz="UTC")),
            "windows": [5, 10],
            "features": [["cpu"], ["cpu", "memory"]],
            "open": [True, False],
        }
    )
    write_slice(storage, "slo_violations", DAY, DAY, NEXT_DAY, rows)
    found = alerts.slo_violation_alerts(storage, DAY, NEXT_DAY)
    assert len(found) == 1
    violation = found[0]
    assert violation.kind == alerts.SLO_VIOLATION
    assert violation.features == ("cpu", "memory")
    assert violation.end == pd.Timestamp("2026-09-05T12:00Z")
    assert violation.details == {"Windows over limit": 10}
    assert violation.message()["blocks"][0]["text"]["text"] == "lstmae SLO violation on host-a (group all)"
    posted = []
    alerts.send_alerts(storage, found, posted.append, GAP)
    alerts.send_alerts(storage, found, posted.append, GAP)
    assert len(posted) == 1


class CapturingWebhook(BaseHTTPRequestHandler):
    """Slack-like incoming webhook: stores every JSON body and returns 200 ok."""

    bodies: list[dict] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    CapturingWebhook.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), CapturingWebhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, CapturingWebhook.bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.airflow
@pytest.mark.slow
def test_score_dag_posts_each_incident_once(scored_lake, tmp_path, webhook, run_dags):
    server, bodies = webhook
    storage = copy_lake(scored_lake, tmp_path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(scored_lake["config_path"].read_text().replace(str(scored_lake["lake"]), str(storage.root)))
    connection = {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{server.server_port}", "password": "T000/B000/XXXX"}
    env = {
        "LSTMAE_CONFIG": str(config_path),
        "LSTMAE_LAKE": str(storage.root),
        "AIRFLOW_CONN_LSTMAE_SLACK": json.dumps(connection),
    }
    day_conf = {"start": DAY.isoformat(), "end": NEXT_DAY.isoformat()}
    next_conf = {"start": NEXT_DAY.isoformat(), "end": (NEXT_DAY + pd.Timedelta(days=1)).isoformat()}
    runs = run_dags(
        tmp_path / "airflow",
        [
            {"dag_id": "lstmae_score", "conf": day_conf},
            {"dag_id": "lstmae_score", "conf": day_conf},  # a rerun of the same day
            {"dag_id": "lstmae_score", "conf": next_conf},
        ],
        env,
    )
    assert [run["state"] for run in runs] == ["success"] * 3, runs[0]["output"][-4000:]

    day_ids = incident_ids_of_day(storage.root, DAY)
    next_ids = incident_ids_of_day(storage.root, NEXT_DAY)
    assert len(day_ids) >= 1
    posted_ids = [body["body"]["blocks"][1]["fields"][-1]["text"].split("\n")[1] for body in bodies]
    incident_posts = [i for i, body in zip(posted_ids, bodies) if body["body"]["blocks"][0]["text"]["text"].startswith("lstmae incident")]
    # Every incident of both days exactly once; the rerun added nothing.
    assert sorted(incident_posts) == sorted(day_ids | next_ids)
    assert len(posted_ids) == len(set(posted_ids))
    assert {body["path"] for body in bodies} == {"/T000/B000/XXXX"}
    expected_spike = spike_incident(storage)
    spike = [body["body"]["text"] for posted, body in zip(posted_ids, bodies) if posted == expected_spike.alert_id]
    assert len(spike) == 1
    assert spike[0].startswith("lstmae incident on host-a")
    assert f"start {expected_spike.start:%Y-%m-%d %H:%M} UTC" in spike[0]
    assert "features cpu" in spike[0]
    slo_posts = [body for body in bodies if body["body"]["text"].startswith("lstmae SLO violation")]
    slo_ids = set(ds.dataset(storage.root / "slo_violations", format="parquet", partitioning="hive")
                  .to_table(filter=ds.field("date").isin([DAY.strftime("%Y-%m-%d"), NEXT_DAY.strftime("%Y-%m-%d")]))
                  ["violation_id"].to_pylist()) if (storage.root / "slo_violations").exists() else set()
    assert len(slo_posts) == len(slo_ids)
    ledger = storage.list("alerts/sent/")
    assert len(ledger) == len(posted_ids)
