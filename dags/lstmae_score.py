"""
### lstmae_score

Scores the run's data interval with each group's current model (or the
version pinned in the params), reading enough earlier rows that the first
points of the interval get a score. Writes `scores/` and `windows/` per
group, then combines the groups into `votes/`, `anomalies/` and `incidents/`.
Rerunning an interval replaces its partitions.

Daily for the previous UTC day. Backfill a range from the UI with
Trigger -> Backfill; a manual run needs a logical date or the params
`start` and `end`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk import CronDataIntervalTimetable

ANOMALIES = Asset("lstmae://anomalies", extra={"layer": "scores, anomalies and incidents, Parquet by date"})

with DAG(
    dag_id="lstmae_score",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["lstmae"],
    params={
        "start": Param(None, type=["null", "string"], description="Start of a manual range (ISO 8601, UTC)."),
        "end": Param(None, type=["null", "string"], description="End of a manual range, exclusive."),
        "version": Param(None, type=["null", "string"], description="Pin a model version instead of the current one."),
    },
) as dag:

    @task
    def groups() -> list[str]:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import group_names

        interval_from_context(get_current_context())  # fail early, with the fix, when there is no interval
        return group_names()

    @task
    def score(group: str) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_score

        run = get_current_context()
        start, end = interval_from_context(run)
        return run_score(group, start.isoformat(), end.isoformat(), version=run["params"].get("version"))

    @task(outlets=[ANOMALIES])
    def combine(summaries: list[dict]) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_combine

        start, end = interval_from_context(get_current_context())
        result = run_combine(start.isoformat(), end.isoformat())
        result["groups"] = list(summaries)
        return result

    combine(score.expand(group=groups()))
