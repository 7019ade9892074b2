"""
### lstmae_ingest

Reads the metric exports that landed in `landing/date=YYYY-MM-DD/` for the
run's data interval, validates and normalises them, and replaces the curated
Parquet partitions `metrics/date=YYYY-MM-DD/`. Rows that cannot be used go to
`quarantine/` with their reason; the counts are in the task log and in
`metrics/date=.../_ingest_report-*.json`.

Runs daily for the previous UTC day. For a manual run over another range, set
the params `start` and `end` (ISO 8601, UTC) or use Trigger -> Backfill.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk import CronDataIntervalTimetable

METRICS = Asset("lstmae://metrics", extra={"layer": "curated metrics, Parquet by date"})

with DAG(
    dag_id="lstmae_ingest",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["lstmae"],
    params={
        "start": Param(None, type=["null", "string"], description="Start of a manual range (ISO 8601, UTC)."),
        "end": Param(None, type=["null", "string"], description="End of a manual range, exclusive."),
    },
) as dag:

    @task(outlets=[METRICS])
    def ingest() -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_ingest

        run = get_current_context()
        start, end = interval_from_context(run)
        report = run_ingest(start.isoformat(), end.isoformat())
        # An asset-triggered score run reads its interval from this extra.
        run["outlet_events"][METRICS].extra = {"start": start.isoformat(), "end": end.isoformat()}
        return report

    ingest()
