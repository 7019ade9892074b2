"""Writers killed at chosen points leave the previous complete state; useless training publishes nothing.

Each kill test runs the writer in a child process that stops at the chosen
point and reports it. The test then kills the child with SIGKILL, checks what
a reader gets, and runs the step again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, NEXT_DAY, ingest, make_config, values  # noqa: E402

from lstmae import registry  # noqa: E402
from lstmae.config import config_from_dict  # noqa: E402
from lstmae.ingest import METRICS  # noqa: E402
from lstmae.landing import land_object  # noqa: E402
from lstmae.storage import LocalStorage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWO_DAYS = NEXT_DAY + pd.Timedelta(days=1)

# Child preamble: ``stop_here()`` writes the marker file and waits to be killed.
PREAMBLE = """
import os, sys, time
from pathlib import Path
MARKER = Path(sys.argv[1])
def stop_here():
    MARKER.write_text(str(os.getpid()))
    time.sleep(60)
    os._exit(3)  # never reached when the test kills the process
"""


def kill_at_point(tmp_path: Path, *parts: str, timeout: float = 60.0) -> None:
    """Run the script ``parts`` in a child, wait until it calls ``stop_here()``, then SIGKILL it."""
    marker = tmp_path / "stopped"
    marker.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + "".join(textwrap.dedent(part) for part in parts), str(marker)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"The child ended before its kill point: {child.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("The child did not reach its kill point in time")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


def _long(rows: list[str]) -> bytes:
    return ("timestamp,entity,metric,value\n" + "\n".join(rows) + "\n").encode()


def _land_days(lake, first: float, second: float) -> None:
    land_object(lake, DAY, "a.csv", _long([f"2026-09-01T00:00:00Z,n1,cpu,{first}", f"2026-09-01T00:05:00Z,n1,cpu,{first}"]))
    land_object(lake, NEXT_DAY, "a.csv", _long([f"2026-09-02T00:00:00Z,n1,cpu,{second}"]))


def _dataset_rows(lake) -> int:
    """Count the rows an external engine reads from metrics/ as a Hive-partitioned dataset."""
    return ds.dataset(lake.root / METRICS, format="parquet", partitioning="hive").to_table().num_rows


INGEST_TWO_DAYS = """
import pandas as pd
from lstmae.config import config_from_dict
from lstmae.ingest import ingest_interval
from lstmae.storage import LocalStorage
lake = LocalStorage(sys.argv[2])
ingest_interval(lake, config_from_dict({}), "2026-09-01T00:00:00Z", "2026-09-03T00:00:00Z")
"""


def test_kill_before_rename_keeps_old_partition(lake, tmp_path):
    _land_days(lake, 1, 2)
    ingest(lake, start=DAY, end=TWO_DAYS)
    _land_days(lake, 10, 20)
    script = """
    import os
    real_replace = os.replace
    def replace(source, target):
        if str(target).endswith("date=2026-09-02/part-000000-240000.parquet"):
            stop_here()
        real_replace(source, target)
    os.replace = replace
    """
    kill_at_point(tmp_path, script, INGEST_TWO_DAYS.replace("sys.argv[2]", repr(str(lake.root))))
    # Day 1 was replaced, day 2 was not: each partition is complete, old or new.
    assert values(lake, DAY, TWO_DAYS) == [
        ("2026-09-01T00:00:00.000Z", "n1", "cpu", 10.0),
        ("2026-09-01T00:05:00.000Z", "n1", "cpu", 10.0),
        ("2026-09-02T00:00:00.000Z", "n1", "cpu", 2.0),
    ]
    leftovers = [p.name for p in (lake.root / METRICS / "date=2026-09-02").iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1
    assert _dataset_rows(lake) == 3
    ingest(lake, start=DAY, end=TWO_DAYS)
    assert [row[3] for row in values(lake, DAY, TWO_DAYS)] == [10.0, 10.0, 20.0]


def test_kill_mid_write_leaves_no_partial_file(lake, tmp_path):
    _land_days(lake, 1, 2)
    ingest(lake, start=DAY, end=TWO_DAYS)
    _land_days(lake, 10, 20)
    script = """
    import lstmae.storage as storage
    real_fdopen = storage.os.fdopen
    class HalfWriter:
        def __init__(self, stream):
            self.stream = stream
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.stream.__exit__(*exc)
        def write(self, data):
            self.stream.write(data[: len(data) // 2])
            self.stream.flush()
            stop_here()
        def __getattr__(self, name):
            return getattr(self.stream, name)
    def fdopen(handle, mode="r", *args, **kwargs):
        return HalfWriter(real_fdopen(handle, mode, *args, **kwargs))
    storage.os.fdopen = fdopen
    """
    kill_at_point(tmp_path, script, INGEST_TWO_DAYS.replace("sys.argv[2]", repr(str(lake.root))))
    assert [row[3] for row in values(lake, DAY, TWO_DAYS)] == [1.0, 1.0, 2.0]
    assert _dataset_rows(lake) == 3


def test_kill_during_slice_replacement(lake, tmp_path):
    rows = [f"{(DAY + pd.Timedelta(hours=h)).isoformat()},n1,cpu,{h}" for h in range(24)]
    land_object(lake, DAY, "day.csv", _long(rows))
    ingest(lake)
    land_object(lake, DAY, "day.csv", _long([row.replace(",cpu,10", ",cpu,99") for row in rows]))
    script = """
    from lstmae.storage import LocalStorage
    real_write = LocalStorage.write_bytes
    def write_bytes(self, key, data):
        if key.endswith("part-100000-110000.parquet"):
            stop_here()  # remainder slices are written, the new hour is not
        real_write(self, key, data)
    LocalStorage.write_bytes = write_bytes
    from lstmae.config import config_from_dict
    from lstmae.ingest import ingest_interval
    ingest_interval(LocalStorage(ROOT_DIR), config_from_dict({}), "2026-09-01T10:00:00Z", "2026-09-01T11:00:00Z")
    """
    kill_at_point(tmp_path, script.replace("ROOT_DIR", repr(str(lake.root))))
    folder = lake.root / METRICS / "date=2026-09-01"
    assert sorted(p.name for p in folder.glob("part-*")) == [
        "part-000000-100000.parquet", "part-000000-240000.parquet", "part-110000-240000.parquet",
    ]
    assert [row[3] for row in values(lake)] == [float(h) for h in range(24)]
    ingest(lake, start=DAY + pd.Timedelta(hours=10), end=DAY + pd.Timedelta(hours=11))
    assert [row[3] for row in values(lake)][9:12] == [9.0, 99.0, 11.0]
    assert len(values(lake)) == 24
    assert _dataset_rows(lake) == 24


def test_kill_before_old_slice_deleted(lake, tmp_path):
    rows = [f"{(DAY + pd.Timedelta(hours=h)).isoformat()},n1,cpu,{h}" for h in range(24)]
    land_object(lake, DAY, "day.csv", _long(rows))
    ingest(lake)
    land_object(lake, DAY, "day.csv", _long([row.replace(",cpu,10", ",cpu,99") for row in rows]))
    script = """
    from lstmae.storage import LocalStorage
    def delete(self, key):
        stop_here()
    LocalStorage.delete = delete
    from lstmae.config import config_from_dict
    from lstmae.ingest import ingest_interval
    ingest_interval(LocalStorage(ROOT_DIR), config_from_dict({}), "2026-09-01T10:00:00Z", "2026-09-01T11:00:00Z")
    """
    kill_at_point(tmp_path, script.replace("ROOT_DIR", repr(str(lake.root))))
    # The new hour and both remainders are written: the narrowest slices win over the old day.
    assert [row[3] for row in values(lake)] == [float(h) for h in range(10)] + [99.0] + [float(h) for h in range(11, 24)]


def test_kill_between_model_and_marker(lake, tmp_path):
    script = """
    from pathlib import Path
    from lstmae import registry
    from lstmae.storage import LocalStorage
    class FakeModel:
        def __init__(self, payload):
            self.payload = payload
        def save(self, path):
            Path(path).write_bytes(self.payload)
    lake = LocalStorage(ROOT_DIR)
    registry.register(lake, "all", "20260901T000000Z-aaaaaa", FakeModel(b"v1"), {"status": "promoted", "features": ["cpu"]})
    registry.promote(lake, "all", "20260901T000000Z-aaaaaa")
    real_write = LocalStorage.write_bytes
    def write_bytes(self, key, data):
        if key.endswith("20260902T000000Z-bbbbbb/model.json"):
            stop_here()
        real_write(self, key, data)
    LocalStorage.write_bytes = write_bytes
    registry.register(lake, "all", "20260902T000000Z-bbbbbb", FakeModel(b"v2"), {"status": "promoted", "features": ["cpu"]})
    """
    kill_at_point(tmp_path, script.replace("ROOT_DIR", repr(str(lake.root))))
    assert (lake.root / "models/all/20260902T000000Z-bbbbbb/model.keras").read_bytes() == b"v2"
    assert [entry.version for entry in registry.list_versions(lake, "all")] == ["20260901T000000Z-aaaaaa"]
    assert registry.resolve(lake, "all").version == "20260901T000000Z-aaaaaa"
    with pytest.raises(registry.RegistryError, match="Known versions: \\['20260901T000000Z-aaaaaa'\\]"):
        registry.get_version(lake, "all", "20260902T000000Z-bbbbbb")


# Training that would make a useless model


def _train_config(**group):
    settings = {"name": "all", "timesteps": 6, "train_stride": 3, "units": [4, 4, 4], "epochs": 2, "batch_size": 16}
    settings.update(group)
    return config_from_dict({"step": "5min", "min_training_windows": 8, "groups": [settings]})


def _land_synthetic(lake: LocalStorage, hours: int) -> None:
    import numpy as np

    index = pd.date_range(DAY, periods=hours * 12, freq="5min")
    phase = np.arange(len(index)) / 12.0
    rows = [f"{stamp.isoformat()},n1,cpu,{0.5 + 0.1 * np.sin(p):.4f}" for stamp, p in zip(index, phase)]
    rows += [f"{stamp.isoformat()},n1,mem,{0.3 + 0.1 * np.cos(p):.4f}" for stamp, p in zip(index, phase)]
    land_object(lake, DAY, "n1.csv", _long(rows))
    ingest(lake)


def test_too_few_windows_publish_nothing(lake):
    from lstmae.training import TrainingError, train_group

    _land_synthetic(lake, hours=3)
    with pytest.raises(TrainingError, match=r"only \d+ training windows of 6 rows \(at least 8 needed\)"):
        train_group(lake, _train_config(), "all", DAY, DAY + pd.Timedelta(hours=3), plots=False)
    assert lake.list("models/") == []


def test_nan_loss_publishes_nothing(lake, monkeypatch):
    import keras

    from lstmae import model as model_module
    from lstmae.training import train_group

    _land_synthetic(lake, hours=12)
    real_build = model_module.build_autoencoder

    def exploding(*args, **kwargs):
        # The same network with a loss that turns NaN, as an exploding run does.
        network = real_build(*args, **kwargs)
        network.compile(optimizer=keras.optimizers.Adam(), loss=lambda y, p: keras.ops.mean((p - y) ** 2) * float("nan"))
        return network

    monkeypatch.setattr(model_module, "build_autoencoder", exploding)
    with pytest.raises(ValueError, match=r"Training diverged: loss .* is not finite"):
        train_group(lake, _train_config(), "all", DAY, DAY + pd.Timedelta(hours=12), plots=False)
    assert lake.list("models/") == []


def test_kill_before_scores_slice_published(scored_lake, tmp_path):
    """Score streams its slices through a temporary file: a kill before the rename keeps the old slice."""
    import shutil

    import pyarrow.parquet as pq

    from lstmae.pipeline import score_group

    root = tmp_path / "copy"
    shutil.copytree(scored_lake["lake"], root)
    lake = LocalStorage(root)
    day = scored_lake["score_days"][-1]
    partition = root / "scores" / f"date={day:%Y-%m-%d}" / "group=all"
    before = {path.name: pq.read_table(path) for path in sorted(partition.glob("*.parquet"))}
    assert len(before) == 1
    config_yaml = scored_lake["config_path"].read_text(encoding="utf-8")
    script = f"""
    import os
    import yaml
    import pandas as pd
    import lstmae.storage as storage
    from lstmae.config import config_from_dict
    from lstmae.pipeline import score_group
    real_replace = storage.os.replace
    def replace(source, target):
        if "/scores/" in str(target) and not os.path.basename(str(target)).startswith("."):
            stop_here()
        real_replace(source, target)
    storage.os.replace = replace
    data = yaml.safe_load({config_yaml!r})
    data["lake"] = {str(root)!r}
    day = pd.Timestamp({day.isoformat()!r})
    score_group(storage.LocalStorage({str(root)!r}), config_from_dict(data), "all", day, day + pd.Timedelta(days=1))
    """
    kill_at_point(tmp_path, script, timeout=120)

    visible = sorted(path.name for path in partition.glob("*.parquet"))
    assert visible == list(before)
    for name, table in before.items():
        assert pq.read_table(partition / name).equals(table)
    # The rerun publishes the same rows as before the kill, compared in entity and time order.
    score_group(lake, scored_lake["config"], "all", day, day + pd.Timedelta(days=1))
    after = pq.read_table(partition / visible[0])
    assert after.num_rows == before[visible[0]].num_rows
    keys = ["entity", "timestamp"]
    assert after.sort_by([(k, "ascending") for k in keys]).equals(before[visible[0]].sort_by([(k, "ascending") for k in keys]))
