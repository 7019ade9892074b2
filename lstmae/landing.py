"""Land exports into ``landing/date=YYYY-MM-DD/``, the way an exporter writes one file per day.

Used by the demo, the simulator and the tests to put exports where the ingest
step looks for them: :func:`land_wide_csv` splits a wide CSV by day and
:func:`land_object` writes one object of any format as it is.
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import pandas as pd

from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)


def land_object(storage: Storage, day, name: str, data: bytes) -> str:
    """Write one export object as ``landing/date=DAY/NAME`` and return its key.

    Args:
        day: the landing day (anything ``pandas.Timestamp`` accepts; only the date is used).
        name: object name, with ``/``-separated subfolders if any
            (``hour=10/a.json.gz``). The storage rejects empty, ``.`` and
            ``..`` segments, so a name cannot leave the day's folder.
        data: the bytes as the exporter wrote them (gzip-compressed or not).
    """
    key = f"landing/date={pd.Timestamp(day).strftime('%Y-%m-%d')}/{name}"
    storage.write_bytes(key, data)
    return key


def land_wide_csv(storage: Storage, path: str | Path, entity: str, timestamp_column: str = "timestamp") -> dict:
    """Split a wide CSV export by UTC day into ``landing/date=D/<entity>.csv.gz``.

    Returns:
        ``{"objects": n, "rows": n, "start": iso, "end": iso}`` where ``end`` is
        one step after the last timestamp.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if timestamp_column not in frame.columns:
        raise ValueError(f"{path}: no {timestamp_column!r} column. Columns: {list(frame.columns)[:10]}.")
    stamps = pd.to_datetime(frame[timestamp_column], utc=True, format="ISO8601")
    days = stamps.dt.floor("D")
    objects = 0
    for day, part in frame.groupby(days, sort=True):
        buffer = io.StringIO()
        part.to_csv(buffer, index=False)
        key = f"landing/date={day.strftime('%Y-%m-%d')}/{escape_segment(entity)}.csv.gz"
        storage.write_bytes(key, gzip.compress(buffer.getvalue().encode(), mtime=0))
        objects += 1
    step = stamps.diff().median() if len(stamps) > 1 else pd.Timedelta(0)
    log.info("Landed %s as %d daily objects (%d rows)", path, objects, len(frame))
    return {
        "objects": objects,
        "rows": len(frame),
        "start": stamps.min().isoformat(),
        "end": (stamps.max() + step).isoformat(),
        "step_seconds": step.total_seconds(),
    }
