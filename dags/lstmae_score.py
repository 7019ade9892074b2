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

The first task waits (rescheduling itself every 5 minutes, for at most 6
hours) until ingest has written every part of the interval, so scoring and
ingest may be scheduled at the same time. With `LSTMAE_SCORE_SCHEDULE=asset_or_time`
in the scheduler's environment, each update of the `metrics` asset by the
ingest DAG also starts a run over the interval that ingest wrote; the
default `time` schedules on time only.

After combining, new incidents and SLO violations are posted to Slack
through the connection `lstmae_slack` (a Slack incoming webhook; set
`LSTMAE_SLACK_CONN_ID` to use another). Each is posted once, even across
reruns and backfills; set the param `send_alerts` to false to skip posting
for a run (for example a backfill of old data). Without the connection the
task only counts the alerts it would send.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable

ANOMALIES = Asset("lstmae://anomalies", extra={"layer": "scores, anomalies and incidents, Parquet by date"})
# The asset that lstmae_ingest updates (assets are identified by their URI).
METRICS = Asset("lstmae://metrics")
# Updated when context drift leaves a retraining request; lstmae_train runs on it.
RETRAIN = Asset("lstmae://requests/retrain")
SLACK_CONN_ID = os.environ.get("LSTMAE_SLACK_CONN_ID", "lstmae_slack")
# Pool slots of each scoring task; when set, TensorFlow in the task uses that
# many threads. Unset: one slot, and TensorFlow uses every core.
SCORE_SLOTS = os.environ.get("LSTMAE_SCORE_SLOTS")


def score_schedule(choice: str):
    """The schedule named by ``LSTMAE_SCORE_SCHEDULE``: ``time`` (default) or ``asset_or_time``."""
    daily = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    if choice == "time":
        return daily
    if choice == "asset_or_time":
        # Still periodic, so backfills keep working.
        return AssetOrTimeSchedule(timetable=daily, assets=[METRICS])
    raise ValueError(f"Invalid LSTMAE_SCORE_SCHEDULE {choice!r}: expected 'time' or 'asset_or_time'.")


def slack_poster():
    """Return the function that posts one payload to the Slack webhook, or None without a connection."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(SLACK_CONN_ID)
    except AirflowNotFoundException:
        return None
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    hook = SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)])
    return hook.send_dict

with DAG(
    dag_id="lstmae_score",
    schedule=score_schedule(os.environ.get("LSTMAE_SCORE_SCHEDULE", "time")),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["lstmae"],
    params={
        "start": Param(None, type=["null", "string"], description="Start of a manual range (ISO 8601, UTC)."),
        "end": Param(None, type=["null", "string"], description="End of a manual range, exclusive."),
        "version": Param(None, type=["null", "string"], description="Pin a model version instead of the current one."),
        "send_alerts": Param(True, type="boolean", description="Post new incidents to Slack (connection lstmae_slack)."),
    },
) as dag:

    @task.sensor(poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def metrics_ready() -> bool:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import metrics_ready

        start, end = interval_from_context(get_current_context())
        return metrics_ready(start.isoformat(), end.isoformat())

    @task
    def groups() -> list[str]:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import group_names

        interval_from_context(get_current_context())  # fail early, with the fix, when there is no interval
        return group_names()

    @task(pool_slots=int(SCORE_SLOTS or 1))
    def score(group: str) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_score

        run = get_current_context()
        start, end = interval_from_context(run)
        threads = int(SCORE_SLOTS) if SCORE_SLOTS else None
        return run_score(group, start.isoformat(), end.isoformat(), version=run["params"].get("version"), threads=threads)

    @task(outlets=[ANOMALIES])
    def combine(summaries: list[dict]) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_combine

        start, end = interval_from_context(get_current_context())
        result = run_combine(start.isoformat(), end.isoformat())
        # A slice fetches the mapped results in one request; iterating would also
        # ask for the item after the last one and log "XCom not found".
        result["groups"] = list(summaries[:])
        return result

    @task
    def alert(combined: dict) -> dict:
        from lstmae.intervals import interval_from_context
        from lstmae.tasks import run_alerts

        run = get_current_context()
        start, end = interval_from_context(run)
        post = slack_poster() if run["params"].get("send_alerts", True) else None
        return run_alerts(start.isoformat(), end.isoformat(), post=post)

    @task.short_circuit
    def drift_found(combined: dict) -> bool:
        return bool(combined.get("retrain_requests"))

    @task(outlets=[RETRAIN])
    def request_retraining(combined: dict) -> list:
        # The requests are already in the lake (requests/retrain/<group>.json);
        # this task's asset event starts lstmae_train, which reads them.
        return list(combined.get("retrain_requests") or [])

    combined = combine(score.expand(group=metrics_ready() >> groups()))
    alert(combined)
    drift_found(combined) >> request_retraining(combined)
