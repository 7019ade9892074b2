"""
### lstmae_train

Nightly retraining. For every metric group, reads the last `training_days`
days of curated metrics before the end of the data interval, holds out the
last `validation_fraction` by time, fits the scaler and the LSTM autoencoder,
computes thresholds on the held-out errors and registers a model version.
The version becomes *current* only when it passes the gates (finite losses,
enough windows, validation error no worse than the current model's).

Params of a manual run: `start`/`end` to train on another range, `promote`
to register without promoting.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk import CronDataIntervalTimetable

MODEL = Asset("lstmae://models", extra={"layer": "model registry"})

with DAG(
    dag_id="lstmae_train",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lstmae"],
    params={
        "start": Param(None, type=["null", "string"], description="Start of the training range (ISO 8601, UTC)."),
        "end": Param(None, type=["null", "string"], description="End of the training range, exclusive."),
        "promote": Param(True, type="boolean", description="Promote the new version when it passes the gates."),
    },
) as dag:

    @task
    def groups() -> list[str]:
        from lstmae.tasks import group_names

        return group_names()

    @task(pool="lstmae_training", outlets=[MODEL])
    def train(group: str) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import context, run_train, training_range

        run = get_current_context()
        params = run["params"]
        if params.get("start") or params.get("end"):
            start, end = interval_from_context(run)
        else:
            _, end = interval_from_context(run)
            start, end = training_range(context()[0], end)
        return run_train(group, start.isoformat(), end.isoformat(), promote=bool(params.get("promote", True)))

    train.expand(group=groups())
