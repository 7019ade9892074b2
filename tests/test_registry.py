"""Model registry: what a version records, the promotion gate, and the actions on it.

A current model trained for 6 epochs and a challenger trained for 1 epoch
with a promotion tolerance of 0 make the gate reject the challenger, which
must stay registered with its reason. The actions are then driven through
`lstmae models` and through manual runs of the train DAG.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from importlib import metadata

import pandas as pd
import pyarrow.dataset as ds
import pytest

from lstmae import registry
from lstmae.cli import main
from lstmae.storage import LocalStorage
from lstmae.training import split_point, train_group


@pytest.fixture(scope="module")
def gated(scored_lake, tmp_path_factory) -> dict:
    """A copy of the scored lake whose registry holds a 6-epoch current model and a rejected 1-epoch one."""
    root = tmp_path_factory.mktemp("registry")
    shutil.copytree(scored_lake["lake"], root / "lake")
    storage = LocalStorage(root / "lake")
    for key in storage.list("models/"):
        storage.delete(key)
    base = dataclasses.replace(scored_lake["config"], lake=str(root / "lake"))
    group = base.groups[0]
    longer = dataclasses.replace(base, groups=(dataclasses.replace(group, epochs=6),))
    strict = dataclasses.replace(base, promotion_tolerance=0.0, groups=(dataclasses.replace(group, epochs=1),))
    start, end = scored_lake["train_range"]
    current = train_group(storage, longer, "all", start, end, plots=False)
    challenger = train_group(storage, strict, "all", start, end, plots=False)
    config_path = root / "config.yaml"
    config_path.write_text(scored_lake["config_path"].read_text().replace(str(scored_lake["lake"]), str(root / "lake")))
    return {"root": root, "storage": storage, "config": strict, "config_path": config_path, "current": current,
            "challenger": challenger, "start": start, "end": end}


def test_first_model_is_promoted(gated):
    assert gated["current"]["status"] == "promoted"
    assert gated["current"]["reason"] == "first model of the group"


def test_worse_model_is_rejected_and_kept(gated):
    storage, challenger = gated["storage"], gated["challenger"]
    assert challenger["status"] == "rejected"
    assert "worse than current" in challenger["reason"]
    assert registry.current_version(storage, "all") == gated["current"]["version"]
    versions = [entry.version for entry in registry.list_versions(storage, "all")]
    assert versions == sorted([gated["current"]["version"], challenger["version"]])
    assert storage.exists(registry.artifact_key("all", challenger["version"], "model.keras"))


def test_gate_compares_validation_error(gated):
    entry = registry.get_version(gated["storage"], "all", gated["challenger"]["version"])
    gates = entry.metadata["gates"]
    check = gates["checks"][-1]
    assert gates["passed"] is False
    assert gates["compared_with"] == gated["current"]["version"]
    assert check["gate"] == "validation_error"
    assert check["tolerance"] == 0.0
    assert check["limit"] == check["current_mse"]
    assert check["value"] == entry.metadata["validation"]["mse"]
    assert check["value"] > check["limit"]
    assert [c["gate"] for c in gates["checks"][:2]] == ["finite_losses", "training_windows"]
    assert all(c["passed"] for c in gates["checks"][:2])


def test_version_records_everything(gated):
    entry = registry.get_version(gated["storage"], "all", gated["challenger"]["version"])
    meta = entry.metadata
    config = gated["config"]
    assert meta["features"] == ["cpu", "disk", "memory"]
    assert meta["scaler"]["features"] == meta["features"]
    assert len(meta["thresholds"]["feature_thresholds"]) == 3
    assert meta["data_range"]["start"] == gated["start"].isoformat()
    assert meta["data_range"]["end"] == gated["end"].isoformat()
    assert meta["data_range"]["validation_start"] == split_point(config, gated["start"], gated["end"]).isoformat()
    assert len(meta["history"]["loss"]) == 1
    assert len(meta["history"]["val_loss"]) == 1
    validation = meta["validation"]
    for name in ("error_mean", "error_std", "error_p50", "error_p99", "error_max"):
        assert len(validation[name]) == 3, name
    assert all(low <= high for low, high in zip(validation["error_p50"], validation["error_p99"]))
    assert all(high <= top for high, top in zip(validation["error_p99"], validation["error_max"]))
    assert validation["points"] > 0
    assert meta["training_windows"] >= config.min_training_windows
    assert meta["library_versions"]["tensorflow"] == metadata.version("tensorflow")
    assert meta["library_versions"]["keras"] == metadata.version("keras")
    assert meta["config"]["promotion_tolerance"] == 0.0
    assert meta["config"]["group"]["epochs"] == 1
    assert meta["config"]["step"] == "5min"
    assert "lake" not in meta["config"]
    assert pd.Timestamp(meta["created_at"]).tzinfo is not None


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_cli_promote_and_rollback(gated, tmp_path, capsys):
    lake = tmp_path / "lake"
    shutil.copytree(gated["storage"].root, lake)
    current, challenger = gated["current"]["version"], gated["challenger"]["version"]
    options = ["--lake", str(lake), "--config", str(gated["config_path"])]

    code, out, _ = run_cli(capsys, "models", "list", *options)
    assert code == 0
    rows = {line[2:].split()[1]: line for line in out.splitlines() if line[2:].startswith("all ")}
    assert rows[current].startswith("* all")
    assert " rejected " in rows[challenger]
    assert rows[challenger].startswith("  all")

    code, out, _ = run_cli(capsys, "models", "show", challenger, *options)
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "rejected"
    assert shown["current"] is False

    code, out, _ = run_cli(capsys, "models", "promote", challenger, *options)
    assert code == 0
    assert out.strip() == f"Group all: current version {challenger} (manual promotion)"
    assert registry.current_version(LocalStorage(lake), "all") == challenger

    code, out, _ = run_cli(capsys, "models", "rollback", "--group", "all", *options)
    assert code == 0
    assert registry.current_version(LocalStorage(lake), "all") == current

    code, _, err = run_cli(capsys, "models", "rollback", "--group", "all", *options)
    assert code == 1
    assert "Cannot roll back group 'all'" in err

    with pytest.raises(SystemExit) as exit_request:
        main(["models", "promote", *options])
    assert exit_request.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lstmae models promote")
    assert "the following arguments are required: VERSION" in err

    code, _, err = run_cli(capsys, "models", "show", "20990101T000000Z-000000", *options)
    assert code == 1
    assert "not found in any group" in err


def test_models_cli_options_in_any_order(gated, tmp_path, capsys):
    lake = tmp_path / "lake"
    shutil.copytree(gated["storage"].root, lake)
    current, challenger = gated["current"]["version"], gated["challenger"]["version"]

    code, out, _ = run_cli(capsys, "models", "show", "--lake", str(lake), challenger)
    assert code == 0
    assert json.loads(out)["version"] == challenger
    code, out, _ = run_cli(capsys, "models", "--lake", str(lake), "show", current)
    assert code == 0
    assert json.loads(out)["current"] is True

    code, out, _ = run_cli(capsys, "models", "promote", "--lake", str(lake), "--config", str(gated["config_path"]),
                           challenger)
    assert code == 0
    assert registry.current_version(LocalStorage(lake), "all") == challenger

    with pytest.raises(SystemExit) as exit_request:
        main(["models", "list", "--lake", str(lake), challenger])
    assert exit_request.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lstmae models list")
    assert f"unrecognized arguments: {challenger}" in err


def test_models_cli_missing_lake(tmp_path, capsys):
    missing = tmp_path / "absent"
    for action in ("list", "rollback"):
        code, out, err = run_cli(capsys, "models", action, "--lake", str(missing))
        assert code == 1
        assert out == ""
        assert f"the folder {missing} does not exist" in err
        assert "--lake URI, with --config FILE" in err
    assert not missing.exists()


def model_versions_of(lake, day: str) -> set[str]:
    table = ds.dataset(lake / "scores" / f"date={day}", format="parquet", partitioning="hive").to_table(columns=["model_version"])
    return set(table["model_version"].to_pylist())


@pytest.mark.airflow
@pytest.mark.slow
def test_train_dag_actions_and_pinned_scoring(gated, tmp_path, run_dags):
    lake = tmp_path / "lake"
    shutil.copytree(gated["storage"].root, lake)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(gated["config_path"].read_text().replace(str(gated["storage"].root), str(lake)))
    current, challenger = gated["current"]["version"], gated["challenger"]["version"]
    day = {"start": "2026-09-05T00:00:00Z", "end": "2026-09-06T00:00:00Z", "send_alerts": False}
    runs = run_dags(
        tmp_path / "airflow",
        [
            {"dag_id": "lstmae_score", "conf": dict(day, version=challenger)},
            {"dag_id": "lstmae_train", "conf": {"action": "promote", "version": challenger}},
            {"dag_id": "lstmae_train", "conf": {"action": "rollback"}},
        ],
        {"LSTMAE_CONFIG": str(config_path), "LSTMAE_LAKE": str(lake)},
    )
    assert [run["state"] for run in runs] == ["success"] * 3, runs[0]["output"][-4000:]
    # The pinned run scored with the challenger although it was not current.
    assert model_versions_of(lake, "2026-09-05") == {challenger}
    # A registry action skips training, and training skips the registry action.
    assert runs[1]["tasks"]["registry_action[-1]"] == "success"
    assert runs[1]["tasks"]["groups[-1]"] == "skipped"
    pointer = json.loads((lake / "models" / "all" / "current.json").read_text())
    assert pointer["version"] == current
    assert pointer["reason"] == f"rollback from {challenger}"
    assert pointer["history"] == []
