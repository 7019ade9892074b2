"""One function per pipeline step, configured from the environment.

DAG tasks and the CLI call these. Each opens the lake named by the
configuration (``$LSTMAE_CONFIG``, ``$LSTMAE_LAKE``), runs one library step and
returns a small JSON-serialisable dict for XCom.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from lstmae.config import Config, load_config
from lstmae.storage import Storage, open_storage

log = logging.getLogger(__name__)


def context(config_path: str | None = None) -> tuple[Config, Storage]:
    config = load_config(config_path)
    return config, open_storage(config.lake)


def run_ingest(start, end, config_path: str | None = None) -> dict:
    from lstmae.ingest import ingest_interval

    config, storage = context(config_path)
    report = ingest_interval(storage, config, start, end)
    return {
        "start": report.start,
        "end": report.end,
        "objects": report.objects,
        "rows_read": report.rows_read,
        "rows_curated": report.rows_curated,
        "rows_deduplicated": report.rows_deduplicated,
        "rows_quarantined": report.rows_quarantined,
        "objects_quarantined": report.objects_quarantined,
        "quarantined_by_reason": report.quarantined_by_reason,
    }


def group_names(config_path: str | None = None) -> list[str]:
    config, _ = context(config_path)
    return [group.name for group in config.groups]


def training_range(config: Config, end) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The nightly training range: the ``training_days`` whole UTC days before ``end``."""
    end = pd.Timestamp(end).tz_convert("UTC").floor("D")
    return end - pd.Timedelta(days=config.training_days), end


def use_threads(threads: int | None) -> None:
    """Size TensorFlow's thread pools for this process, e.g. from the task's pool slots.

    Sets ``$LSTMAE_THREADS``, which :func:`lstmae.model.configure_tensorflow`
    reads; it has an effect only before TensorFlow runs its first operation
    in the process. ``None`` or 0 keeps TensorFlow's default (every core).
    """
    if threads:
        os.environ["LSTMAE_THREADS"] = str(int(threads))


def run_train(group: str, start, end, promote: bool = True, config_path: str | None = None,
              threads: int | None = None) -> dict:
    from lstmae.training import train_group

    use_threads(threads)
    config, storage = context(config_path)
    return train_group(storage, config, group, start, end, promote=promote)


def pending_retraining(group: str, config_path: str | None = None) -> dict | None:
    """Return the retraining request that context drift left for ``group``, or None."""
    from lstmae.drift import read_request

    _, storage = context(config_path)
    return read_request(storage, group)


def run_requested_training(group: str, promote: bool = True, config_path: str | None = None,
                           threads: int | None = None) -> dict | None:
    """Train ``group`` on the range of its pending drift request, then clear the request.

    The new version passes the same gates as a nightly one before it becomes
    current. The request is cleared only after a version was registered, so a
    failed run leaves it for the next run.

    Returns:
        The training summary with the request under ``"request"``, or None when
        no request is pending.
    """
    from lstmae.drift import clear_request, read_request
    from lstmae.training import train_group

    use_threads(threads)
    config, storage = context(config_path)
    request = read_request(storage, group)
    if request is None:
        return None
    log.info("Retraining group %s on %s..%s: %s", group, request["start"], request["end"], request.get("reason"))
    result = train_group(storage, config, group, request["start"], request["end"], promote=promote)
    clear_request(storage, group)
    result["request"] = {key: request[key] for key in ("reason", "start", "end", "requested_at") if key in request}
    return result


def run_score(group: str, start, end, version: str | None = None, config_path: str | None = None,
              threads: int | None = None) -> dict:
    from lstmae.pipeline import score_group

    if threads:
        from lstmae.model import configure_tensorflow

        use_threads(threads)
        configure_tensorflow(threads=threads)
    config, storage = context(config_path)
    return score_group(storage, config, group, start, end, version=version)


def metrics_ready(start, end, config_path: str | None = None) -> bool:
    """Return True when ingest has written every part of ``[start, end)`` to ``metrics/``.

    Scoring and ingest of the same interval can be scheduled at the same
    time, so the score DAG waits on this before it scores. A day that ingest
    ran for counts as written even when it had no rows.
    """
    from lstmae.ingest import METRICS
    from lstmae.lake import missing_slices

    config, storage = context(config_path)
    missing = missing_slices(storage, METRICS, start, end)
    for low, high in missing[:5]:
        log.info("Curated metrics not written yet for %s .. %s in %s", low.isoformat(), high.isoformat(), storage.uri_of(METRICS))
    return not missing


def run_alerts(start, end, post=None, link: str | None = None, config_path: str | None = None) -> dict:
    """Send alerts for the incidents and SLO violations of ``[start, end)`` that were not alerted yet.

    Args:
        post: callable that posts one Slack payload and raises on failure;
            None only counts the pending alerts.
        link: URL of the anomalies page for the messages (default ``$LSTMAE_ANOMALIES_URL``).
    """
    from lstmae.alerts import incident_alerts, send_alerts, slo_violation_alerts

    config, storage = context(config_path)
    candidates = incident_alerts(storage, start, end) + slo_violation_alerts(storage, start, end)
    # Incidents of one entity and group closer than this are one incident,
    # as lstmae.pipeline.combine_interval merges them.
    merge_gap = config.incident_merge_steps * config.step_delta
    return send_alerts(storage, candidates, post, merge_gap, link=link or os.environ.get("LSTMAE_ANOMALIES_URL"))


def run_registry_action(action: str, version: str | None = None, group: str | None = None,
                        config_path: str | None = None) -> dict:
    """Promote a version, roll back, or list versions: the train DAG's manual actions and ``lstmae models``.

    Args:
        action: ``"promote"`` (needs ``version``), ``"rollback"`` (every
            configured group with an earlier current version, or only
            ``group``) or ``"list"``.
        version: the version to promote.
        group: restrict to one group; for promote, default the group that contains ``version``.

    Returns:
        ``{"action", "groups": {group: pointer or listing}}``.
    """
    config, storage = context(config_path)
    return registry_action(storage, config, action, version=version, group=group)


def registry_action(storage: Storage, config: Config, action: str, version: str | None = None,
                    group: str | None = None) -> dict:
    """:func:`run_registry_action` on an open lake (the CLI passes its own lake and configuration)."""
    from lstmae import registry

    if action == "promote":
        if not version:
            raise ValueError("Action 'promote' needs a version: set the param 'version' (see 'lstmae models list').")
        entry = registry.find_version(storage, version, group)
        return {"action": action, "groups": {entry.group: registry.promote(storage, entry.group, entry.version, reason="manual promotion")}}
    if action == "rollback":
        groups = [group] if group else [g.name for g in config.groups]
        result = {}
        for name in groups:
            try:
                result[name] = registry.rollback(storage, name)
            except registry.RegistryError as error:
                if group:
                    raise
                log.warning("Skipped rollback of group %s: %s", name, error)
        if not result:
            raise registry.RegistryError(f"No group could be rolled back ({', '.join(groups)}): none has an earlier current version.")
        return {"action": action, "groups": result}
    if action == "list":
        groups = [group] if group else registry.list_groups(storage)
        listing = {}
        for name in groups:
            current = registry.current_version(storage, name)
            listing[name] = [registry.summary(entry, current) for entry in registry.list_versions(storage, name)]
        return {"action": action, "groups": listing}
    raise ValueError(f"Unknown registry action {action!r}. Expected one of: promote, rollback, list.")


def run_combine(start, end, config_path: str | None = None) -> dict:
    from lstmae.pipeline import combine_interval

    config, storage = context(config_path)
    return combine_interval(storage, config, start, end)
