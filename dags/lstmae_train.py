"""
### lstmae_train

Nightly retraining. For every metric group, reads the last `training_days`
days of curated metrics before the end of the data interval, holds out the
last `validation_fraction` by time, fits the scaler and the LSTM autoencoder,
computes thresholds on the held-out errors and registers a model version.
The version becomes *current* only when it passes the gates (finite losses,
enough windows, validation error no worse than the current model's).

Params of a manual run: `start`/`end` to train on another range, `promote`
to register without promoting. The param `action` turns a manual run into a
registry action instead of training: `promote` makes the param `version`
current, `rollback` makes the previous current version current again (for
the param `group`, or for every group when it is empty).

Context drift (many consecutive anomalous windows in scoring) leaves a
retraining request in the lake and updates the asset
`lstmae://requests/retrain`, which starts this DAG at once. A group with a
pending request is trained on the range the request names (the most recent
days), and the request is cleared once the version is registered; the new
version passes the same gates before it becomes current.

Training runs in the pool `lstmae_training`, so that it cannot take every
worker slot from scoring; create it once with
`airflow pools set lstmae_training 1 "lstmae model training"`. Each training
task takes `LSTMAE_TRAIN_SLOTS` slots of it (default 1); when that variable
is set, TensorFlow in the task uses as many threads.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable

MODEL = Asset("lstmae://models", extra={"layer": "model registry"})
RETRAIN = Asset("lstmae://requests/retrain")
TRAIN_SLOTS = os.environ.get("LSTMAE_TRAIN_SLOTS")

with DAG(
    dag_id="lstmae_train",
    # Nightly, and at once when scoring requests retraining after context drift.
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"), assets=[RETRAIN]),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lstmae"],
    params={
        "start": Param(None, type=["null", "string"], description="Start of the training range (ISO 8601, UTC)."),
        "end": Param(None, type=["null", "string"], description="End of the training range, exclusive."),
        "promote": Param(True, type="boolean", description="Promote the new version when it passes the gates."),
        "action": Param("train", enum=["train", "promote", "rollback"],
                        description="train: train every group; promote: make 'version' current; rollback: restore the previous current version."),
        "version": Param(None, type=["null", "string"], description="Model version for the action 'promote' (see lstmae models list)."),
        "group": Param(None, type=["null", "string"], description="Restrict 'promote' or 'rollback' to one group."),
    },
) as dag:

    @task.branch
    def choose_action() -> str:
        return "groups" if get_current_context()["params"].get("action", "train") == "train" else "registry_action"

    @task(outlets=[MODEL])
    def registry_action() -> dict:
        from lstmae.tasks import run_registry_action

        params = get_current_context()["params"]
        return run_registry_action(params["action"], version=params.get("version"), group=params.get("group"))

    @task
    def groups() -> list[str]:
        from lstmae.tasks import group_names

        return group_names()

    @task(pool="lstmae_training", pool_slots=int(TRAIN_SLOTS or 1), outlets=[MODEL])
    def train(group: str) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from lstmae.intervals import interval_from_context
        from lstmae.tasks import context, pending_retraining, run_requested_training, run_train, training_range

        run = get_current_context()
        params = run["params"]
        promote = bool(params.get("promote", True))
        threads = int(TRAIN_SLOTS) if TRAIN_SLOTS else None
        if params.get("start") or params.get("end"):
            start, end = interval_from_context(run)
        elif pending_retraining(group):
            return run_requested_training(group, promote=promote, threads=threads)
        elif run["dag_run"].run_type == "asset_triggered":
            raise AirflowSkipException(f"No retraining request is pending for group {group!r}.")
        else:
            _, end = interval_from_context(run)
            start, end = training_range(context()[0], end)
        return run_train(group, start.isoformat(), end.isoformat(), promote=promote, threads=threads)

    configured_groups = groups()
    choose_action() >> [configured_groups, registry_action()]
    train.expand(group=configured_groups)
