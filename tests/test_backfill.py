"""Backfills of lstmae_score as the Airflow UI starts them, against a real Airflow on 127.0.0.1.

The test starts the api-server, scheduler (LocalExecutor, no log server) and
dag-processor of Airflow 3 with a SQLite database, each in its own process
group, and talks to them only through the REST API with a token from
``POST /auth/token``:

1. a three-day backfill (``POST /api/v2/backfills``, three runs active at
   once) writes exactly the partitions that one call of lstmae.pipeline over
   the same three days writes;
2. the same backfill again with ``reprocess_behavior=completed`` leaves every
   row count and score unchanged;
3. a manual run without a logical date fails in its first task with the
   message that asks for a date range;
4. the api-server serves the anomalies page of the lstmae plugin, behind
   Airflow's login.

Every process started here is stopped at the end, by process group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
OUTPUTS = ("scores", "windows", "votes", "anomalies", "incidents", "slo_violations", "drift_events", "plots")
DAYS = ["2026-09-04", "2026-09-05", "2026-09-06"]
START_TIMEOUT = 240  # seconds for the api-server, the scheduler and the first DAG parse
RUN_TIMEOUT = 600  # seconds for one backfill of three daily runs

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Airflow:
    """Airflow's api-server, scheduler and dag-processor on 127.0.0.1, stopped by process group."""

    def __init__(self, home: Path, lake: Path, config_path: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.token: str | None = None
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LSTMAE_"))}
        env.update(
            PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
            # Airflow 3.3.2's log server binds every interface, so the scheduler runs
            # with --skip-serve-logs; free ports keep any other one off the defaults.
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            LSTMAE_CONFIG=str(config_path),
            LSTMAE_LAKE=str(lake),
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        self.env = env

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(["airflow", "db", "migrate"], env=self.env, cwd=self.home, check=True,
                       capture_output=True, timeout=300)
        for name, command in (
            ("api-server", ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.port)]),
            ("scheduler", ["airflow", "scheduler", "--skip-serve-logs"]),
            ("dag-processor", ["airflow", "dag-processor"]),
        ):
            log = open(self.home / f"{name}.log", "wb")
            self.processes.append(
                subprocess.Popen(command, env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            )
        self._wait_until_healthy()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Task processes forked by the executor share the scheduler's group; make sure none is left.
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def logs(self) -> str:
        parts = []
        for name in ("api-server", "scheduler", "dag-processor"):
            path = self.home / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log (end)\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = "default") -> tuple[int, object]:
        """Call the api-server; return ``(status, parsed JSON or text)``."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def api(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        status, payload = self.request(method, path, body)
        if status != expect:
            raise AssertionError(f"{method} {path} returned {status}, expected {expect}: {payload}")
        return payload

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited with {process.returncode}\n{self.logs()}")
            try:
                status, health = self.request("GET", "/api/v2/monitor/health", token=None)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status, health = None, None
            if status == 200 and health["scheduler"]["status"] == "healthy" and health["dag_processor"]["status"] == "healthy":
                return
            time.sleep(2)
        raise TimeoutError(f"Airflow on {self.url} was not healthy within {START_TIMEOUT} s\n{self.logs()}")

    def login(self) -> None:
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        status, payload = self.request("POST", "/auth/token", {"username": "admin", "password": passwords["admin"]}, token=None)
        assert status in (200, 201), payload
        self.token = payload["access_token"]

    def wait_for_dag(self, dag_id: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            status, _ = self.request("GET", f"/api/v2/dags/{dag_id}")
            if status == 200:
                return
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {START_TIMEOUT} s\n{self.logs()}")

    def wait_for_backfill(self, backfill_id: int, runs: int) -> list[dict]:
        """Wait until the backfill is complete; return its DAG runs."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            backfill = self.api("GET", f"/api/v2/backfills/{backfill_id}")
            listing = self.api("GET", "/api/v2/dags/lstmae_score/dagRuns?run_type=backfill&limit=100")
            dag_runs = listing["dag_runs"]
            if backfill["completed_at"] and len(dag_runs) == runs and all(r["state"] in ("success", "failed") for r in dag_runs):
                return dag_runs
            time.sleep(3)
        raise TimeoutError(f"Backfill {backfill_id} did not complete within {RUN_TIMEOUT} s\n{self.logs()}")

    def wait_for_run(self, dag_id: str, run_id: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise TimeoutError(f"Run {run_id} did not end within {RUN_TIMEOUT} s\n{self.logs()}")


def read_table(lake: Path, table: str) -> pd.DataFrame:
    path = lake / table
    if not path.exists():
        return pd.DataFrame()
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


def part_files(lake: Path) -> list[str]:
    files = []
    for table in OUTPUTS:
        if (lake / table).exists():
            files += [p.relative_to(lake).as_posix() for p in (lake / table).rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(files)


def scores_frame(lake: Path) -> pd.DataFrame:
    frame = read_table(lake, "scores")
    return frame.sort_values(["timestamp", "entity", "group"], kind="stable").reset_index(drop=True)


def assert_same_scores(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(actual) == len(expected)
    for column in ("timestamp", "entity", "group", "model_version", "status", "reason", "is_anomaly"):
        assert actual[column].tolist() == expected[column].tolist(), column
    for column in ("anomaly_score", "score_threshold"):
        np.testing.assert_allclose(actual[column].to_numpy(dtype=float), expected[column].to_numpy(dtype=float),
                                   rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=column)


def prepared_lake(scored_lake, target: Path) -> tuple[Path, Path]:
    """Copy the scored lake without its outputs: curated metrics and the current model remain."""
    shutil.copytree(scored_lake["lake"], target / "lake")
    for table in OUTPUTS + ("alerts",):
        shutil.rmtree(target / "lake" / table, ignore_errors=True)
    config_path = target / "config.yaml"
    config_path.write_text(scored_lake["config_path"].read_text().replace(str(scored_lake["lake"]), str(target / "lake")))
    return target / "lake", config_path


@pytest.fixture(scope="module")
def airflow(scored_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill")
    lake, config_path = prepared_lake(scored_lake, root)
    server = Airflow(root / "airflow", lake, config_path)
    try:
        server.start()
        server.login()
        server.wait_for_dag("lstmae_score")
        server.api("PATCH", "/api/v2/dags/lstmae_score", {"is_paused": False})
        yield server, lake
    finally:
        server.stop()


@pytest.fixture(scope="module")
def one_shot(scored_lake, tmp_path_factory) -> Path:
    """The same three days scored by one call of lstmae.pipeline, without Airflow."""
    from lstmae.pipeline import combine_interval, score_group
    from lstmae.storage import LocalStorage

    root = tmp_path_factory.mktemp("one_shot")
    lake, _ = prepared_lake(scored_lake, root)
    config = dataclasses.replace(scored_lake["config"], lake=str(lake))
    storage = LocalStorage(lake)
    start, end = pd.Timestamp(DAYS[0], tz="UTC"), pd.Timestamp(DAYS[-1], tz="UTC") + pd.Timedelta(days=1)
    score_group(storage, config, "all", start, end)
    combine_interval(storage, config, start, end)
    return lake


def backfill(server: Airflow, reprocess: str) -> tuple[int, list[dict]]:
    body = {
        "dag_id": "lstmae_score",
        "from_date": f"{DAYS[0]}T00:00:00Z",
        "to_date": f"{DAYS[-1]}T00:00:00Z",
        "max_active_runs": 3,
        "run_backwards": False,
        "reprocess_behavior": reprocess,
        "dag_run_conf": {},
    }
    # With SQLite, Airflow returns 503 "Database is locked" while the scheduler
    # writes, and a user clicking again in the UI would simply retry.
    requested_at = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=5)
    for _ in range(40):
        status, created = server.request("POST", "/api/v2/backfills", body)
        if status == 409:
            # An earlier attempt that got a 5xx response may have created the backfill
            # before the lock error; it is then the running backfill. Otherwise
            # the previous backfill is not marked complete yet: try again.
            created = running_backfill(server, requested_at)
            status = 200 if created else status
        if status == 200:
            break
        assert status in (409, 500, 503), f"POST /api/v2/backfills returned {status}: {created}"
        time.sleep(3)
    assert status == 200, f"POST /api/v2/backfills returned {status}: {created}; backfills: {server.api('GET', '/api/v2/backfills?dag_id=lstmae_score&limit=100')}"
    return created["id"], server.wait_for_backfill(created["id"], runs=len(DAYS))


def running_backfill(server: Airflow, since: pd.Timestamp) -> dict | None:
    """The running backfill of lstmae_score created after ``since``, if there is one."""
    listing = server.api("GET", "/api/v2/backfills?dag_id=lstmae_score&limit=100")
    running = [item for item in listing["backfills"]
               if item["completed_at"] is None and pd.Timestamp(item["created_at"]) >= since]
    return running[-1] if running else None


@pytest.fixture(scope="module")
def first_backfill(airflow):
    server, lake = airflow
    backfill_id, runs = backfill(server, "none")
    return {"id": backfill_id, "runs": runs, "scores": scores_frame(lake), "files": part_files(lake)}


def test_backfill_runs_cover_three_days(first_backfill):
    runs = sorted(first_backfill["runs"], key=lambda run: run["data_interval_start"])
    assert [run["state"] for run in runs] == ["success"] * 3
    starts = [pd.Timestamp(run["data_interval_start"]) for run in runs]
    ends = [pd.Timestamp(run["data_interval_end"]) for run in runs]
    assert starts == [pd.Timestamp(day, tz="UTC") for day in DAYS]
    assert ends == [pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) for day in DAYS]


def test_backfill_equals_one_shot_scoring(airflow, first_backfill, one_shot):
    _, lake = airflow
    assert first_backfill["files"] == part_files(one_shot)
    assert_same_scores(first_backfill["scores"], scores_frame(one_shot))
    for table in ("windows", "votes", "anomalies"):
        assert len(read_table(lake, table)) == len(read_table(one_shot, table)), table
    incidents, expected = read_table(lake, "incidents"), read_table(one_shot, "incidents")
    assert sorted(incidents["incident_id"]) == sorted(expected["incident_id"])
    assert set(first_backfill["scores"]["date"]) == set(DAYS)


def test_reprocessing_backfill_changes_nothing(airflow, first_backfill):
    server, lake = airflow
    _, runs = backfill(server, "completed")
    assert [run["state"] for run in runs] == ["success"] * 3
    # Reprocessing clears and reruns the same runs.
    assert sorted(run["dag_run_id"] for run in runs) == sorted(run["dag_run_id"] for run in first_backfill["runs"])
    ended = {run["dag_run_id"]: run["end_date"] for run in first_backfill["runs"]}
    assert all(run["end_date"] > ended[run["dag_run_id"]] for run in runs)
    assert part_files(lake) == first_backfill["files"]
    again = scores_frame(lake)
    assert again.groupby("date").size().to_dict() == first_backfill["scores"].groupby("date").size().to_dict()
    assert_same_scores(again, first_backfill["scores"])


def test_manual_run_without_interval_asks_for_range(airflow, first_backfill):
    server, _ = airflow
    # With SQLite the API returns 500/503 "Database is locked" while the scheduler writes, so retry as a user would.
    for _ in range(20):
        status, run = server.request("POST", "/api/v2/dags/lstmae_score/dagRuns", {"logical_date": None})
        if status not in (500, 503):
            break
        time.sleep(3)
    assert status == 200, f"POST /api/v2/dags/lstmae_score/dagRuns returned {status}: {run}"
    ended = server.wait_for_run("lstmae_score", run["dag_run_id"])
    assert ended["state"] == "failed"
    assert ended["data_interval_start"] is None
    instance = server.api("GET", f"/api/v2/dags/lstmae_score/dagRuns/{run['dag_run_id']}/taskInstances/metrics_ready")
    assert instance["state"] == "failed"
    log = server.api("GET", f"/api/v2/dags/lstmae_score/dagRuns/{run['dag_run_id']}/taskInstances/metrics_ready/logs/1")
    text = json.dumps(log)
    assert "This run has no data interval" in text
    assert "Give a date range" in text


def test_api_server_serves_anomalies_page(airflow, first_backfill):
    server, lake = airflow
    plugins = server.api("GET", "/api/v2/plugins")
    lstmae = [plugin for plugin in plugins["plugins"] if plugin["name"] == "lstmae"]
    assert len(lstmae) == 1
    assert lstmae[0]["external_views"][0]["url_route"] == "lstmae_anomalies"
    assert lstmae[0]["fastapi_apps"][0]["url_prefix"] == "/lstmae"
    status, _ = server.request("GET", "/lstmae/api/incidents", token=None)
    assert status == 401
    listing = server.api("GET", "/lstmae/api/incidents")
    expected = read_table(lake, "incidents")["incident_id"].unique()
    assert sorted(item["incident_id"] for item in listing["incidents"]) == sorted(expected)
    status, page = server.request("GET", "/lstmae/")
    assert status == 200
    assert "<title>lstmae anomalies</title>" in page


SCHEDULE_PROBE = r"""
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

bag = DagBag(dag_folder=sys.argv[1])
result = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}}
if "lstmae_score" in bag.dags:
    # The scheduler and the backfill code work on the serialized DAG.
    dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["lstmae_score"]))
    infos = dag.iter_dagrun_infos_between(pendulum.datetime(2026, 9, 4, tz="UTC"), pendulum.datetime(2026, 9, 6, tz="UTC"))
    condition = getattr(dag.timetable, "asset_condition", None)
    result.update(
        timetable=type(dag.timetable).__name__,
        periodic=dag.timetable.periodic,
        assets=sorted(key.name for key, _ in condition.iter_assets()) if condition is not None else [],
        intervals=[[info.data_interval.start.isoformat(), info.data_interval.end.isoformat()] for info in infos],
    )
print(json.dumps(result))
"""


def probe_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Return this process's environment without Airflow and lstmae settings, for a probe of the DAG files.

    The probe gets its own Airflow home and SQLite database under ``tmp_path``,
    the repository's ``dags/`` and ``settings`` on top.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LSTMAE_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **settings,
    )
    return env


def parse_score_dag(tmp_path: Path, schedule: str) -> dict:
    env = probe_env(tmp_path, LSTMAE_SCORE_SCHEDULE=schedule)
    script = tmp_path / "probe.py"
    script.write_text(SCHEDULE_PROBE)
    completed = subprocess.run([sys.executable, str(script), str(ROOT / "dags" / "lstmae_score.py")],
                               capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_asset_or_time_schedule_is_backfillable(tmp_path):
    parsed = parse_score_dag(tmp_path, "asset_or_time")
    assert parsed["import_errors"] == {}
    assert parsed["timetable"] == "AssetOrTimeSchedule"
    # Backfills need a periodic timetable; AssetOrTimeSchedule takes the flag of its time part.
    assert parsed["periodic"] is True
    assert parsed["assets"] == ["lstmae://metrics"]
    assert parsed["intervals"] == [[f"{day}T00:00:00+00:00", f"{next_day}T00:00:00+00:00"]
                                   for day, next_day in zip(DAYS, DAYS[1:] + ["2026-09-07"])]


def test_unknown_score_schedule_is_import_error(tmp_path):
    parsed = parse_score_dag(tmp_path, "hourly")
    assert len(parsed["import_errors"]) == 1
    message = next(iter(parsed["import_errors"].values()))
    assert "Invalid LSTMAE_SCORE_SCHEDULE 'hourly'" in message


SLOTS_PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
score, train = bag.dags["lstmae_score"], bag.dags["lstmae_train"]
print(json.dumps({
    "score": [score.task_dict["score"].pool, score.task_dict["score"].pool_slots],
    "train": [train.task_dict["train"].pool, train.task_dict["train"].pool_slots],
}))
"""

THREADS_PROBE = r"""
from lstmae.tasks import use_threads
from lstmae.model import configure_tensorflow
use_threads(2)
configure_tensorflow()
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


def test_slot_settings_size_pools_and_threads(tmp_path):
    env = probe_env(tmp_path, LSTMAE_SCORE_SLOTS="3", LSTMAE_TRAIN_SLOTS="2", TF_CPP_MIN_LOG_LEVEL="2")
    (tmp_path / "slots.py").write_text(SLOTS_PROBE)
    parsed = subprocess.run([sys.executable, str(tmp_path / "slots.py"), str(ROOT / "dags")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    slots = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert slots["score"] == ["default_pool", 3]
    assert slots["train"] == ["lstmae_training", 2]
    threads = subprocess.run([sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert threads.returncode == 0, threads.stderr[-3000:]
    assert threads.stdout.split() == ["2", "2"]
