"""Detection quality floors on real labelled servers, through the production path.

Each entity is trained (10 epochs, seed 42), its test period scored and
combined in a ``file://`` lake, and the lake's scores and incidents evaluated
against the experts' labels. The floors sit below the values measured with
these settings (see ``FLOORS``), with margin for run-to-run noise of
TensorFlow on other processors. A drop below one means the default detection
got worse. ``bench/detection.py`` measures all eleven entities with 20 epochs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _conftest():
    """Import this folder's conftest.py (test files are not a package under importlib mode)."""
    spec = importlib.util.spec_from_file_location("lstmae_detection_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_shared_data = _conftest().require_shared_data

EPOCHS = 10

# Floors per entity, measured with EPOCHS epochs and the default training
# stride of 10 rows on a shared 2-core x86-64 machine (TensorFlow 2.21,
# oneDNN on). Runs are identical when repeated. Over four configuration
# seeds (42, the default that the test runs, and 1, 2, 3) the range was:
#   omi-2: point F1 0.50-0.61, event F1 0.57-0.67, 0-0.07 false alarms per day, best F1 0.55-0.62, AUC-PR 0.44-0.48
#   omi-8: point F1 0.47-0.77, event F1 0.50-0.67, 0.07-0.35 false alarms per day, best F1 0.53-0.80, AUC-PR 0.41-0.76
# The default seed gave omi-2 0.552 / 0.667 / 0 / 0.596 / 0.466
# and omi-8 0.472 / 0.571 / 0.348 / 0.526 / 0.414.
# Both use the default incident size: closed incidents of fewer than
# 6 points are dropped.
# Training is chaotic: a change of 1e-7 in the initial weights, or float32
# rounding in another order, leads to a different model after a few epochs.
# So the floors sit below the spread of the four seeds, and they catch a
# broken detector, not a different seed. With the prototype's stride of 30
# rows, omi-8 measured point F1 0.14 to 0.44 over the same seeds. The
# reference rule measures 0.03-0.27 point F1 on these servers.
FLOORS = {
    "omi-2": {"point_f1": 0.45, "event_f1": 0.45, "false_alarms_per_day": 0.3, "best_f1": 0.50, "auc_pr": 0.40},
    "omi-8": {"point_f1": 0.40, "event_f1": 0.45, "false_alarms_per_day": 0.5, "best_f1": 0.45, "auc_pr": 0.35},
}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("entity", sorted(FLOORS))
def test_default_detection_floor(entity, lake):
    from lstmae.config import config_from_dict
    from lstmae.evaluate import backtest

    folder = require_shared_data("asd", entity)
    config = config_from_dict({"step": "5min", "groups": [{"name": "all", "epochs": EPOCHS, "slo_percentiles": {}}]})
    report = backtest(folder, lake, config, entity)["default"]
    floor = FLOORS[entity]
    assert report["scored_points"] == report["points"]
    assert report["point"]["f1"] >= floor["point_f1"]
    assert report["event"]["f1"] >= floor["event_f1"]
    assert report["false_alarms_per_day"] <= floor["false_alarms_per_day"]
    assert report["best"]["f1"] >= floor["best_f1"]
    assert report["auc_pr"] >= floor["auc_pr"]
