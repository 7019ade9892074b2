"""Configuration validation: every invalid value names its path and the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from lstmae.config import Config, ConfigError, config_from_dict, load_config


def test_empty_config_is_defaults():
    config = config_from_dict({})
    assert config.step == "5min"
    assert config.step_delta == pd.Timedelta(minutes=5)
    assert config.max_gap_steps == 3
    assert [g.name for g in config.groups] == ["all"]
    assert config.groups[0].timesteps == 60
    assert config.groups[0].train_stride == 10


def test_config_error_is_value_error():
    # The CLI and the DAG tasks catch ValueError; ConfigError must be one.
    assert issubclass(ConfigError, ValueError)


def test_unknown_root_key():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"stepp": "5min"})
    assert "Unknown configuration key(s) ['stepp'] at <root>" in str(error.value)
    assert "'step'" in str(error.value)


def test_unknown_group_key():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"groups": [{"name": "cpu", "timestep": 60}]})
    assert "['timestep'] at groups[0]" in str(error.value)
    assert "'timesteps'" in str(error.value)


def test_unknown_threshold_key():
    with pytest.raises(ConfigError, match=r"\['sigmas'\] at groups\[0\]\.threshold"):
        config_from_dict({"groups": [{"name": "cpu", "threshold": {"sigmas": 3}}]})


def test_weights_must_sum_to_one():
    groups = [{"name": "cpu", "weight": 0.5}, {"name": "memory", "weight": 0.4}]
    with pytest.raises(ConfigError) as error:
        config_from_dict({"groups": groups})
    assert "groups[*].weight" in str(error.value)
    assert "group weights must sum to 1" in str(error.value)
    assert "Received: 0.9" in str(error.value)


def test_weights_summing_to_one_accepted():
    groups = [{"name": "cpu", "weight": 0.5}, {"name": "memory", "weight": 0.5}]
    config = config_from_dict({"groups": groups})
    assert [(g.name, g.weight) for g in config.groups] == [("cpu", 0.5), ("memory", 0.5)]


def test_nodes_layout_needs_entities():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"groups": [{"name": "cpu", "layout": "nodes", "metrics": ["cpu"]}]})
    assert "groups[0].entities" in str(error.value)
    assert "layout 'nodes' needs the list of entities" in str(error.value)


def test_nodes_layout_with_entities():
    data = {"name": "cpu", "layout": "nodes", "metrics": "cpu", "entities": ["node1", "node2", "node3"]}
    group = config_from_dict({"groups": [data]}).groups[0]
    assert group.layout == "nodes"
    assert group.metrics == ("cpu",)
    assert group.entities == ("node1", "node2", "node3")


def test_unknown_layout():
    with pytest.raises(ConfigError, match=r"groups\[0\]\.layout: expected one of metrics, nodes"):
        config_from_dict({"groups": [{"name": "cpu", "layout": "hosts"}]})


@pytest.mark.parametrize("step", ["five minutes", "0min", "-5min"])
def test_invalid_step(step):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"step": step})
    assert "at step" in str(error.value)
    assert "'5min' or '1min'" in str(error.value)


def test_timesteps_below_two():
    with pytest.raises(ConfigError, match=r"groups\[0\]\.timesteps: a window needs at least 2 rows"):
        config_from_dict({"groups": [{"name": "cpu", "timesteps": 1}]})


def test_train_stride_default_sixth():
    group = config_from_dict({"groups": [{"name": "cpu", "timesteps": 12}]}).groups[0]
    assert group.train_stride == 2
    # Windows shorter than 6 rows still move by at least one row.
    assert config_from_dict({"groups": [{"name": "cpu", "timesteps": 5}]}).groups[0].train_stride == 1


def test_duplicate_group_names():
    groups = [{"name": "cpu", "weight": 0.5}, {"name": "cpu", "weight": 0.5}]
    with pytest.raises(ConfigError, match="group names must be unique"):
        config_from_dict({"groups": groups})


def test_group_without_name():
    with pytest.raises(ConfigError, match=r"groups\[0\]\.name: every group needs a non-empty name"):
        config_from_dict({"groups": [{"weight": 1.0}]})


def test_unknown_threshold_method():
    with pytest.raises(ConfigError, match=r"threshold\.method: expected one of reference, quantile"):
        config_from_dict({"groups": [{"name": "cpu", "threshold": {"method": "median"}}]})


def test_units_need_three_integers():
    with pytest.raises(ConfigError, match=r"groups\[0\]\.units: expected three integers"):
        config_from_dict({"groups": [{"name": "cpu", "units": [100, 100]}]})


def test_invalid_timezone():
    with pytest.raises(ConfigError, match="expected an IANA time zone name"):
        config_from_dict({"timezone": "Mars/Olympus"})


def test_unknown_group_lookup():
    config = config_from_dict({})
    with pytest.raises(ConfigError, match=r"Unknown group 'cpu'. Configured groups: \['all'\]"):
        config.group("cpu")


def test_load_config_file(tmp_path):
    path = tmp_path / "lstmae.yaml"
    path.write_text("step: 1min\ngroups:\n  - name: cpu\n    timesteps: 30\n", encoding="utf-8")
    config = load_config(path)
    assert config.step_delta == pd.Timedelta(minutes=1)
    assert config.groups[0].timesteps == 30
    assert config.groups[0].train_stride == 5


def test_load_config_error_names_file(tmp_path):
    path = tmp_path / "lstmae.yaml"
    path.write_text("stepp: 1min\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: Unknown configuration key(s) ['stepp']")


def test_load_config_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("groups: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"Invalid YAML in {path}"):
        load_config(path)


def test_load_config_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "env.yaml"
    path.write_text("max_gap_steps: 5\n", encoding="utf-8")
    monkeypatch.setenv("LSTMAE_CONFIG", str(path))
    assert load_config().max_gap_steps == 5


def test_load_config_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path).groups == Config().groups
