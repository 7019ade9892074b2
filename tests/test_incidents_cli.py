"""`lstmae incidents`: recent incidents as a table or JSON, with filters.

Expected rows are computed from the incidents/ files with pyarrow.dataset,
independently of lstmae.query.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as ds

from lstmae.cli import main


def expected_incidents(lake, since=None, until=None, entity=None) -> pd.DataFrame:
    frame = ds.dataset(lake / "incidents", format="parquet", partitioning="hive").to_table().to_pandas()
    frame = frame.sort_values(["incident_id", "end"]).drop_duplicates("incident_id", keep="last")
    if since is not None:
        frame = frame[frame["end"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["start"] < pd.Timestamp(until)]
    if entity is not None:
        frame = frame[frame["entity"] == entity]
    return frame


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_lists_every_recent_incident(scored_lake, capsys):
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(scored_lake["lake"]), "--json")
    assert code == 0
    records = json.loads(out)
    expected = expected_incidents(scored_lake["lake"])
    assert sorted(r["incident_id"] for r in records) == sorted(expected["incident_id"])
    starts = [r["start"] for r in records]
    assert starts == sorted(starts, reverse=True)
    by_id = expected.set_index("incident_id")
    for record in records:
        row = by_id.loc[record["incident_id"]]
        assert record["end"] == row["end"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert record["points"] == row["points"]
        assert record["top_features"] == list(row["top_features"])
        assert record["date"] == row["date"]


def test_filters_entity_and_period(scored_lake, capsys):
    since, until = "2026-09-05T00:00:00Z", "2026-09-06T00:00:00Z"
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(scored_lake["lake"]), "--json",
                           "--entity", "host-a", "--since", since, "--until", until)
    assert code == 0
    records = json.loads(out)
    expected = expected_incidents(scored_lake["lake"], since, until, "host-a")
    assert len(expected) >= 1
    assert sorted(r["incident_id"] for r in records) == sorted(expected["incident_id"])
    assert {r["entity"] for r in records} == {"host-a"}


def test_unknown_group_prints_nothing_found(scored_lake, capsys):
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(scored_lake["lake"]), "--group", "no-such-group")
    assert code == 0
    assert out.startswith("No incidents in ")


def test_table_has_one_line_per_incident(scored_lake, capsys):
    expected = expected_incidents(scored_lake["lake"])
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(scored_lake["lake"]), "--limit", "0")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{len(expected)} incidents, newest first:"
    assert lines[1].split()[:3] == ["start", "(UTC)", "end"]
    assert len(lines) == 2 + len(expected)
    spike_start, spike_end = pd.Timestamp("2026-09-05T10:00:00Z"), pd.Timestamp("2026-09-05T12:00:00Z")
    spike = expected[(expected["entity"] == "host-a") & (expected["start"] < spike_end) & (expected["end"] >= spike_start)
                     & expected["top_features"].map(lambda names: "cpu" in list(names))]
    assert len(spike) == 1
    row = spike.iloc[0]
    line = [line for line in lines if row["incident_id"] in line]
    assert len(line) == 1
    assert line[0].split()[0] == row["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert line[0].split()[2] == "host-a"
    assert line[0].split("  ")[-1].strip().split(", ") == list(row["top_features"])


def test_limit_truncates_table(scored_lake, capsys):
    expected = expected_incidents(scored_lake["lake"])
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(scored_lake["lake"]), "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[-1] == f"  ... {len(expected) - 2} more (raise --limit, or use --json)"


def test_empty_lake_and_bad_period(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, _ = run_cli(capsys, "incidents", "--lake", str(tmp_path / "empty"), "--json")
    assert code == 0
    assert json.loads(out) == []
    code, _, err = run_cli(capsys, "incidents", "--lake", str(tmp_path / "empty"),
                           "--since", "2026-09-06", "--until", "2026-09-05")
    assert code == 2
    assert "is not after --since" in err


def test_missing_lake_folder_fails(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "absent"
    code, out, err = run_cli(capsys, "incidents", "--lake", str(missing))
    assert code == 1
    assert out == ""
    assert err.strip() == (
        f"lstmae incidents: error: lake {missing.as_uri()} not found: the folder {missing} does not exist. "
        "Give the lake with --lake URI, with --config FILE (its 'lake' setting), or with $LSTMAE_LAKE."
    )
    monkeypatch.setenv("LSTMAE_LAKE", str(missing))
    monkeypatch.delenv("LSTMAE_CONFIG", raising=False)
    code, _, err = run_cli(capsys, "incidents", "--json")
    assert code == 1
    assert f"the folder {missing} does not exist" in err
