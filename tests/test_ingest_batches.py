"""Ingest in entity batches: the same curated rows, counts and quarantine for every batch size.

``lstmae.ingest.BATCH_ROWS`` is lowered to a few rows, so that small lakes
take every path. Batches are written as they come. A batch that overlaps an
earlier one makes ingest read the written rows back, with the duplicates
they dropped. Intervals over two days write two slice files.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, NEXT_DAY, curated_rows, ingest, make_config, quarantined  # noqa: E402

import lstmae.ingest  # noqa: E402
from lstmae import schema  # noqa: E402
from lstmae.formats import ParseError, decompress  # noqa: E402
from lstmae.formats.common import NOT_IN_LANDING_DAY  # noqa: E402
from lstmae.ingest import METRICS  # noqa: E402
from lstmae.lake import partition  # noqa: E402
from lstmae.landing import land_object  # noqa: E402

T0, T1, T2 = "2026-09-01T00:00:00.000Z", "2026-09-01T00:01:00.000Z", "2026-09-01T00:02:00.000Z"
R1 = '{"region":"r1"}'
ONE_BATCH = 1 << 30


def _mixed_lake(lake) -> None:
    """Wide objects whose key order is not their entity order, duplicates within and across objects, one late row."""
    land_object(lake, DAY, "a-b.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n2026-09-01T00:01:00Z,2\n")
    land_object(lake, DAY, "a.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,3\n2026-09-01T00:00:00Z,4\n2026-09-01T00:01:00Z,5\n")
    land_object(lake, DAY, "b.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,6\n2026-09-02T00:00:00Z,60\n")
    land_object(lake, DAY, "c.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,7\n")
    land_object(lake, DAY, "z-long.csv", b"timestamp,entity,metric,value,region\n"
                b"2026-09-01T00:00:00Z,a,cpu,8,r1\n2026-09-01T00:02:00Z,c,cpu,9,r1\n")


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5, 8, ONE_BATCH])
def test_every_batch_size_curates_the_same_rows(lake, monkeypatch, batch_rows):
    _mixed_lake(lake)
    monkeypatch.setattr(lstmae.ingest, "BATCH_ROWS", batch_rows)
    report = ingest(lake, make_config(label_columns=["region"]))
    prefix = "landing/date=2026-09-01/"
    assert curated_rows(lake) == [
        (T0, "a", "cpu", 8.0, R1, prefix + "z-long.csv"),
        (T1, "a", "cpu", 5.0, None, prefix + "a.csv"),
        (T0, "a-b", "cpu", 1.0, None, prefix + "a-b.csv"),
        (T1, "a-b", "cpu", 2.0, None, prefix + "a-b.csv"),
        (T0, "b", "cpu", 6.0, None, prefix + "b.csv"),
        (T0, "c", "cpu", 7.0, None, prefix + "c.csv"),
        (T2, "c", "cpu", 9.0, R1, prefix + "z-long.csv"),
    ]
    # a at 00:00 was read three times: 3 and 4 (no labels) lose to 8 (region r1).
    assert (report.rows_read, report.rows_curated, report.rows_deduplicated, report.rows_quarantined) == (10, 7, 2, 1)
    assert report.rows_deduplicated_other_labels == 2
    assert quarantined(lake) == [("b.csv", None, NOT_IN_LANDING_DAY, "2026-09-02 00:00:00.000Z,b,cpu,60")]
    assert report.partitions == {"2026-09-01": 7}


@pytest.mark.parametrize("batch_rows", [1, 4, ONE_BATCH])
def test_interval_over_two_days_in_batches(lake, monkeypatch, batch_rows):
    for day in (DAY, NEXT_DAY):
        stamp = day.strftime("%Y-%m-%d")
        for host, value in (("h1", 1), ("h2", 2)):
            land_object(lake, day, f"{host}.csv", f"timestamp,cpu\n{stamp}T06:00:00Z,{value}\n{stamp}T18:00:00Z,{value + 10}\n".encode())
    monkeypatch.setattr(lstmae.ingest, "BATCH_ROWS", batch_rows)
    start, end = DAY + pd.Timedelta(hours=12), NEXT_DAY + pd.Timedelta(hours=12)
    report = ingest(lake, make_config(), start, end)
    assert [row[:4] for row in curated_rows(lake, start, end)] == [
        ("2026-09-01T18:00:00.000Z", "h1", "cpu", 11.0),
        ("2026-09-01T18:00:00.000Z", "h2", "cpu", 12.0),
        ("2026-09-02T06:00:00.000Z", "h1", "cpu", 1.0),
        ("2026-09-02T06:00:00.000Z", "h2", "cpu", 2.0),
    ]
    assert report.partitions == {"2026-09-01": 2, "2026-09-02": 2}
    assert (report.rows_read, report.rows_other_intervals) == (4, 4)


def test_batches_are_row_groups_in_entity_order(lake, monkeypatch):
    for host in range(6):
        lines = "".join(f"2026-09-01T00:0{minute}:00Z,{host},{minute}\n" for minute in range(3))
        land_object(lake, DAY, f"host-{host}.csv", ("timestamp,cpu,mem\n" + lines).encode())
    monkeypatch.setattr(lstmae.ingest, "BATCH_ROWS", 12)  # two hosts (2 x 3 x 2 samples) per batch
    report = ingest(lake)
    assert (report.rows_curated, report.rows_deduplicated) == (36, 0)
    [key] = [key for key in lake.list(partition(METRICS, DAY) + "/") if key.endswith(".parquet")]
    parquet = pq.ParquetFile(lake.root / key)
    assert parquet.schema_arrow == schema.CURATED
    entity = parquet.schema_arrow.get_field_index("entity")
    ranges = [(group.column(entity).statistics.min, group.column(entity).statistics.max, group.num_rows)
              for group in (parquet.metadata.row_group(i) for i in range(parquet.num_row_groups))]
    assert ranges == [("host-0", "host-1", 12), ("host-2", "host-3", 12), ("host-4", "host-5", 12)]
    rows = curated_rows(lake)
    assert rows[0][:4] == (T0, "host-0", "cpu", 0.0)
    assert rows[-1][:4] == (T2, "host-5", "mem", 2.0)
    assert [row[1:3] for row in rows[:6]] == [("host-0", "cpu")] * 3 + [("host-0", "mem")] * 3


def test_failed_write_leaves_no_temporary_file(lake, monkeypatch, tmp_path):
    _mixed_lake(lake)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    monkeypatch.setattr(lstmae.ingest, "BATCH_ROWS", 2)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lstmae.ingest, "write_slice", broken)
    with pytest.raises(OSError, match="disk full"):
        ingest(lake, make_config(label_columns=["region"]))
    assert list(scratch.iterdir()) == []
    assert not any(key.endswith(".parquet") for key in lake.list(partition(METRICS, DAY) + "/"))


# Gzip members, as gzip.GzipFile reads them


def test_gzip_members_and_padding_are_read():
    first, second = gzip.compress(b"timestamp,cpu\n", mtime=0), gzip.compress(b"2026-09-01T00:00:00Z,1\n", mtime=0)
    assert decompress("x.csv.gz", first + second) == b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n"
    assert decompress("x.csv.gz", first + b"\x00\x00\x00" + second + b"\x00") == b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n"


@pytest.mark.parametrize("damage", ["truncated", "garbage after member", "crc", "length"])
def test_damaged_gzip_is_corrupt(damage):
    data = bytearray(gzip.compress(b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n" * 20, mtime=0))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage after member":
        data += b"GARBAGE"
    elif damage == "crc":
        data[-8] ^= 0xFF
    else:
        data[-1] ^= 0xFF
    with pytest.raises(ParseError) as caught:
        decompress("x.csv.gz", bytes(data))
    assert caught.value.reason == "corrupt or truncated gzip"
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(bytes(data))


def test_gzip_limit_counts_every_member():
    member = gzip.compress(b"x" * 600, mtime=0)
    assert len(decompress("x.gz", member + member, limit=1200)) == 1200
    with pytest.raises(ParseError) as caught:
        decompress("x.gz", member + member, limit=1199)
    assert caught.value.reason == "unpacked size over the limit"


@pytest.mark.parametrize("batch_rows", [2, ONE_BATCH])
def test_unsorted_and_repeated_columns_are_sorted(lake, monkeypatch, batch_rows):
    # Times run backwards in h1, and h2 names one metric twice (the second value wins).
    land_object(lake, DAY, "h1.csv", b"timestamp,mem,cpu\n2026-09-01T00:01:00Z,1,2\n2026-09-01T00:00:00Z,3,4\n")
    land_object(lake, DAY, "h2.csv", b"timestamp,cpu, cpu\n2026-09-01T00:00:00Z,5,6\n")
    monkeypatch.setattr(lstmae.ingest, "BATCH_ROWS", batch_rows)
    report = ingest(lake)
    assert [row[:4] for row in curated_rows(lake)] == [
        (T0, "h1", "cpu", 4.0),
        (T1, "h1", "cpu", 2.0),
        (T0, "h1", "mem", 3.0),
        (T1, "h1", "mem", 1.0),
        (T0, "h2", "cpu", 6.0),
    ]
    assert report.rows_deduplicated == 1
