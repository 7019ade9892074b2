"""Score and combine written in entity batches: one row group per batch, same rows as one write."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmae import pipeline, schema
from lstmae.config import config_from_dict
from lstmae.lake import SliceWriter, read_days, write_slice
from lstmae.storage import LocalStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import write_curated_sine  # noqa: E402

START = pd.Timestamp("2026-09-01T00:00:00Z")
DAY = START + pd.Timedelta(days=2)
HOSTS = ["host-a", "host-b", "host-c", "host-d", "host-e"]
POINTS_PER_DAY = 288  # 5-minute grid
CONFIG = config_from_dict({
    "step": "5min",
    "incident_merge_steps": 6,
    "drift_windows": 2,
    "groups": [{"name": "fleet", "metrics": ["cpu", "memory"], "timesteps": 6, "train_stride": 3,
                "units": [4, 4, 4], "epochs": 1, "batch_size": 64}],
})
# Output tables of combine and the columns that identify a row.
COMBINE_KEYS = {
    "votes": ["entity", "timestamp"],
    "anomalies": ["group", "entity", "window_end"],
    "incidents": ["incident_id"],
    "slo_violations": ["violation_id"],
    "drift_events": ["event_id"],
}


def land(storage, days: int = 3) -> None:
    """Write curated cpu and memory rows of ``HOSTS`` with a cpu spike on host-c and host-e on the last day."""
    spike = (DAY + pd.Timedelta(hours=10), DAY + pd.Timedelta(hours=12))
    write_curated_sine(storage, START, {entity: seed for seed, entity in enumerate(HOSTS, start=1)}, days,
                       cpu_spikes={"host-c": spike, "host-e": spike})


@pytest.fixture(scope="module")
def fleet_lake(tmp_path_factory):
    """A lake with three days of five hosts and a tiny shared model trained on the first two."""
    from lstmae.training import train_group

    storage = LocalStorage(tmp_path_factory.mktemp("streaming") / "lake")
    land(storage)
    train_group(storage, CONFIG, "fleet", START, DAY, plots=False)
    return storage


def only_file(storage, prefix: str):
    keys = [key for key in storage.list(prefix) if key.endswith(".parquet")]
    assert len(keys) == 1, keys
    return pq.ParquetFile(storage.root / keys[0])


def sorted_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.replace_schema_metadata(None).sort_by([(key, "ascending") for key in keys])


def score_day(storage, monkeypatch, batch: int) -> tuple[pq.ParquetFile, pq.ParquetFile, dict]:
    monkeypatch.setattr(pipeline, "SCORE_BATCH_SERIES", batch)
    summary = pipeline.score_group(storage, CONFIG, "fleet", DAY, DAY + pd.Timedelta(days=1))
    scores = only_file(storage, "scores/date=2026-09-03/group=fleet/")
    windows = only_file(storage, "windows/date=2026-09-03/group=fleet/")
    return scores, windows, summary


@pytest.mark.slow
def test_batched_scores_equal_one_write(fleet_lake, monkeypatch):
    batched_scores, batched_windows, batched = score_day(fleet_lake, monkeypatch, batch=2)
    batched_table, batched_window_table = batched_scores.read(), batched_windows.read()
    single_scores, single_windows, single = score_day(fleet_lake, monkeypatch, batch=64)
    single_table, single_window_table = single_scores.read(), single_windows.read()

    # Five hosts in batches of two: three row groups of 2, 2 and 1 hosts.
    assert batched_scores.num_row_groups == 3
    assert [batched_scores.metadata.row_group(i).num_rows for i in range(3)] == [576, 576, 288]
    assert single_scores.num_row_groups == 1
    assert batched_table.num_rows == 5 * POINTS_PER_DAY
    assert single_table.num_rows == 5 * POINTS_PER_DAY
    batched.pop("seconds")
    single.pop("seconds")
    assert batched == single
    assert batched["rows"] == 5 * POINTS_PER_DAY
    assert sorted_rows(batched_table, ["entity", "timestamp"]).equals(sorted_rows(single_table, ["entity", "timestamp"]))
    assert batched_table.schema.remove_metadata().equals(schema.SCORES)

    # One 6-point window verdict per block: 48 per host and day, in the same three row groups.
    assert batched_windows.num_row_groups == 3
    assert batched_window_table.num_rows == 5 * POINTS_PER_DAY // 6
    assert sorted_rows(batched_window_table, ["entity", "window_end"]).equals(
        sorted_rows(single_window_table, ["entity", "window_end"]))


@pytest.mark.slow
def test_scores_file_ordered_by_entity_then_time(fleet_lake, monkeypatch):
    scores, windows, _ = score_day(fleet_lake, monkeypatch, batch=2)
    table = scores.read(columns=["entity", "timestamp"]).to_pandas()
    expected = table.sort_values(["entity", "timestamp"]).reset_index(drop=True)
    assert table.equals(expected)
    assert table["entity"].drop_duplicates().tolist() == HOSTS
    window_table = windows.read(columns=["entity", "window_end"]).to_pandas()
    assert window_table.equals(window_table.sort_values(["entity", "window_end"]).reset_index(drop=True))
    # Row group statistics bound each batch's entities, so readers of one entity skip the others.
    statistics = [scores.metadata.row_group(i).column(1).statistics for i in range(3)]
    assert [(item.min, item.max) for item in statistics] == [("host-a", "host-b"), ("host-c", "host-d"),
                                                             ("host-e", "host-e")]


def read_combined(storage) -> dict[str, pa.Table]:
    tables = {}
    for name, keys in COMBINE_KEYS.items():
        table = read_days(storage, name, DAY, DAY + pd.Timedelta(days=1))
        tables[name] = sorted_rows(table, keys)
    return tables


@pytest.mark.slow
def test_combine_batches_equal_whole_fleet(fleet_lake, monkeypatch):
    score_day(fleet_lake, monkeypatch, batch=64)
    end = DAY + pd.Timedelta(days=1)
    monkeypatch.setattr(pipeline, "COMBINE_BATCH_ENTITIES", 2)
    batched_summary = pipeline.combine_interval(fleet_lake, CONFIG, DAY, end, plots=False)
    batched = read_combined(fleet_lake)
    votes_file = only_file(fleet_lake, "votes/date=2026-09-03/")
    monkeypatch.setattr(pipeline, "COMBINE_BATCH_ENTITIES", 128)
    whole_summary = pipeline.combine_interval(fleet_lake, CONFIG, DAY, end, plots=False)
    whole = read_combined(fleet_lake)

    assert votes_file.num_row_groups == 3
    assert batched["votes"].num_rows == 5 * POINTS_PER_DAY
    assert only_file(fleet_lake, "votes/date=2026-09-03/").num_row_groups == 1
    for name in COMBINE_KEYS:
        assert batched[name].num_rows == whole[name].num_rows, name
        assert batched[name].equals(whole[name]), name
    assert batched_summary == whole_summary
    # The spikes of host-c and host-e give incidents, with ids that do not depend on the batches.
    incident_entities = set(batched["incidents"]["entity"].to_pylist())
    assert {"host-c", "host-e"} <= incident_entities
    assert batched_summary["incident_ids"] == sorted(batched["incidents"]["incident_id"].to_pylist())
    recomputed = [pipeline.incident_id("fleet", row["entity"], row["start"])
              for row in batched["incidents"].to_pylist()]
    assert sorted(recomputed) == batched_summary["incident_ids"]


@pytest.mark.slow
def test_failed_scoring_publishes_nothing(fleet_lake, monkeypatch, tmp_path):
    score_day(fleet_lake, monkeypatch, batch=64)
    prefixes = ("scores/date=2026-09-03/group=fleet/", "windows/date=2026-09-03/group=fleet/")
    before = {key: fleet_lake.read_bytes(key) for prefix in prefixes for key in fleet_lake.list(prefix)}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    original = pipeline.score_series
    calls = []

    def fail_in_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("scoring failed in the second batch")
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "score_series", fail_in_second_batch)
    monkeypatch.setattr(pipeline, "SCORE_BATCH_SERIES", 2)
    with pytest.raises(RuntimeError, match="second batch"):
        pipeline.score_group(fleet_lake, CONFIG, "fleet", DAY, DAY + pd.Timedelta(days=1))

    after = {key: fleet_lake.read_bytes(key) for prefix in prefixes for key in fleet_lake.list(prefix)}
    assert after == before
    assert list(tmp_path.iterdir()) == []
    hidden = [path for path in (fleet_lake.root / "scores").rglob(".*")]
    assert hidden == []


SMALL = pa.schema([pa.field("timestamp", schema.TIMESTAMP), pa.field("entity", pa.string()), pa.field("x", pa.int64())])


def small_rows(entity: str, hours: list[int], x: int) -> pa.Table:
    return pa.table({"timestamp": [START + pd.Timedelta(hours=h) for h in hours], "entity": [entity] * len(hours),
                     "x": [x] * len(hours)}, schema=SMALL)


def test_slice_writer_one_row_group_per_write(lake):
    end = START + pd.Timedelta(days=1)
    with SliceWriter(lake, "t", START, START, end, SMALL) as writer:
        writer.write(small_rows("a", [0, 1, 2], 1))
        writer.write(small_rows("b", [0], 2).slice(0, 0))
        writer.write(small_rows("b", [3, 4], 2))
    assert writer.rows == 5
    assert writer.row_groups == 2
    file = only_file(lake, "t/date=2026-09-01/")
    assert file.num_row_groups == 2
    assert [file.metadata.row_group(i).num_rows for i in range(2)] == [3, 2]
    assert file.read().to_pydict()["entity"] == ["a", "a", "a", "b", "b"]


def test_slice_writer_without_rows_publishes_empty_slice(lake):
    end = START + pd.Timedelta(days=1)
    with SliceWriter(lake, "t", START, START, end, SMALL):
        pass
    table = read_days(lake, "t", START, end)
    assert table.num_rows == 0
    assert table.schema.equals(SMALL)


def test_slice_writer_replaces_overlapping_slices(lake):
    write_slice(lake, "t", START, START, START + pd.Timedelta(hours=12), small_rows("old", [1], 0))
    write_slice(lake, "t", START, START + pd.Timedelta(hours=12), START + pd.Timedelta(days=1), small_rows("old", [13], 0))
    with SliceWriter(lake, "t", START, START, START + pd.Timedelta(days=1), SMALL) as writer:
        writer.write(small_rows("new", [1, 13], 7))
    assert lake.list("t/") == ["t/date=2026-09-01/part-000000-240000.parquet"]
    assert read_days(lake, "t", START, START + pd.Timedelta(days=1)).to_pydict()["entity"] == ["new", "new"]


def test_slice_writer_error_keeps_old_slice(lake, monkeypatch, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    end = START + pd.Timedelta(days=1)
    key = write_slice(lake, "t", START, START, end, small_rows("old", [1], 0))
    old = lake.read_bytes(key)
    with pytest.raises(RuntimeError, match="stop"):
        with SliceWriter(lake, "t", START, START, end, SMALL) as writer:
            writer.write(small_rows("new", [1], 1))
            raise RuntimeError("stop")
    assert lake.list("t/") == [key]
    assert lake.read_bytes(key) == old
    assert list(staging.iterdir()) == []
    with pytest.raises(ValueError, match="is closed. Open a new SliceWriter"):
        writer.write(small_rows("new", [2], 1))


def test_slice_writer_publishes_to_s3(s3_lake):
    end = START + pd.Timedelta(days=1)
    write_slice(s3_lake, "t", START, START, START + pd.Timedelta(hours=12), small_rows("old", [1], 0))
    with SliceWriter(s3_lake, "t", START, START, end, SMALL, group="g") as writer:
        writer.write(small_rows("a", [0, 1], 1))
        writer.write(small_rows("b", [2], 2))
    with SliceWriter(s3_lake, "t", START, START, end, SMALL) as writer:
        writer.write(small_rows("c", [5], 3))
    assert s3_lake.list("t/") == ["t/date=2026-09-01/group=g/part-000000-240000.parquet",
                                  "t/date=2026-09-01/part-000000-240000.parquet"]
    grouped = pq.ParquetFile(pa.BufferReader(s3_lake.read_bytes("t/date=2026-09-01/group=g/part-000000-240000.parquet")))
    assert grouped.num_row_groups == 2
    assert grouped.read().to_pydict()["x"] == [1, 1, 2]
    assert read_days(s3_lake, "t", START, end, group="g").num_rows == 3
