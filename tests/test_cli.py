"""The command line: help, argument errors, library errors, and the train/test/score flow."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lstmae import cli
from lstmae.cli import COMMANDS, Progress, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``lstmae ARGV`` in this process; return the exit code, stdout and stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_request:
        code = exit_request.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_config(path: Path, **settings) -> Path:
    data = {
        "step": "5min",
        "min_training_windows": 2,
        "groups": [{"name": "all", "timesteps": 12, "units": [8, 8, 8], "epochs": 2, "batch_size": 32}],
    }
    data.update(settings)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# Help


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: lstmae {command}")
    assert "--lake URI" in out
    assert "default" in out


def test_top_level_help_lists_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


def test_help_states_units_and_defaults(capsys):
    _, simulate_help, _ = run_cli(capsys, "simulate", "--help")
    assert "(default: 1min)" in simulate_help
    assert "(default: 10)" in simulate_help
    _, score_help, _ = run_cli(capsys, "score", "--help")
    assert "ISO 8601 in UTC" in score_help
    assert "exclusive" in score_help


def test_no_command_is_usage_error(capsys):
    code, _, err = run_cli(capsys)
    assert code == 2
    assert "the following arguments are required: COMMAND" in err


def test_module_entry_point():
    completed = subprocess.run([sys.executable, "-m", "lstmae", "--help"], capture_output=True, text=True,
                               cwd=ROOT, timeout=120)
    assert completed.returncode == 0
    assert "usage: lstmae" in completed.stdout


def test_console_script_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["lstmae"] == "lstmae.cli:main"
    assert callable(cli.main)


def test_every_command_has_both_functions():
    for command in COMMANDS:
        assert callable(getattr(cli, f"_add_{command}"))
        assert callable(getattr(cli, f"_run_{command}"))


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag(capsys, flag):
    code, out, _ = run_cli(capsys, flag)
    assert code == 0
    assert out.strip() == f"lstmae {cli._package_version()}"


def test_version_flag_leaves_command_option():
    args = cli.build_parser().parse_args(["score", "--version", "V1", "--start", "2026-09-01", "--end", "2026-09-02"])
    assert args.command == "score"
    assert args.version == "V1"


def test_broken_pipe_exits_quietly(tmp_path):
    (tmp_path / "lake").mkdir()
    # The read end is closed before the command writes, so its first write fails with EPIPE.
    process = subprocess.Popen([sys.executable, "-m", "lstmae", "incidents", "--lake", str(tmp_path / "lake"), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == cli.EXIT_BROKEN_PIPE == 141
    assert err == ""


# Argument errors: exit code 2 with the value and the fix


def test_unrecognized_argument_shows_command_usage(capsys, tmp_path):
    code, _, err = run_cli(capsys, "incidents", "--lake", tmp_path, "extra")
    assert code == 2
    assert err.startswith("usage: lstmae incidents ")
    assert "lstmae incidents: error: unrecognized arguments: extra" in err


def test_invalid_timestamp(capsys):
    code, _, err = run_cli(capsys, "ingest", "--start", "2026-13-01", "--end", "2026-09-02")
    assert code == 2
    assert "argument --start: invalid timestamp '2026-13-01'" in err
    assert "ISO 8601 in UTC, such as 2026-09-01" in err


def test_end_before_start(capsys, tmp_path):
    code, _, err = run_cli(capsys, "ingest", "--start", "2026-09-02", "--end", "2026-09-01", "--lake", tmp_path)
    assert code == 2
    assert "--end 2026-09-01T00:00:00Z is not after --start 2026-09-02T00:00:00Z" in err


def test_missing_option(capsys):
    code, _, err = run_cli(capsys, "score", "--start", "2026-09-01")
    assert code == 2
    assert "the following arguments are required: --end" in err


def test_missing_csv(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", tmp_path / "absent.csv")
    assert code == 2
    assert f"file '{tmp_path / 'absent.csv'}' not found" in err


@pytest.mark.parametrize("option, value, message", [
    ("--hosts", "0", "invalid value '0': expected a positive integer"),
    ("--step", "7min", "the step must divide one day"),
    ("--format", "parquet", "invalid choice: 'parquet'"),
])
def test_simulate_invalid_option(capsys, option, value, message):
    code, _, err = run_cli(capsys, "simulate", option, value)
    assert code == 2
    assert message in err


def test_simulate_start_not_midnight(capsys, tmp_path):
    code, _, err = run_cli(capsys, "simulate", "--start", "2026-09-01T06:00:00Z", "--lake", tmp_path)
    assert code == 2
    assert "--start 2026-09-01T06:00:00Z is not a UTC midnight" in err


def test_version_needs_one_group(capsys, tmp_path):
    groups = [{"name": "cpu", "weight": 0.5}, {"name": "memory", "weight": 0.5}]
    config = write_config(tmp_path / "two.yaml", groups=groups)
    code, _, err = run_cli(capsys, "score", "--start", "2026-09-01", "--end", "2026-09-02", "--version", "v1",
                           "--config", config, "--lake", tmp_path / "lake")
    assert code == 2
    assert "--version v1 pins the model of one group, but 2 groups are selected (cpu, memory): add --group NAME" in err


# Library errors: exit code 1, one line, no traceback unless --debug


def test_unknown_group_one_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "score", "--start", "2026-09-01", "--end", "2026-09-02", "--group", "nope",
                             "--lake", tmp_path)
    assert code == 1
    assert out == ""
    assert err == "lstmae score: error: Unknown group 'nope'. Configured groups: ['all'].\n"


def test_debug_raises_with_traceback(capsys, tmp_path):
    from lstmae.config import ConfigError

    with pytest.raises(ConfigError, match="Unknown group 'nope'"):
        main(["score", "--start", "2026-09-01", "--end", "2026-09-02", "--group", "nope", "--lake", str(tmp_path),
              "--debug"])


def test_score_without_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "score", "--start", "2026-09-01", "--end", "2026-09-02", "--lake", tmp_path)
    assert code == 1
    error_lines = [line for line in err.splitlines() if line.startswith("lstmae score: error:")]
    assert len(error_lines) == 1
    assert "Group 'all' has no current model" in error_lines[0]
    assert "Run training first" in error_lines[0]
    assert "Traceback" not in err


def test_invalid_config_file(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stepp: 5min\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "ingest", "--start", "2026-09-01", "--end", "2026-09-02", "--config", path)
    assert code == 1
    assert f"lstmae ingest: error: {path}: Unknown configuration key(s) ['stepp']" in err


def test_validation_before_training_rejected(capsys, tmp_path):
    train, validation = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("timestamp,cpu\n2026-09-01T00:00:00Z,1\n2026-09-01T00:05:00Z,2\n", encoding="utf-8")
    validation.write_text("timestamp,cpu\n2026-09-01T00:05:00Z,3\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", train, validation, "--lake", tmp_path / "lake")
    assert code == 1
    assert "starts at 2026-09-01T00:05:00Z, before TRAIN_CSV" in err
    assert "ends at 2026-09-01T00:10:00Z" in err
    assert not (tmp_path / "lake").exists()


# simulate, land and ingest (no TensorFlow)


def test_simulate_into_lake_then_ingest(capsys, tmp_path):
    lake = tmp_path / "lake"
    code, out, _ = run_cli(capsys, "simulate", "--hosts", "2", "--metrics", "3", "--days", "2", "--step", "5min",
                           "--seed", "3", "--lake", lake)
    assert code == 0
    assert "Simulated 2 hosts x 3 metrics at 5min, 2026-09-01T00:00:00Z .. 2026-09-03T00:00:00Z: 3,456 values" in out
    assert "Next: lstmae ingest --start 2026-09-01T00:00:00Z --end 2026-09-03T00:00:00Z" in out
    assert len(list((lake / "landing").rglob("*.csv.gz"))) == 4
    assert (lake / "labels.csv.gz").is_file()
    assert (lake / "incidents.json").is_file()

    code, out, _ = run_cli(capsys, "ingest", "--start", "2026-09-01T00:00:00Z", "--end", "2026-09-03T00:00:00Z",
                           "--lake", lake)
    assert code == 0
    # 2 hosts x 576 points x 3 metrics.
    assert "curated 3,456" in out
    assert "quarantined 0 rows and 0 objects" in out


def test_simulate_out_directory_then_land(capsys, tmp_path):
    out_dir, lake = tmp_path / "exports", tmp_path / "lake"
    code, out, _ = run_cli(capsys, "simulate", "--hosts", "3", "--days", "1", "--step", "10min",
                           "--out", out_dir, "--lake", lake)
    assert code == 0
    assert f"Next: lstmae ingest --lake {out_dir.resolve().as_uri()} --start" in out
    assert not lake.exists()

    code, out, _ = run_cli(capsys, "land", out_dir, "--lake", lake)
    assert code == 0
    assert "Copied 3 objects" in out
    assert "Next: lstmae ingest --start 2026-09-01T00:00:00Z --end 2026-09-02T00:00:00Z" in out
    assert sorted(p.name for p in (lake / "landing" / "date=2026-09-01").iterdir()) == [
        "host-0001.csv.gz", "host-0002.csv.gz", "host-0003.csv.gz"]


def test_land_directory_of_exports(capsys, tmp_path):
    folder = tmp_path / "web-1"
    folder.mkdir()
    (folder / "train.csv").write_text(
        "timestamp,cpu\n2026-09-01T23:55:00Z,1\n2026-09-02T00:00:00Z,2\n2026-09-02T00:05:00Z,3\n", encoding="utf-8")
    (folder / "labels.csv").write_text("timestamp,label\n2026-09-01T23:55:00Z,0\n", encoding="utf-8")
    lake = tmp_path / "lake"
    code, out, _ = run_cli(capsys, "land", folder, "--lake", lake)
    assert code == 0
    assert f"Skipped {folder / 'labels.csv'}: labels or annotations, not metrics" in out
    assert "as entity 'web-1': 2 daily objects, 3 rows" in out
    assert "Next: lstmae ingest --start 2026-09-01T00:00:00Z --end 2026-09-03T00:00:00Z" in out
    assert (lake / "landing" / "date=2026-09-01" / "web-1.csv.gz").is_file()
    assert (lake / "landing" / "date=2026-09-02" / "web-1.csv.gz").is_file()


def test_land_keeps_rest_of_day(capsys, tmp_path):
    morning, afternoon = tmp_path / "morning.csv", tmp_path / "afternoon.csv"
    morning.write_text("timestamp,cpu\n2026-09-01T08:00:00Z,1\n2026-09-01T08:05:00Z,2\n", encoding="utf-8")
    afternoon.write_text("timestamp,cpu\n2026-09-01T14:00:00Z,3\n2026-09-02T00:00:00Z,4\n", encoding="utf-8")
    lake = tmp_path / "lake"
    assert run_cli(capsys, "land", morning, "--entity", "web-1", "--lake", lake)[0] == 0

    code, out, _ = run_cli(capsys, "land", afternoon, "--entity", "web-1", "--lake", lake)
    assert code == 0
    assert f"Kept 2 rows landed earlier for 'web-1' on the first and last day of {afternoon}" in out
    assert "as entity 'web-1': 2 daily objects, 2 rows" in out
    landed = pd.read_csv(lake / "landing" / "date=2026-09-01" / "web-1.csv.gz")
    assert sorted(landed["timestamp"]) == ["2026-09-01T08:00:00Z", "2026-09-01T08:05:00Z", "2026-09-01T14:00:00Z"]

    code, out, _ = run_cli(capsys, "ingest", "--start", "2026-09-01", "--end", "2026-09-03", "--lake", lake)
    assert code == 0
    assert "curated 4," in out


def test_land_directory_without_exports(capsys, tmp_path):
    code, _, err = run_cli(capsys, "land", tmp_path, "--lake", tmp_path / "lake")
    assert code == 1
    assert f"No CSV exports (*.csv, *.csv.gz) in {tmp_path}" in err


@pytest.mark.parametrize("path, entity", [
    ("data/omi-1/train.csv.gz", "omi-1"),
    ("data/omi-1/test.csv.gz", "omi-1"),
    ("exports/web-01.csv", "web-01"),
    ("exports/db.primary.csv.gz", "db.primary"),
])
def test_entity_from_file_name(path, entity):
    assert cli._entity_for(Path(path)) == entity


# Progress


def test_progress_plain_lines():
    stream = io.StringIO()
    with Progress("ingest", 2, stream=stream) as progress:
        progress.advance("2026-09-01 done")
        progress.note("working")
        progress.advance("2026-09-02 done")
    assert stream.getvalue().splitlines() == [
        "ingest 1/2: 2026-09-01 done",
        "ingest 1/2: working",
        "ingest 2/2: 2026-09-02 done",
    ]


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_terminal():
    stream = TerminalStream()
    with Progress("score", 4, stream=stream) as progress:
        progress.advance("day 1")
        progress.advance("day 2")
    text = stream.getvalue()
    assert text.startswith("\rscore [")
    assert "[############............] 2/4" in text
    assert text.count("\n") == 1
    assert text.endswith("\n")


# The prototype's train and test forms, then score (trains a tiny model)


@pytest.fixture
def exports(tmp_path) -> dict[str, Path]:
    """Training (3 days), validation (1 day) and test (1 day) CSVs of one simulated host."""
    from lstmae.simulate import simulate_fleet

    fleet = simulate_fleet(hosts=1, metrics=3, days=5, step="5min", seed=2, incidents=2, clean_days=4)
    frame = fleet.frames()["host-0001"]
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    paths = {}
    for name, rows in (("train", slice(0, 864)), ("val", slice(864, 1152)), ("test", slice(1152, 1440))):
        paths[name] = tmp_path / f"web-1-{name}.csv"
        frame.iloc[rows].to_csv(paths[name])
    return paths


@pytest.mark.slow
def test_train_test_score_flow(capsys, tmp_path, exports):
    from lstmae import registry
    from lstmae.lake import read_days
    from lstmae.storage import LocalStorage

    lake = tmp_path / "lake"
    config = write_config(tmp_path / "lstmae.yaml")
    common = ["--config", config, "--lake", lake, "--entity", "web-1", "--no-plots"]

    code, out, err = run_cli(capsys, "train", exports["train"], exports["val"], *common)
    assert code == 0, err
    assert "as entity 'web-1': 4 daily objects, 1,152 rows" in out
    assert ("training period 2026-09-01T00:00:00Z .. 2026-09-04T00:00:00Z, "
            "validation period 2026-09-04T00:00:00Z .. 2026-09-05T00:00:00Z") in out
    version = re.search(r"^Model all/(\S+): promoted \(first model of the group\)$", out, re.MULTILINE).group(1)
    storage = LocalStorage(lake)
    assert registry.current_version(storage, "all") == version
    entry = registry.get_version(storage, "all", version)
    assert entry.metadata["data_range"]["validation_start"] == "2026-09-04T00:00:00+00:00"
    for feature, threshold in zip(entry.thresholds.features, entry.thresholds.feature_thresholds):
        assert re.search(rf"^    {feature}\s+{threshold:.6g}$", out, re.MULTILINE), feature

    code, out, err = run_cli(capsys, "test", exports["test"], *common)
    assert code == 0, err
    # The validation day in the lake is the context, so every point of the test day is scored.
    assert "Scored 2026-09-05T00:00:00Z .. 2026-09-06T00:00:00Z: 288 points, 288 scored, 0 unscorable" in out
    anomalies = read_days(storage, "anomalies", pd.Timestamp("2026-09-05T00:00Z"), pd.Timestamp("2026-09-06T00:00Z"))
    flagged = 0 if anomalies is None else anomalies.num_rows
    if flagged:
        assert f"{flagged:,} anomalous windows" in out
        for row in anomalies.to_pylist():
            assert row["window_start"] <= row["first_offending_timestamp"] <= row["window_end"]
    else:
        assert "No anomalous windows." in out

    # The validation day and the test day, this time with the incident plots that scheduled runs make.
    code, out, err = run_cli(capsys, "score", "--start", "2026-09-04", "--end", "2026-09-06", "--limit", "0",
                             "--config", config, "--lake", lake)
    assert code == 0, err
    assert re.search(rf"^2026-09-04\s+all\s+{version}\s+288\s+288\s", out, re.MULTILINE)
    assert re.search(rf"^2026-09-05\s+all\s+{version}\s+288\s+288\s", out, re.MULTILINE)
    scores = read_days(storage, "scores", pd.Timestamp("2026-09-05T00:00Z"), pd.Timestamp("2026-09-06T00:00Z"))
    # Scoring the test day again replaced its rows instead of adding to them.
    assert scores.num_rows == 288
    assert set(scores.column("model_version").to_pylist()) == {version}
    incidents = read_days(storage, "incidents", pd.Timestamp("2026-09-04T00:00Z"), pd.Timestamp("2026-09-06T00:00Z"))
    incident_ids = set() if incidents is None else set(incidents.column("incident_id").to_pylist())
    plotted = {path.stem for path in lake.glob("plots/*/*.png")}
    assert plotted == incident_ids

    code, out, err = run_cli(capsys, "train", exports["train"], "--no-promote", *common)
    assert code == 0, err
    assert "validation period: the last 0.3 of 2026-09-01T00:00:00Z .. 2026-09-04T00:00:00Z" in out
    assert registry.current_version(storage, "all") == version
    assert len(registry.list_versions(storage, "all")) == 2
