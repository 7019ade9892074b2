"""DAG integrity: every file in dags/ parses cleanly, quickly and without side effects.

Each file is parsed by Airflow's DagBag in a fresh Python process, with an
empty Airflow home, so that nothing this test process imported (TensorFlow,
another AIRFLOW_HOME) can hide or cause a problem. The probe below records
what the file did while it was parsed and prints it as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted(path.name for path in (ROOT / "dags").glob("*.py") if not path.name.startswith("_"))

# Airflow's own limit is core.dagbag_import_timeout (30 s by default). A file
# that takes more than 5 s to parse is doing work at parse time.
PARSE_SECONDS_LIMIT = 5.0

# Timetables whose runs cover a period (a plain cron string gives a
# CronTriggerTimetable, whose runs have zero-length data intervals).
# AssetOrTimeSchedule counts because its time part is such a timetable.
DATA_INTERVAL_TIMETABLES = ("CronDataIntervalTimetable", "DeltaDataIntervalTimetable", "AssetOrTimeSchedule")

PROBE = r"""
import json, sys, time
from pathlib import Path

path = Path(sys.argv[1])
calls = []

def forbid(owner, name, label):
    def record(*args, **kwargs):
        calls.append(label)
        raise RuntimeError(f"{label} called while parsing {path.name}")
    setattr(owner, name, record)

import boto3
import boto3.session
from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.definitions.connection import Connection
from airflow.sdk.definitions.variable import Variable
import lstmae.storage

forbid(BaseHook, "get_connection", "BaseHook.get_connection")
forbid(Connection, "get", "Connection.get")
forbid(Variable, "get", "Variable.get")
forbid(boto3, "client", "boto3.client")
forbid(boto3.session.Session, "client", "boto3.Session.client")
forbid(lstmae.storage, "open_storage", "lstmae.storage.open_storage")
forbid(lstmae.storage.LocalStorage, "__init__", "LocalStorage()")
forbid(lstmae.storage.S3Storage, "__init__", "S3Storage()")

from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import coerce_to_core_timetable
import pendulum

started = time.perf_counter()
bag = DagBag(dag_folder=str(path))
seconds = time.perf_counter() - started

dags = {}
for dag_id, dag in bag.dags.items():
    timetable = coerce_to_core_timetable(dag.timetable)
    interval = timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 10, 2, tz="UTC"))
    dags[dag_id] = {
        "timetable": type(dag.timetable).__name__,
        "interval": [interval.start.isoformat(), interval.end.isoformat()],
    }
print(json.dumps({
    "seconds": seconds,
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dags": dags,
    "calls": calls,
    "tensorflow": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
}))
"""


def parse_in_subprocess(name: str, tmp_path: Path) -> dict:
    home = tmp_path / "airflow"
    lake = tmp_path / "lake"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "LSTMAE_", "AWS_"))
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        LSTMAE_LAKE=lake.as_uri(),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    completed = subprocess.run(
        [sys.executable, str(script), str(ROOT / "dags" / name)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert completed.returncode == 0, f"probe of {name} failed:\n{completed.stderr[-4000:]}"
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["lake_created"] = lake.exists()
    return report


@pytest.fixture(scope="module", params=DAG_FILES)
def parsed(request, tmp_path_factory) -> tuple[str, dict]:
    """Parse one DAG file once per module; every test below checks one property of it."""
    return request.param, parse_in_subprocess(request.param, tmp_path_factory.mktemp("parse"))


def test_dag_files_found():
    assert "lstmae_ingest.py" in DAG_FILES
    assert "lstmae_train.py" in DAG_FILES
    assert "lstmae_score.py" in DAG_FILES


def test_dag_file_has_no_import_errors(parsed):
    name, report = parsed
    assert report["import_errors"] == {}, name


def test_dag_file_defines_a_dag(parsed):
    name, report = parsed
    assert len(report["dags"]) >= 1, name


def test_dag_file_parses_within_limit(parsed):
    name, report = parsed
    assert report["seconds"] < PARSE_SECONDS_LIMIT, f"{name} took {report['seconds']:.2f} s to parse"


def test_dag_file_does_not_import_tensorflow(parsed):
    name, report = parsed
    assert report["tensorflow"] == [], name


def test_dag_file_makes_no_lookups_or_storage_calls(parsed):
    name, report = parsed
    assert report["calls"] == [], name
    assert report["lake_created"] is False, name


def test_dag_timetables_have_data_intervals(parsed):
    name, report = parsed
    for dag_id, dag in report["dags"].items():
        start, end = dag["interval"]
        assert dag["timetable"] in DATA_INTERVAL_TIMETABLES, dag_id
        assert start < end, f"{dag_id} in {name}: zero-length data interval {start} .. {end}"
