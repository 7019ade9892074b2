"""Atomic publication: slice replacement with other boundaries, overlap resolution by readers, failed local writes."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pytest

from lstmae.lake import missing_slices, read_days, write_companion, write_slice

DAY = pd.Timestamp("2026-09-01", tz="UTC")


def _hours(hours, value: float) -> pa.Table:
    stamps = [DAY + pd.Timedelta(hours=h) for h in hours]
    return pa.table({"timestamp": pa.array(stamps, type=pa.timestamp("ms", tz="UTC")), "value": [value] * len(stamps)})


def _at(hour: int) -> pd.Timestamp:
    return DAY + pd.Timedelta(hours=hour)


def _read(lake, time_column="timestamp") -> list[tuple[int, float]]:
    table = read_days(lake, "scores", DAY, _at(24), time_column=time_column)
    return [(int((row["timestamp"] - DAY.to_pydatetime()).total_seconds() // 3600), row["value"]) for row in table.to_pylist()]


def _parts(lake) -> list[str]:
    return sorted(key.rsplit("/", 1)[-1] for key in lake.list("scores/"))


def test_narrower_slice_keeps_rest_of_wider(lake):
    write_slice(lake, "scores", DAY, DAY, _at(24), _hours(range(24), 1.0), time_column="timestamp")
    write_slice(lake, "scores", DAY, _at(6), _at(18), _hours(range(6, 18), 2.0), time_column="timestamp")
    assert _parts(lake) == ["part-000000-060000.parquet", "part-060000-180000.parquet", "part-180000-240000.parquet"]
    assert _read(lake) == [(h, 1.0) for h in range(6)] + [(h, 2.0) for h in range(6, 18)] + [(h, 1.0) for h in range(18, 24)]
    assert missing_slices(lake, "scores", DAY, _at(24)) == []


def test_partial_overlaps_on_both_sides(lake):
    write_slice(lake, "scores", DAY, DAY, _at(12), _hours(range(12), 1.0), time_column="timestamp")
    write_slice(lake, "scores", DAY, _at(12), _at(24), _hours(range(12, 24), 2.0), time_column="timestamp")
    write_slice(lake, "scores", DAY, _at(6), _at(18), _hours(range(6, 18), 3.0), time_column="timestamp")
    assert _parts(lake) == ["part-000000-060000.parquet", "part-060000-180000.parquet", "part-180000-240000.parquet"]
    assert _read(lake) == [(h, 1.0) for h in range(6)] + [(h, 3.0) for h in range(6, 18)] + [(h, 2.0) for h in range(18, 24)]


def test_wider_slice_replaces_narrower(lake):
    write_slice(lake, "scores", DAY, _at(10), _at(11), _hours([10], 1.0), time_column="timestamp")
    write_slice(lake, "scores", DAY, DAY, _at(24), _hours(range(24), 2.0), time_column="timestamp")
    assert _parts(lake) == ["part-000000-240000.parquet"]
    assert _read(lake) == [(h, 2.0) for h in range(24)]


def test_empty_remainder_still_written(lake):
    write_slice(lake, "scores", DAY, DAY, _at(24), _hours([], 0.0), time_column="timestamp")
    write_slice(lake, "scores", DAY, _at(10), _at(11), _hours([10], 5.0), time_column="timestamp")
    assert _parts(lake) == ["part-000000-100000.parquet", "part-100000-110000.parquet", "part-110000-240000.parquet"]
    assert missing_slices(lake, "scores", DAY, _at(24)) == []
    assert _read(lake) == [(10, 5.0)]


def test_without_time_column_overlap_deleted_whole(lake):
    write_slice(lake, "scores", DAY, DAY, _at(24), _hours(range(24), 1.0))
    write_slice(lake, "scores", DAY, _at(10), _at(11), _hours([10], 2.0))
    assert _parts(lake) == ["part-100000-110000.parquet"]


def test_reader_takes_narrowest_slice(lake):
    # The state a crash leaves between writing the new hour and deleting the old day.
    lake.write_parquet("scores/date=2026-09-01/part-000000-240000.parquet", _hours(range(24), 1.0))
    lake.write_parquet("scores/date=2026-09-01/part-000000-100000.parquet", _hours(range(10), 1.0))
    lake.write_parquet("scores/date=2026-09-01/part-100000-110000.parquet", _hours([10], 9.0))
    assert _read(lake) == [(h, 1.0) for h in range(10)] + [(10, 9.0)] + [(h, 1.0) for h in range(11, 24)]
    assert len(_read(lake, time_column=None)) == 35


def test_reports_replaced_when_overlapping(lake):
    write_companion(lake, "metrics", DAY, _at(10), _at(11), "_ingest_report", b"{}")
    write_companion(lake, "metrics", DAY, _at(12), _at(13), "_ingest_report", b"{}")
    write_companion(lake, "metrics", DAY, DAY, _at(12), "_ingest_report", b"{}")
    assert sorted(k.rsplit("/", 1)[-1] for k in lake.list("metrics/")) == [
        "_ingest_report-000000-120000.json", "_ingest_report-120000-130000.json",
    ]


def test_failed_local_write_keeps_old_object(lake, monkeypatch):
    lake.write_bytes("a/object", b"old")

    def broken_fsync(handle):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left on device"):
        lake.write_bytes("a/object", b"new")
    monkeypatch.undo()
    assert lake.read_bytes("a/object") == b"old"
    assert sorted(p.name for p in (lake.root / "a").iterdir()) == ["object"]


def test_hidden_temporary_files_not_listed(lake):
    lake.write_bytes("a/object", b"x")
    (lake.root / "a" / ".object.123.tmp").write_bytes(b"partial")
    assert lake.list("a/") == ["a/object"]
