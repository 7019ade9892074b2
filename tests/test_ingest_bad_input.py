"""Bad input, each case with its exact outcome: curated, deduplicated or quarantined with the reason."""

from __future__ import annotations

import gzip
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, EPOCH, NEXT_DAY, curated_rows, gz, ingest, make_config, quarantined, values  # noqa: E402

from lstmae import schema  # noqa: E402
from lstmae.config import GroupConfig, ThresholdConfig, config_from_dict  # noqa: E402
from lstmae.formats.common import (  # noqa: E402
    AMBIGUOUS_LOCAL_TIME,
    INFINITE_VALUE,
    MISSING_TIMESTAMP,
    NAIVE_TIMESTAMP,
    NONEXISTENT_LOCAL_TIME,
    NOT_A_NUMBER,
    NOT_IN_LANDING_DAY,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
)
from lstmae.frames import group_frames  # noqa: E402
from lstmae.ingest import METRICS, TEMPORARY_OBJECT, read_curated  # noqa: E402
from lstmae.landing import land_object  # noqa: E402
from lstmae.scaler import Scaler  # noqa: E402
from lstmae.thresholds import fit_thresholds  # noqa: E402

SPRING = pd.Timestamp("2021-03-28", tz="UTC")  # Europe/Berlin skips 02:00-03:00 local time
AUTUMN = pd.Timestamp("2021-10-31", tz="UTC")  # Europe/Berlin repeats 02:00-03:00 local time
DAY_AFTER = lambda day: day + pd.Timedelta(days=1)  # noqa: E731


def _long(rows: list[str]) -> bytes:
    return ("timestamp,entity,metric,value\n" + "\n".join(rows) + "\n").encode()


# Timestamps


def test_dst_gap_local_time_is_quarantined(lake):
    rows = ["2021-03-28 01:30:00,n1,cpu,1", "2021-03-28 02:30:00,n1,cpu,2", "2021-03-28 03:30:00,n1,cpu,3"]
    land_object(lake, SPRING, "local.csv", _long(rows))
    report = ingest(lake, make_config(timezone="Europe/Berlin"), SPRING, DAY_AFTER(SPRING))
    assert values(lake, SPRING, DAY_AFTER(SPRING)) == [
        ("2021-03-28T00:30:00.000Z", "n1", "cpu", 1.0),
        ("2021-03-28T01:30:00.000Z", "n1", "cpu", 3.0),
    ]
    assert quarantined(lake, SPRING) == [("local.csv", 3, NONEXISTENT_LOCAL_TIME, "2021-03-28 02:30:00,n1,cpu,2")]
    assert report.rows_quarantined == 1


def test_naive_time_without_zone_names_value(lake):
    land_object(lake, DAY, "naive.csv", _long(["2026-09-01 10:00:00,n1,cpu,1", "2026-09-01T10:05:00Z,n1,cpu,2"]))
    report = ingest(lake)
    assert values(lake) == [("2026-09-01T10:05:00.000Z", "n1", "cpu", 2.0)]
    assert quarantined(lake) == [("naive.csv", 2, NAIVE_TIMESTAMP, "2026-09-01 10:00:00,n1,cpu,1")]
    assert report.quarantined_by_reason == {NAIVE_TIMESTAMP: 1}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("reject", None), ("earliest", "2021-10-31T00:30:00.000Z"), ("latest", "2021-10-31T01:30:00.000Z")],
)
def test_dst_overlap_follows_ambiguous_time(lake, choice, expected):
    land_object(lake, AUTUMN, "local.csv", _long(["2021-10-31 02:30:00,n1,cpu,1"]))
    report = ingest(lake, make_config(timezone="Europe/Berlin", ambiguous_time=choice), AUTUMN, DAY_AFTER(AUTUMN))
    rows = values(lake, AUTUMN, DAY_AFTER(AUTUMN))
    if expected is None:
        assert rows == []
        assert report.quarantined_by_reason == {AMBIGUOUS_LOCAL_TIME: 1}
    else:
        assert rows == [(expected, "n1", "cpu", 1.0)]
        assert report.rows_quarantined == 0


def test_offsets_changing_within_file(lake):
    rows = ["2021-10-31T02:30:00+02:00,n1,cpu,1", "2021-10-31T02:30:00+01:00,n1,cpu,2", "2021-10-31T03:00:00+0100,n1,cpu,3"]
    land_object(lake, AUTUMN, "offsets.csv", _long(rows))
    ingest(lake, start=AUTUMN, end=DAY_AFTER(AUTUMN))
    assert values(lake, AUTUMN, DAY_AFTER(AUTUMN)) == [
        ("2021-10-31T00:30:00.000Z", "n1", "cpu", 1.0),
        ("2021-10-31T01:30:00.000Z", "n1", "cpu", 2.0),
        ("2021-10-31T02:00:00.000Z", "n1", "cpu", 3.0),
    ]


def test_epoch_units_detected_by_magnitude(lake):
    rows = [
        f"{EPOCH},n1,cpu,1",  # seconds
        f"{(EPOCH + 300) * 1000},n1,cpu,2",  # milliseconds
        f"{(EPOCH + 600) * 1_000_000},n1,cpu,3",  # microseconds
        f"{(EPOCH + 900) * 1_000_000_000},n1,cpu,4",  # nanoseconds
        f"{EPOCH + 1200}.25,n1,cpu,5",  # fractional seconds
    ]
    land_object(lake, DAY, "epochs.csv", _long(rows))
    ingest(lake)
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "n1", "cpu", 1.0),
        ("2026-09-01T00:05:00.000Z", "n1", "cpu", 2.0),
        ("2026-09-01T00:10:00.000Z", "n1", "cpu", 3.0),
        ("2026-09-01T00:15:00.000Z", "n1", "cpu", 4.0),
        ("2026-09-01T00:20:00.250Z", "n1", "cpu", 5.0),
    ]


def test_epoch_unit_configured_rejects_other_units(lake):
    land_object(lake, DAY, "epochs.csv", _long([f"{EPOCH},n1,cpu,1", f"{EPOCH * 1000},n1,cpu,2"]))
    report = ingest(lake, make_config(epoch_unit="s"))
    assert values(lake) == [("2026-09-01T00:00:00.000Z", "n1", "cpu", 1.0)]
    assert report.quarantined_by_reason == {TIMESTAMP_OUT_OF_RANGE: 1}


def test_unparseable_and_missing_timestamps(lake):
    rows = ["yesterday,n1,cpu,1", "2026-13-01T00:00:00Z,n1,cpu,2", ",n1,cpu,3", "2026-09-01T00:00:00Z,n1,cpu,4"]
    land_object(lake, DAY, "bad-times.csv", _long(rows))
    report = ingest(lake)
    assert values(lake) == [("2026-09-01T00:00:00.000Z", "n1", "cpu", 4.0)]
    assert quarantined(lake) == [
        ("bad-times.csv", 2, UNPARSEABLE_TIMESTAMP, "yesterday,n1,cpu,1"),
        ("bad-times.csv", 3, UNPARSEABLE_TIMESTAMP, "2026-13-01T00:00:00Z,n1,cpu,2"),
        ("bad-times.csv", 4, MISSING_TIMESTAMP, ",n1,cpu,3"),
    ]
    assert report.rows_read == 4


def test_timestamp_format_configured(lake):
    land_object(lake, DAY, "german.csv", _long(["01.09.2026 02:05,n1,cpu,1"]))
    ingest(lake, make_config(timezone="Europe/Berlin", timestamp_format="%d.%m.%Y %H:%M"))
    assert values(lake) == [("2026-09-01T00:05:00.000Z", "n1", "cpu", 1.0)]


# Duplicates and alignment


def test_duplicates_keep_last_and_count(lake):
    land_object(lake, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1", "2026-09-01T00:00:00Z,n1,cpu,2", "2026-09-01T00:05:00Z,n1,cpu,3"]))
    land_object(lake, DAY, "b.csv", _long(["2026-09-01T00:05:00Z,n1,cpu,30", "2026-09-01T00:00:00+00:00,n1,cpu,20"]))
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "n1", "cpu", 20.0),
        ("2026-09-01T00:05:00.000Z", "n1", "cpu", 30.0),
    ]
    assert [row[5].rsplit("/", 1)[-1] for row in rows] == ["b.csv", "b.csv"]
    assert report.rows_read == 5
    assert report.rows_deduplicated == 3
    assert report.rows_curated == 2


def test_misaligned_hosts_align_on_grid(lake):
    # host a: every minute at hh:mm:20; host b: every 5 minutes, two minutes late.
    rows = [f"{(DAY + pd.Timedelta(minutes=m, seconds=20)).isoformat()},a,cpu,{m}" for m in range(10)]
    rows += [f"{(DAY + pd.Timedelta(minutes=5 * k + 2)).isoformat()},b,cpu,{100 + k}" for k in range(2)]
    land_object(lake, DAY, "mixed.csv", _long(rows))
    ingest(lake)
    config = config_from_dict({"step": "5min", "max_gap_steps": 0})
    curated = read_curated(lake, DAY, NEXT_DAY)
    frames = group_frames(curated, GroupConfig(), ["cpu"], config, DAY, DAY + pd.Timedelta(minutes=15))
    # Rounded to the nearest grid point: a's minutes 0-2 -> 00:00, 3-7 -> 00:05, 8-9 -> 00:10.
    assert frames["a"]["cpu"].tolist() == [1.0, 5.0, 8.5]
    assert frames["b"]["cpu"].tolist()[:2] == [100.0, 101.0]
    assert np.isnan(frames["b"]["cpu"].tolist()[2])
    assert list(frames["a"].index) == list(frames["b"].index)


# Values


def test_value_spellings(lake):
    rows = [
        "2026-09-01T00:00:00Z,n1,cpu,NaN",
        "2026-09-01T00:01:00Z,n1,cpu,+Inf",
        "2026-09-01T00:02:00Z,n1,cpu,",
        '2026-09-01T00:03:00Z,n1,cpu,"1,234.5"',
        '2026-09-01T00:04:00Z,n1,cpu,"1,5"',
        "2026-09-01T00:05:00Z,n1,cpu, 7 ",
        "2026-09-01T00:06:00Z,n1,cpu,-Infinity",
        "2026-09-01T00:07:00Z,n1,cpu,12%",
        "2026-09-01T00:08:00Z,n1,cpu,1e3",
    ]
    land_object(lake, DAY, "values.csv", _long(rows))
    report = ingest(lake)
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "n1", "cpu", None),
        ("2026-09-01T00:02:00.000Z", "n1", "cpu", None),
        ("2026-09-01T00:03:00.000Z", "n1", "cpu", 1234.5),
        ("2026-09-01T00:05:00.000Z", "n1", "cpu", 7.0),
        ("2026-09-01T00:08:00.000Z", "n1", "cpu", 1000.0),
    ]
    assert [(line, reason) for _, line, reason, _ in quarantined(lake)] == [
        (3, INFINITE_VALUE), (6, NOT_A_NUMBER), (8, INFINITE_VALUE), (9, NOT_A_NUMBER),
    ]
    assert report.rows_read == 9


def test_constant_and_zero_columns_scale_to_zero():
    values_ = np.array([[5.0, 0.0, 1.0], [5.0, 0.0, 3.0], [5.0, 0.0, 5.0]])
    scaler = Scaler.fit(["constant", "zero", "moving"], values_)
    scaled = scaler.transform(values_)
    assert scaled[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert scaled[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert not np.isnan(scaled).any()
    assert scaler.std[:2] == (1.0, 1.0)


@pytest.mark.parametrize("method", ["reference", "quantile"])
def test_zero_errors_get_threshold_floor(method):
    errors = np.zeros((20, 2))
    thresholds = fit_thresholds(["constant", "zero"], errors, ThresholdConfig(method=method, min_threshold=1e-6))
    assert thresholds.feature_thresholds == (1e-6, 1e-6)
    assert all(value > 0 for value in thresholds.feature_thresholds)


# Schema drift and empty days


def test_schema_drift_keeps_fixed_schema(lake):
    day2, day3, day4 = (DAY + pd.Timedelta(days=k) for k in (1, 2, 3))
    land_object(lake, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,old-host,cpu,5", "2026-09-01T00:00:00Z,old-host,mem,7"]))
    land_object(lake, day2, "a.csv", _long(["2026-09-02T00:00:00Z,new-host,cpu,5.5"]))
    land_object(lake, day3, "wide-host.csv", b"timestamp,cpu,spare\n2026-09-03T00:00:00Z,0.5,\n2026-09-03T00:05:00Z,0.25,\n")
    report = ingest(lake, start=DAY, end=day4 + pd.Timedelta(days=1))
    assert report.partitions == {"2026-09-01": 2, "2026-09-02": 1, "2026-09-03": 4, "2026-09-04": 0}
    for day in (DAY, day2, day3, day4):
        path = lake.root / METRICS / f"date={day:%Y-%m-%d}" / "part-000000-240000.parquet"
        assert pq.read_schema(path).equals(schema.CURATED)
    assert values(lake, day3, day4)[2:] == [
        ("2026-09-03T00:00:00.000Z", "wide-host", "spare", None),
        ("2026-09-03T00:05:00.000Z", "wide-host", "spare", None),
    ]
    assert pq.read_table(lake.root / METRICS / "date=2026-09-04" / "part-000000-240000.parquet").num_rows == 0


# Objects that are not what they claim


def test_broken_objects_quarantined_rest_ingests(lake):
    good = gz(_long(["2026-09-01T00:00:00Z,n1,cpu,1"]))
    land_object(lake, DAY, "good.csv.gz", good)
    land_object(lake, DAY, "truncated.csv.gz", good[: len(good) // 2])
    land_object(lake, DAY, "error-page.csv", b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>\n")
    land_object(lake, DAY, "empty.csv", b"")
    land_object(lake, DAY, "_temporary/0/_temporary/attempt_01/part-0000.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,9"]))
    land_object(lake, DAY, "_SUCCESS", b"")
    report = ingest(lake)
    assert values(lake) == [("2026-09-01T00:00:00.000Z", "n1", "cpu", 1.0)]
    assert report.objects == 6
    assert report.objects_quarantined_by_reason == {
        "corrupt or truncated gzip": 1,
        "HTML or XML page instead of an export": 1,
        "empty object": 1,
        TEMPORARY_OBJECT: 1,
    }
    assert report.skipped_objects == [{"key": "landing/date=2026-09-01/_SUCCESS", "reason": "marker object, not an export"}]
    entries = {source: (line, reason) for source, line, reason, _ in quarantined(lake)}
    assert entries == {
        "truncated.csv.gz": (None, "corrupt or truncated gzip"),
        "error-page.csv": (None, "HTML or XML page instead of an export"),
        "empty.csv": (None, "empty object"),
        "part-0000.csv": (None, TEMPORARY_OBJECT),
    }


def test_malformed_csv_records_quarantined(lake):
    text = "timestamp,cpu,mem\n2026-09-01T00:00:00Z,1,2\n2026-09-01T00:05:00Z,3\n2026-09-01T00:10:00Z,5,6,7\n2026-09-01T00:15:00Z,8,9\n"
    land_object(lake, DAY, "n1.csv", text.encode())
    report = ingest(lake)
    assert [row[2:] for row in values(lake)] == [("cpu", 1.0), ("cpu", 8.0), ("mem", 2.0), ("mem", 9.0)]
    assert [(line, reason) for _, line, reason, _ in quarantined(lake)] == [
        (3, "malformed record: expected 3 fields, found 2"), (3, "malformed record: expected 3 fields, found 2"),
        (4, "malformed record: expected 3 fields, found 4"), (4, "malformed record: expected 3 fields, found 4"),
    ]
    assert report.rows_read == 8


# The report


def test_report_next_to_partition_and_in_log(lake, caplog):
    land_object(lake, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1", "2026-09-01T00:00:00Z,n1,cpu,2", "x,n1,cpu,3"]))
    land_object(lake, DAY, "b.csv", b"<html>oops</html>")
    with caplog.at_level(logging.INFO, logger="lstmae.ingest"):
        report = ingest(lake)
    saved = json.loads((lake.root / METRICS / "date=2026-09-01" / "_ingest_report-000000-240000.json").read_text())
    assert saved == report.to_dict()
    assert (saved["rows_read"], saved["rows_curated"], saved["rows_deduplicated"], saved["rows_quarantined"]) == (3, 1, 1, 1)
    assert saved["rows_read"] == saved["rows_curated"] + saved["rows_deduplicated"] + saved["rows_quarantined"]
    assert saved["quarantined_by_reason"] == {UNPARSEABLE_TIMESTAMP: 1}
    assert saved["objects_quarantined"] == 1
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ingest report: ")]
    assert len(logged) == 1
    assert json.loads(logged[0][len("Ingest report: "):]) == {k: v for k, v in saved.items()}


def test_rerun_replaces_partition(lake):
    land_object(lake, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1"]))
    first = ingest(lake)
    land_object(lake, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,2", "2026-09-01T00:05:00Z,n1,cpu,3"]))
    second = ingest(lake)
    assert first.rows_curated == 1
    assert second.rows_curated == 2
    assert values(lake) == [("2026-09-01T00:00:00.000Z", "n1", "cpu", 2.0), ("2026-09-01T00:05:00.000Z", "n1", "cpu", 3.0)]
    assert sorted(p.name for p in (lake.root / METRICS / "date=2026-09-01").iterdir()) == [
        "_ingest_report-000000-240000.json", "part-000000-240000.parquet",
    ]


# Landing days and sub-day intervals


def test_sample_outside_landing_day_is_quarantined(lake):
    land_object(lake, NEXT_DAY, "late.csv", _long(["2026-09-01T23:59:00Z,n1,cpu,1", "2026-09-02T00:01:00Z,n1,cpu,2"]))
    report = ingest(lake, start=NEXT_DAY, end=NEXT_DAY + pd.Timedelta(days=1))
    assert values(lake, NEXT_DAY, NEXT_DAY + pd.Timedelta(days=1)) == [("2026-09-02T00:01:00.000Z", "n1", "cpu", 2.0)]
    assert quarantined(lake, NEXT_DAY) == [("late.csv", None, NOT_IN_LANDING_DAY, "2026-09-01 23:59:00.000Z,n1,cpu,1")]
    assert report.rows_read == 2


def test_late_days_reads_next_folder(lake):
    land_object(lake, NEXT_DAY, "late.csv", _long(["2026-09-01T23:59:00Z,n1,cpu,1", "2026-09-02T00:01:00Z,n1,cpu,2"]))
    config = make_config(late_days=1)
    first = ingest(lake, config, DAY, NEXT_DAY)
    second = ingest(lake, config, NEXT_DAY, NEXT_DAY + pd.Timedelta(days=1))
    assert values(lake, DAY, NEXT_DAY) == [("2026-09-01T23:59:00.000Z", "n1", "cpu", 1.0)]
    assert values(lake, NEXT_DAY, NEXT_DAY + pd.Timedelta(days=1)) == [("2026-09-02T00:01:00.000Z", "n1", "cpu", 2.0)]
    assert (first.rows_read, first.objects, first.objects_late) == (1, 0, 1)
    assert (second.rows_read, second.rows_other_intervals, second.rows_quarantined) == (1, 1, 0)


def test_hourly_rerun_keeps_other_hours(lake):
    rows = [f"{(DAY + pd.Timedelta(hours=h)).isoformat()},n1,cpu,{h}" for h in range(24)]
    land_object(lake, DAY, "day.csv", _long(rows))
    ingest(lake)
    land_object(lake, DAY, "day.csv", _long(rows[:10] + [rows[10].replace(",10", ",99")] + rows[11:]))
    hourly = ingest(lake, start=DAY + pd.Timedelta(hours=10), end=DAY + pd.Timedelta(hours=11))
    assert (hourly.rows_read, hourly.rows_curated, hourly.rows_other_intervals) == (1, 1, 23)
    assert [row[3] for row in values(lake)] == [float(h) for h in range(10)] + [99.0] + [float(h) for h in range(11, 24)]
    assert sorted(p.name for p in (lake.root / METRICS / "date=2026-09-01").glob("part-*")) == [
        "part-000000-100000.parquet", "part-100000-110000.parquet", "part-110000-240000.parquet",
    ]
    ingest(lake)
    assert len(values(lake)) == 24
    assert [p.name for p in (lake.root / METRICS / "date=2026-09-01").glob("part-*")] == ["part-000000-240000.parquet"]


def test_gzip_named_plain_and_plain_named_gzip(lake):
    land_object(lake, DAY, "n1.csv", gzip.compress(b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n"))
    land_object(lake, DAY, "n2.csv.gz", b"timestamp,cpu\n2026-09-01T00:00:00Z,2\n")
    ingest(lake)
    assert [row[1:] for row in values(lake)] == [("n1", "cpu", 1.0), ("n2", "cpu", 2.0)]


def test_interval_without_time_zone_fails_with_fix(lake):
    with pytest.raises(ValueError, match=r"Timestamp '2026-09-01T00:00:00' has no time zone; give it in UTC"):
        ingest(lake, start="2026-09-01T00:00:00", end="2026-09-02T00:00:00Z")
