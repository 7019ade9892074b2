"""Metric groups: configuration validation and both feature layouts, trained and scored."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from lstmae.config import ConfigError, config_from_dict, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import write_curated_sine  # noqa: E402

START = pd.Timestamp("2026-09-01T00:00:00Z")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": "red"}, r"Unknown configuration key\(s\) \['colour'\] at <root>"),
        ({"groups": [{"name": "a", "weight": 0.4}, {"name": "b", "weight": 0.4}]},
         r"groups\[\*\]\.weight: group weights must sum to 1\. Received: 0\.8"),
        ({"groups": [{"name": "cpu", "layout": "nodes", "metrics": ["cpu"]}]},
         r"groups\[0\]\.entities: layout 'nodes' needs the list of entities"),
        ({"groups": [{"name": "a", "threshold": {"method": "gauss"}}]},
         r"groups\[0\]\.threshold\.method: expected one of reference, quantile.*Received: 'gauss'"),
        ({"groups": [{"name": "a", "weight": 0.5}, {"name": "a", "weight": 0.5}]},
         r"groups: group names must be unique"),
        ({"groups": [{"name": "a", "slo_percentiles": [99]}]},
         r"groups\[0\]\.slo_percentiles: expected a mapping of metric name or pattern"),
        ({"groups": [{"name": "a", "slo_percentiles": {"cpu": 120}}]},
         r"groups\[0\]\.slo_percentiles\.cpu: expected a number between 0\.0 and 100\.0\. Received: 120"),
        ({"groups": [{"name": "a", "timesteps": 0}]}, r"groups\[0\]\.timesteps: expected a positive integer"),
        ({"groups": [{"name": "a", "units": [10, 10]}]}, r"groups\[0\]\.units: expected three integers"),
        ({"groups": [{"weight": 1.0}]}, r"groups\[0\]\.name: every group needs a non-empty name"),
        ({"groups": [{"name": "a", "threshold": {"top_features": 2.5}}]},
         r"groups\[0\]\.threshold\.top_features: expected a non-negative integer\. Received: 2\.5"),
        ({"incident_merge_steps": -1}, r"incident_merge_steps: expected a non-negative integer"),
        ({"slo_windows": 0}, r"slo_windows: expected a positive integer"),
        ({"drift_windows": "forty"}, r"drift_windows: expected a positive integer\. Received: 'forty'"),
        ({"seed": "x"}, r"seed: expected an integer\. Received: 'x'"),
    ],
)
def test_config_errors_name_path_and_value(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_yaml_with_both_layouts(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        """
step: 1min
vote_threshold: 0.5
groups:
  - name: cpu
    weight: 0.5
    layout: nodes
    metrics: [cpu]
    entities: [node1, node2, node3]
    slo_percentiles: {cpu: 99}
  - name: fleet
    weight: 0.5
    metrics: [cpu, memory]
    timesteps: 30
    threshold: {method: reference, sigma: 3}
""",
        encoding="utf-8",
    )
    config = load_config(path)
    cpu, fleet = config.groups
    assert (cpu.layout, cpu.entities, cpu.metrics) == ("nodes", ("node1", "node2", "node3"), ("cpu",))
    assert cpu.slo_percentiles == {"cpu": 99.0}
    assert (fleet.layout, fleet.entities, fleet.timesteps, fleet.train_stride) == ("metrics", ("*",), 30, 5)
    assert fleet.threshold.method == "reference"
    assert fleet.slo_percentiles == {"*cpu*": 99.0, "*mem*": 95.0}


def test_yaml_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("groups:\n  - name: a\n    epochs: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: Invalid configuration value at groups\[0\]\.epochs"):
        load_config(path)


TINY = {"timesteps": 6, "train_stride": 3, "units": [4, 4, 4], "epochs": 1, "batch_size": 64}


@pytest.mark.slow
def test_nodes_layout_trains_and_scores(lake):
    from lstmae import registry
    from lstmae.pipeline import score_group
    from lstmae.training import train_group

    write_curated_sine(lake, START, {"node1": 1, "node2": 2, "node3": 3}, days=3)
    config = config_from_dict({"groups": [dict(TINY, name="cpu", layout="nodes", metrics=["cpu"],
                                               entities=["node1", "node2", "node3"])]})
    trained = train_group(lake, config, "cpu", START, START + pd.Timedelta(days=2), plots=False)
    entry = registry.get_version(lake, "cpu", trained["version"])
    assert entry.features == ["node1", "node2", "node3"]
    assert list(entry.metadata["slo_limits"]) == ["node1+node2+node3"]
    assert sorted(entry.metadata["slo_limits"]["node1+node2+node3"]) == ["node1", "node2", "node3"]

    day = START + pd.Timedelta(days=2)
    summary = score_group(lake, config, "cpu", day, day + pd.Timedelta(days=1))
    assert summary["rows"] == 288
    assert summary["scored"] == 288
    scores = lake.read_parquet(lake.list("scores/date=2026-09-03/group=cpu/")[0]).to_pandas()
    assert scores["entity"].unique().tolist() == ["node1+node2+node3"]
    assert [item["feature"] for item in scores["feature_errors"].iloc[0]] == ["node1", "node2", "node3"]


@pytest.mark.slow
def test_metrics_layout_shared_across_entities(lake):
    from lstmae import registry
    from lstmae.pipeline import score_group
    from lstmae.training import train_group

    write_curated_sine(lake, START, {"host-a": 1, "host-b": 2, "host-c": 3}, days=3)
    config = config_from_dict({"groups": [dict(TINY, name="fleet", metrics=["cpu", "memory"])]})
    trained = train_group(lake, config, "fleet", START, START + pd.Timedelta(days=2), plots=False)
    entry = registry.get_version(lake, "fleet", trained["version"])
    assert entry.features == ["cpu", "memory"]
    assert entry.metadata["series"] == ["host-a", "host-b", "host-c"]
    # One model, windows from every host: 2 days * 0.7 of 288 rows each, stride 3.
    per_host = len(range(0, int(2 * 288 * 0.7) - 6 + 1, 3))
    assert trained["training_windows"] == 3 * per_host
    # cpu gets the 99th and memory the 95th percentile of each host's training values.
    limits = entry.metadata["slo_limits"]["host-b"]
    assert set(limits) == {"cpu", "memory"}

    day = START + pd.Timedelta(days=2)
    summary = score_group(lake, config, "fleet", day, day + pd.Timedelta(days=1))
    assert summary["rows"] == 3 * 288
    scores = lake.read_parquet(lake.list("scores/date=2026-09-03/group=fleet/")[0]).to_pandas()
    assert scores.groupby("entity").size().to_dict() == {"host-a": 288, "host-b": 288, "host-c": 288}
    assert scores["model_version"].unique().tolist() == [trained["version"]]
