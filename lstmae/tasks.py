"""One function per pipeline step, configured from the environment.

DAG tasks and the CLI call these. Each opens the lake named by the
configuration (``$LSTMAE_CONFIG``, ``$LSTMAE_LAKE``), runs one library step and
returns a small JSON-serialisable dict for XCom.
"""

from __future__ import annotations

import logging

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


def run_train(group: str, start, end, promote: bool = True, config_path: str | None = None) -> dict:
    from lstmae.training import train_group

    config, storage = context(config_path)
    return train_group(storage, config, group, start, end, promote=promote)


def run_score(group: str, start, end, version: str | None = None, config_path: str | None = None) -> dict:
    from lstmae.pipeline import score_group

    config, storage = context(config_path)
    return score_group(storage, config, group, start, end, version=version)


def run_combine(start, end, config_path: str | None = None) -> dict:
    from lstmae.pipeline import combine_interval

    config, storage = context(config_path)
    return combine_interval(storage, config, start, end)
