"""Context drift requests retraining, and the train DAG honours the request.

The shared synthetic lake is scored with ``drift_windows: 2``, so its cpu
spike leaves a retraining request in ``requests/retrain/all.json``. The score
DAG announces the request through its asset; a run of the train DAG then
trains on the request's range instead of the nightly range, registers a
version that passed the usual gates, and clears the request.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from lstmae import registry
from lstmae.drift import read_request, request_key
from lstmae.storage import LocalStorage

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture
def drifted(scored_lake, tmp_path) -> dict:
    """A private copy of the scored lake, with its config pointing at the copy."""
    lake = tmp_path / "lake"
    shutil.copytree(scored_lake["lake"], lake)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(scored_lake["config_path"].read_text().replace(str(scored_lake["lake"]), str(lake)))
    return {"lake": lake, "storage": LocalStorage(lake), "config_path": config_path,
            "env": {"LSTMAE_CONFIG": str(config_path), "LSTMAE_LAKE": str(lake)}}


def test_scoring_leaves_a_request(drifted):
    request = read_request(drifted["storage"], "all")
    assert request is not None
    assert request["group"] == "all"
    assert request["reason"].startswith("context drift")
    # The range ends at the midnight after the latest drift detection.
    detected = max(pd.Timestamp(event["detected_at"]) for event in request["events"])
    assert pd.Timestamp(request["end"]) == detected.floor("D") + pd.Timedelta(days=1)


def test_score_dag_announces_the_request(drifted, tmp_path, run_dags):
    spike_day = {"start": "2026-09-05T00:00:00Z", "end": "2026-09-06T00:00:00Z", "send_alerts": False}
    quiet_day = {"start": "2026-09-04T00:00:00Z", "end": "2026-09-05T00:00:00Z", "send_alerts": False}
    runs = run_dags(tmp_path / "airflow",
                    [{"dag_id": "lstmae_score", "conf": spike_day}, {"dag_id": "lstmae_score", "conf": quiet_day}],
                    drifted["env"])
    assert [run["state"] for run in runs] == ["success", "success"], runs[0]["output"][-4000:]
    assert runs[0]["tasks"]["request_retraining[-1]"] == "success"
    assert runs[1]["tasks"]["request_retraining[-1]"] == "skipped"


def test_train_dag_trains_on_the_request(drifted, tmp_path, run_dags):
    storage = drifted["storage"]
    request = read_request(storage, "all")
    before = {entry.version for entry in registry.list_versions(storage, "all")}
    # A nightly run (its interval would train on the 30 days before 09-08) takes the request instead.
    runs = run_dags(tmp_path / "airflow", [{"dag_id": "lstmae_train", "logical_date": "2026-09-08T02:00:00Z"}],
                    drifted["env"])
    assert runs[0]["state"] == "success", runs[0]["output"][-4000:]
    assert runs[0]["tasks"]["train[0]"] == "success"

    new = [entry for entry in registry.list_versions(storage, "all") if entry.version not in before]
    assert len(new) == 1
    data_range = new[0].metadata["data_range"]
    assert data_range["requested"] == {"start": pd.Timestamp(request["start"]).isoformat(),
                                       "end": pd.Timestamp(request["end"]).isoformat()}
    # The request covers 30 days, but training used only the days with data (from 09-01).
    assert pd.Timestamp(data_range["start"]) == pd.Timestamp("2026-09-01T00:00:00Z")
    assert pd.Timestamp(data_range["end"]) == pd.Timestamp(request["end"])
    assert new[0].metadata["status"] in ("promoted", "rejected", "registered")
    assert new[0].metadata["gates"], "the requested version went through the gates"
    assert not storage.exists(request_key("all"))


def test_request_survives_failed_training(drifted):
    from lstmae.tasks import run_requested_training

    storage = drifted["storage"]
    # A range without curated data makes training fail; the request must stay for the next run.
    impossible = dict(read_request(storage, "all"), start="2020-01-01T00:00:00+00:00", end="2020-01-02T00:00:00+00:00")
    storage.write_bytes(request_key("all"), json.dumps(impossible).encode())
    with pytest.raises(ValueError, match="No curated metrics"):
        run_requested_training("all", config_path=str(drifted["config_path"]))
    assert read_request(storage, "all")["start"] == "2020-01-01T00:00:00+00:00"
