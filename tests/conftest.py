"""Fixtures shared by the test suite: real data, lakes, and an S3 server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """Return a path under ../shared/data; fail under CI and skip elsewhere when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if path.exists():
        return path
    message = f"Real data {path} is missing: place ../shared/data beside the repository."
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def omi1() -> Path:
    return require_shared_data("asd", "omi-1")


@pytest.fixture
def lake(tmp_path):
    from lstmae.storage import LocalStorage

    return LocalStorage(tmp_path / "lake")


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 with dummy credentials; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_lake(moto_server):
    """An empty bucket on the moto server, reset after the test; yields an S3Storage."""
    import urllib.request

    from lstmae.storage import S3Storage, make_s3_client

    client = make_s3_client(moto_server)
    client.create_bucket(Bucket="lstmae-test")
    try:
        yield S3Storage("s3://lstmae-test/lake", client=client)
    finally:
        request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


# A small scored lake shared by the operations tests. Two hosts report three
# metrics on a 5-minute grid, host-a has a two-hour cpu spike and host-b one
# unparseable value. A tiny model is trained on three days, then three
# further days are scored and combined one day at a time. The spike spans two
# 12-point windows, so with drift_windows 2 the run writes every output
# table, drift events and quarantine included.
SYNTHETIC_START = "2026-09-01T00:00:00Z"
SYNTHETIC_SPIKE = ("2026-09-05T10:00:00Z", "2026-09-05T12:00:00Z")
SYNTHETIC_BAD_VALUE = "2026-09-04T06:00:00Z"
SYNTHETIC_CONFIG = {
    "step": "5min",
    "drift_windows": 2,
    # Six steps keep the noise flags of the tiny model apart from the spike's incident.
    "incident_merge_steps": 6,
    # Tests of alerts and incident listings count the tiny model's short noise incidents.
    "min_incident_points": 1,
    "groups": [{"name": "all", "timesteps": 12, "train_stride": 6, "units": [8, 8, 8], "epochs": 2, "batch_size": 32}],
}


def write_synthetic_export(path: Path, seed: int, days: int = 6, spike: tuple[str, str] | None = None,
                           bad_value_at: str | None = None) -> Path:
    """Write a wide CSV export (timestamp, cpu, memory, disk) with daily cycles and noise.

    ``spike`` adds 0.6 to cpu in ``[start, end)``; ``bad_value_at`` writes the
    text ``broken`` as the disk value at that timestamp.
    """
    import numpy as np
    import pandas as pd

    index = pd.date_range(SYNTHETIC_START, periods=days * 288, freq="5min")
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * (index.hour * 60 + index.minute) / 1440
    frame = pd.DataFrame(
        {
            "timestamp": index.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cpu": 0.5 + 0.2 * np.sin(phase) + rng.normal(0, 0.02, len(index)),
            "memory": 0.6 + 0.1 * np.cos(phase) + rng.normal(0, 0.02, len(index)),
            "disk": 0.3 + rng.normal(0, 0.02, len(index)),
        }
    )
    if spike:
        inside = (index >= pd.Timestamp(spike[0])) & (index < pd.Timestamp(spike[1]))
        frame.loc[inside, "cpu"] += 0.6
    if bad_value_at:
        frame["disk"] = frame["disk"].astype(object)
        frame.loc[index == pd.Timestamp(bad_value_at), "disk"] = "broken"
    frame.to_csv(path, index=False)
    return path


def build_synthetic_lake(root: Path, train_days: int = 3, score_days: int = 3, epochs: int = 2) -> dict:
    """Land, ingest, train and score the synthetic fleet under ``root``; return paths and names."""
    import inspect

    import pandas as pd
    import yaml

    from lstmae.config import config_from_dict
    from lstmae.ingest import ingest_interval
    from lstmae.landing import land_wide_csv
    from lstmae.pipeline import combine_interval, score_group
    from lstmae.storage import LocalStorage
    from lstmae.training import train_group

    root.mkdir(parents=True, exist_ok=True)
    lake_path = root / "lake"
    data = dict(SYNTHETIC_CONFIG, lake=str(lake_path))
    data["groups"] = [dict(data["groups"][0], epochs=epochs)]
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = config_from_dict(data)
    storage = LocalStorage(lake_path)
    days = train_days + score_days
    for entity, seed, spike, bad in (("host-a", 1, SYNTHETIC_SPIKE, None), ("host-b", 2, None, SYNTHETIC_BAD_VALUE)):
        land_wide_csv(storage, write_synthetic_export(root / f"{entity}.csv", seed, days, spike, bad), entity)
    first = pd.Timestamp(SYNTHETIC_START)
    ingest_interval(storage, config, first, first + pd.Timedelta(days=days))
    split = first + pd.Timedelta(days=train_days)
    trained = train_group(storage, config, "all", first, split, plots=False)
    score_days_list = [split + pd.Timedelta(days=i) for i in range(score_days)]
    # Incident plots cost time and are not what these tests look at.
    combine_options = {"plots": False} if "plots" in inspect.signature(combine_interval).parameters else {}
    for day in score_days_list:
        score_group(storage, config, "all", day, day + pd.Timedelta(days=1))
        combine_interval(storage, config, day, day + pd.Timedelta(days=1), **combine_options)
    return {
        "root": root,
        "lake": lake_path,
        "config_path": config_path,
        "config": config,
        "storage": storage,
        "version": trained["version"],
        "train_range": (first, split),
        "score_days": score_days_list,
    }


@pytest.fixture(scope="session")
def scored_lake(tmp_path_factory) -> dict:
    """The synthetic lake after ingest, training and scoring; read-only for tests (copy it to change it)."""
    return build_synthetic_lake(tmp_path_factory.mktemp("scored"))


# Runs DAG runs with DAG.test() in a fresh Python process: Airflow reads its
# configuration at import, so the Airflow home, lake and connections of a test
# must be in the environment before that import. Prints one JSON line per run.
DAG_TEST_RUNNER = r"""
import json, sys
import pendulum
from airflow.utils import db
from airflow.dag_processing.dagbag import DagBag

db.initdb()
bag = DagBag(dag_folder=sys.argv[1])
if bag.import_errors:
    raise SystemExit(f"DAG import errors: {bag.import_errors}")
for request in json.loads(sys.argv[2]):
    dag = bag.dags[request["dag_id"]]
    params = {**dict(dag.params), **request.get("conf", {})}
    date = pendulum.parse(request["logical_date"]) if request.get("logical_date") else None
    run = dag.test(logical_date=date, run_conf=params)
    tasks = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
    print("DAG-RUN " + json.dumps({"dag_id": dag.dag_id, "state": str(run.state), "tasks": tasks}), flush=True)
"""


def run_dags_in_subprocess(home: Path, runs: list[dict], env: dict[str, str], timeout: float = 600) -> list[dict]:
    """Run ``runs`` (``{"dag_id", "conf", "logical_date"}``) with DAG.test() under the Airflow home ``home``.

    Returns one ``{"dag_id", "state", "tasks": {"task_id[map_index]": state}}`` per run;
    raises with the process output when the process fails.
    """
    import json
    import subprocess
    import sys

    home.mkdir(parents=True, exist_ok=True)
    script = home / "run_dags.py"
    script.write_text(DAG_TEST_RUNNER)
    base = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LSTMAE_"))}
    base.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    base.update(env)
    completed = subprocess.run(
        [sys.executable, str(script), str(ROOT / "dags"), json.dumps(runs)],
        capture_output=True, text=True, env=base, cwd=home, timeout=timeout,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"DAG runs failed with exit code {completed.returncode}:\n{output[-6000:]}")
    results = [json.loads(line[len("DAG-RUN "):]) for line in completed.stdout.splitlines() if line.startswith("DAG-RUN ")]
    if len(results) != len(runs):
        raise RuntimeError(f"Expected {len(runs)} DAG runs, got {len(results)}:\n{output[-6000:]}")
    for result in results:
        result["output"] = output
    return results


@pytest.fixture
def run_dags():
    """:func:`run_dags_in_subprocess`, for tests that run DAGs with DAG.test()."""
    return run_dags_in_subprocess
