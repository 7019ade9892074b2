"""End to end on real data: the three DAGs run by real Airflow on omi-1, lake on file://.

The scenario lands omi-1's exports, then drives Airflow through
``scripts/demo.py --dag-runs -`` in a child process with its own
``AIRFLOW_HOME`` (SQLite), so that Airflow reads a configuration that no other
test has touched:

1. ``lstmae_ingest`` with params over the training period plus three days;
2. ``lstmae_train`` with params over the training period (1 epoch, 8 units);
3. ``lstmae_score`` once per day for 2026-10-01 .. 2026-10-03, each run's
   data interval coming from the timetable;
4. ``lstmae_score`` again for 2026-10-02 (a rerun);
5. ``lstmae_score`` with params over the three days in one run.

The lake is read between the steps. ``test_e2e_s3.py`` runs the same
scenario and the same tests against an S3 server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def load_module(path: Path, name: str):
    """Import a file of this folder as a module (test files are not a package under importlib mode)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_shared_data = load_module(Path(__file__).with_name("conftest.py"), "lstmae_tests_conftest").require_shared_data

pytestmark = [pytest.mark.realdata, pytest.mark.airflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ENTITY = "omi-1"
GROUP = "all"
TRAIN_START = pd.Timestamp("2026-09-01T00:00:00Z")
TRAIN_END = pd.Timestamp("2026-10-01T00:00:00Z")
SCORE_DAYS = list(pd.date_range("2026-10-01", periods=3, freq="D", tz="UTC"))
SCORE_END = SCORE_DAYS[-1] + pd.Timedelta(days=1)
STEP = pd.Timedelta("5min")
ONE_DAY = pd.Timedelta(days=1)
RUN_SECONDS_LIMIT = 600

# Small and fast: the scenario checks the pipeline, not the detection quality.
CONFIG = """\
step: 5min
groups:
  - name: all
    units: [8, 8, 8]
    epochs: 1
    batch_size: 64
"""

TABLES_WITH_VERSION = ("scores", "windows", "anomalies", "incidents")


class DagRunClient:
    """Sends DAG runs to ``scripts/demo.py --dag-runs -`` and reads one JSON result per run."""

    def __init__(self, env: dict[str, str], home: Path):
        self.home = home
        self.stderr = open(home / "dag-runs.stderr", "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--dag-runs", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=ROOT,
        )

    def run(self, dag_id: str, logical_date: pd.Timestamp | None = None, conf: dict | None = None) -> dict:
        request = {"dag_id": dag_id, "logical_date": logical_date.isoformat() if logical_date is not None else None,
                   "conf": conf or {}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], RUN_SECONDS_LIMIT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise AssertionError(f"No result for {request} within {RUN_SECONDS_LIMIT} s.\n{self.log_tail()}")
        result = json.loads(line)
        if result["state"] != "success":
            raise AssertionError(f"{request} failed: {result['error']}\n{self.log_tail()}")
        return result

    def log_tail(self, characters: int = 6000) -> str:
        texts = []
        for name in ("dag-runs.log", "dag-runs.stderr"):
            path = self.home / name
            if path.exists():
                texts.append(f"--- {name}\n" + path.read_text(errors="replace")[-characters:])
        return "\n".join(texts)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.stderr.close()


def expected_curated_rows(folder: Path, end: pd.Timestamp) -> int:
    """Count the values in the exports before ``end`` (timestamps times metric columns) with pandas."""
    total = 0
    for name in ("train.csv.gz", "test.csv.gz"):
        frame = pd.read_csv(folder / name)
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        total += int((stamps < end).sum()) * (frame.shape[1] - 1)
    return total


def read_table(storage, table: str, start, end) -> pd.DataFrame:
    from lstmae.lake import read_days

    data = read_days(storage, table, start, end)
    return data.to_pandas() if data is not None else pd.DataFrame()


def scores_of_day(storage, day: pd.Timestamp) -> pd.DataFrame:
    frame = read_table(storage, "scores", day, day + ONE_DAY)
    return frame.sort_values(["timestamp", "entity", "group"]).reset_index(drop=True)


def run_scenario(storage, lake_uri: str, workdir: Path, env_extra: dict[str, str] | None = None) -> dict:
    """Land omi-1, run the DAG runs listed in the module docstring, and snapshot the lake between them."""
    from lstmae import registry
    from lstmae.landing import land_wide_csv

    folder = require_shared_data("asd", ENTITY)
    for name in ("train.csv.gz", "test.csv.gz"):
        land_wide_csv(storage, folder / name, ENTITY)

    home = workdir / "airflow"
    home.mkdir(parents=True)
    config_path = workdir / "lstmae.yaml"
    config_path.write_text(CONFIG)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LSTMAE_"))}
    env.update(env_extra or {})
    env.update(
        AIRFLOW_HOME=str(home),
        LSTMAE_LAKE=lake_uri,
        LSTMAE_CONFIG=str(config_path),
        LSTMAE_THREADS="2",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )

    results: dict = {"folder": folder, "runs": {}}
    client = DagRunClient(env, home)
    try:
        results["runs"]["ingest"] = client.run(
            "lstmae_ingest", conf={"start": TRAIN_START.isoformat(), "end": SCORE_END.isoformat()})
        results["runs"]["train"] = client.run(
            "lstmae_train", conf={"start": TRAIN_START.isoformat(), "end": TRAIN_END.isoformat()})
        results["runs"]["daily"] = [client.run("lstmae_score", logical_date=day + ONE_DAY) for day in SCORE_DAYS]
        results["daily"] = {day: scores_of_day(storage, day) for day in SCORE_DAYS}
        results["outputs"] = {table: read_table(storage, table, SCORE_DAYS[0], SCORE_END) for table in TABLES_WITH_VERSION}

        rerun_day = SCORE_DAYS[1]
        results["runs"]["rerun"] = client.run("lstmae_score", logical_date=rerun_day + ONE_DAY)
        results["rerun_day"] = rerun_day
        results["rerun"] = scores_of_day(storage, rerun_day)
        results["rerun_files"] = storage.list(f"scores/date={rerun_day:%Y-%m-%d}/")

        results["runs"]["range"] = client.run(
            "lstmae_score", conf={"start": SCORE_DAYS[0].isoformat(), "end": SCORE_END.isoformat()})
        results["range"] = {day: scores_of_day(storage, day) for day in SCORE_DAYS}
    finally:
        client.close()

    results["metrics"] = read_table(storage, "metrics", TRAIN_START, SCORE_END)
    results["quarantine"] = read_table(storage, "quarantine", TRAIN_START, SCORE_END)
    results["versions"] = [entry.version for entry in registry.list_versions(storage, GROUP)]
    results["current"] = registry.current_version(storage, GROUP)
    return results


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict:
    from lstmae.storage import LocalStorage

    workdir = tmp_path_factory.mktemp("e2e-file")
    storage = LocalStorage(workdir / "lake")
    return run_scenario(storage, storage.uri, workdir)


def numeric_view(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Split a scores frame into its plain columns and a float array of its per-feature errors."""
    plain = frame.drop(columns=["feature_errors"])
    values = []
    for errors in frame["feature_errors"]:
        for item in errors if errors is not None else []:
            values.append([item[key] if item[key] is not None else np.nan
                           for key in ("value", "reconstruction", "error", "threshold", "ratio")])
    return plain, np.asarray(values, dtype=np.float64)


def assert_scores_equal(left: pd.DataFrame, right: pd.DataFrame, label: str) -> None:
    left_plain, left_errors = numeric_view(left)
    right_plain, right_errors = numeric_view(right)
    pd.testing.assert_frame_equal(left_plain, right_plain, check_exact=False, rtol=0, atol=1e-9, obj=label)
    assert left_errors.shape == right_errors.shape, label
    np.testing.assert_allclose(left_errors, right_errors, rtol=0, atol=1e-9, equal_nan=True, err_msg=label)


def test_curated_rows_match_exports(scenario):
    expected = expected_curated_rows(scenario["folder"], SCORE_END)
    assert expected == (8640 + 3 * 288) * 19
    assert len(scenario["metrics"]) == expected
    assert len(scenario["quarantine"]) == 0


def test_daily_runs_cover_one_day_each(scenario):
    intervals = [(run["data_interval_start"], run["data_interval_end"]) for run in scenario["runs"]["daily"]]
    expected = [(day.isoformat(), (day + ONE_DAY).isoformat()) for day in SCORE_DAYS]
    assert intervals == expected


def test_one_model_version_published(scenario):
    assert len(scenario["versions"]) == 1
    assert scenario["current"] == scenario["versions"][0]


def test_every_timestamp_scored(scenario):
    for day in SCORE_DAYS:
        scores = scenario["daily"][day]
        expected = pd.date_range(day, day + ONE_DAY, freq=STEP, inclusive="left")
        mine = scores[(scores["entity"] == ENTITY) & (scores["group"] == GROUP)]
        assert len(mine) == 288, day
        assert list(mine["timestamp"]) == list(expected), day
        assert set(mine["status"]) == {"scored"}, day
        assert mine["anomaly_score"].notna().all(), day


def test_outputs_carry_model_version(scenario):
    version = scenario["current"]
    assert len(scenario["outputs"]["scores"]) == 3 * 288
    assert len(scenario["outputs"]["windows"]) > 0
    for table, frame in scenario["outputs"].items():
        if len(frame):
            assert set(frame["model_version"]) == {version}, table


def test_rerun_replaces_day(scenario):
    day = scenario["rerun_day"]
    before, after = scenario["daily"][day], scenario["rerun"]
    assert len(after) == len(before) == 288
    assert_scores_equal(before, after, f"rerun of {day.date()}")
    assert scenario["rerun_files"] == [f"scores/date={day:%Y-%m-%d}/group={GROUP}/part-000000-240000.parquet"]


def test_range_run_equals_daily_runs(scenario):
    for day in SCORE_DAYS:
        assert len(scenario["range"][day]) == len(scenario["daily"][day]), day
        assert_scores_equal(scenario["daily"][day], scenario["range"][day], f"scores of {day.date()}")
