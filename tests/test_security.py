"""Nothing loaded from storage runs code, names from exports stay inside their keys, secrets stay out of logs."""

from __future__ import annotations

import ast
import http.server
import json
import logging
import re
import sys
import threading
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, curated_rows, ingest  # noqa: E402

from lstmae.landing import land_object, land_wide_csv  # noqa: E402
from lstmae.lake import partition  # noqa: E402
from lstmae.storage import LocalStorage, S3Storage, StorageError, escape_segment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("lstmae", "dags", "plugins", "scripts", "bench", "tests")
# Modules whose loaders can run code from the data they read.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"read_pickle", "to_pickle", "unsafe_load", "load_model_unsafe"}


def _python_files() -> list[Path]:
    files = []
    for folder in SOURCE_FOLDERS:
        files.extend(p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)
    return sorted(files)


def test_no_pickle_imports_or_calls():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_CALLS:
                names = [node.attr]
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", False) is True:
                names = ["allow_pickle=True"]
            elif isinstance(node, ast.keyword) and node.arg == "safe_mode" and getattr(node.value, "value", True) is False:
                names = ["safe_mode=False"]
            bad = [name for name in names if name in UNSAFE_MODULES | UNSAFE_CALLS | {"allow_pickle=True", "safe_mode=False"}]
            offenders.extend(f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in bad)
    assert len(_python_files()) > 20
    assert offenders == []


def test_yaml_loaded_safely():
    offenders = []
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(r"\byaml\.load\(", line) and "SafeLoader" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def _tiny_model(with_lambda: bool):
    import keras

    inputs = keras.Input(shape=(4, 2))
    x = keras.layers.LSTM(3, return_sequences=True)(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(2))(x)
    return keras.Model(inputs, outputs)


def test_lambda_layer_rejected_by_safe_mode(tmp_path):
    from lstmae.model import load_model

    path = tmp_path / "lambda.keras"
    _tiny_model(with_lambda=True).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(str(path))


def test_registered_lambda_model_rejected(lake):
    from lstmae import registry

    version = "20260901T000000Z-aaaaaa"
    registry.register(lake, "all", version, _tiny_model(with_lambda=True), {"status": "registered", "features": ["a", "b"]})
    entry = registry.get_version(lake, "all", version)
    with pytest.raises(ValueError, match="safe_mode"):
        registry.load_keras_model(lake, entry)


def test_plain_model_loads_in_safe_mode(tmp_path):
    import numpy as np

    from lstmae.model import load_model

    model = _tiny_model(with_lambda=False)
    path = tmp_path / "plain.keras"
    model.save(path)
    loaded = load_model(str(path))
    window = np.ones((1, 4, 2), dtype=np.float32)
    assert np.allclose(np.asarray(loaded(window)), np.asarray(model(window)))


# Names from exports


HOSTILE = ["../../models/current", "..", ".", "a/b", "%2e%2e%2fx", "_SUCCESS", "/etc/passwd", "c:\\windows", "node\x00null"]


def test_hostile_entity_and_metric_names_stay_inside(lake):
    rows = [f"2026-09-01T00:0{i}:00Z,{name},{HOSTILE[-1 - i]},{i}" for i, name in enumerate(HOSTILE[:-1])]
    land_object(lake, DAY, "hostile.csv", ("timestamp,entity,metric,value\n" + "\n".join(rows) + "\n").encode())
    before = set(lake.list(""))
    report = ingest(lake)
    written = set(lake.list("")) - before
    assert report.rows_curated == len(HOSTILE) - 1
    assert written == {
        "metrics/date=2026-09-01/part-000000-240000.parquet",
        "metrics/date=2026-09-01/_ingest_report-000000-240000.json",
        "quarantine/date=2026-09-01/part-000000-240000.parquet",
    }
    assert {row[1] for row in curated_rows(lake)} == set(HOSTILE[:-1])
    assert not (lake.root.parent / "models").exists()


def test_hostile_names_escaped_in_keys(lake, tmp_path):
    export = tmp_path / "export.csv"
    export.write_text("timestamp,cpu\n2026-09-01T00:00:00Z,1\n")
    land_wide_csv(lake, export, "../../models/current")
    assert lake.list("") == ["landing/date=2026-09-01/%2E.%2F..%2Fmodels%2Fcurrent.csv.gz"]
    ingest(lake)
    assert {row[1] for row in curated_rows(lake)} == {"../../models/current"}
    for name in HOSTILE:
        segment = escape_segment(name)
        assert "/" not in segment
        assert segment not in ("", ".", "..")
        assert partition("scores", DAY, name).startswith("scores/date=2026-09-01/group=")
        assert partition("scores", DAY, name).count("/") == 2


@pytest.mark.parametrize("key", ["metrics/../../x", "../x", "/etc/passwd", "a//b", "a/./b", ""])
def test_traversal_keys_rejected(lake, key):
    with pytest.raises(ValueError, match="Invalid storage key"):
        lake.write_bytes(key, b"x")
    with pytest.raises(ValueError, match="Invalid storage key"):
        S3Storage("s3://bucket-x/lake", client=_offline_client())._key(key)


def _offline_client():
    import boto3
    from botocore.config import Config

    return boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1").client(
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"total_max_attempts": 1}, connect_timeout=0.2)
    )


# Secrets


FAKE_SECRET = "fake-secret-Zq9xV3kPp7Lm2Qw8"


def _all_logs(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)


def test_credentials_never_logged(moto_server, monkeypatch, caplog):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from faultproxy import FaultProxy

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEACCESSKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    messages = []
    with FaultProxy(moto_server) as proxy, caplog.at_level(logging.DEBUG):
        storage = S3Storage("s3://lstmae-secrets/lake", endpoint_url=proxy.url)
        storage.client.create_bucket(Bucket="lstmae-secrets")
        proxy.add("503", method="PUT", times=1)
        storage.write_bytes("a", b"x")
        proxy.add("403", times=5)
        with pytest.raises(StorageError) as refused:
            storage.read_bytes("a")
        messages.append(str(refused.value))
    storage = S3Storage("s3://lstmae-secrets/lake", endpoint_url="http://127.0.0.1:9")
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as unreachable:
        storage.list("a/")
    messages.append(str(unreachable.value))
    with caplog.at_level(logging.DEBUG), pytest.raises(ValueError) as with_userinfo:
        S3Storage("s3://lstmae-secrets/lake", endpoint_url=f"http://user:{FAKE_SECRET}@127.0.0.1:9")
    messages.append(str(with_userinfo.value))
    assert "http://127.0.0.1:9" in messages[1]
    assert messages[2].startswith("Invalid S3 endpoint 'http://127.0.0.1:9' from the endpoint_url argument: it contains user information")
    assert "Retrying S3 PutObject (attempt 2 of 3) after: 503 SlowDown" in _all_logs(caplog)
    for text in [*messages, _all_logs(caplog)]:
        assert FAKE_SECRET not in text


def test_endpoint_secret_not_in_config_error():
    with pytest.raises(ValueError) as raised:
        S3Storage("s3://bucket-x/lake", endpoint_url=f"user:{FAKE_SECRET}@minio:9000")
    assert FAKE_SECRET not in str(raised.value)
    assert "minio:9000" in str(raised.value)


class _Capture(http.server.BaseHTTPRequestHandler):
    """A webhook stand-in on 127.0.0.1 that rejects every message."""

    received: list[str] = []

    def do_POST(self):
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_webhook_url_never_logged(lake, caplog):
    from lstmae.alerts import Alert, send_alerts

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/{FAKE_SECRET}"

    def post(payload: dict) -> None:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5)

    alert = Alert("incident-1", "incident", "all", "node-1", pd.Timestamp("2026-09-01T10:00Z"), pd.Timestamp("2026-09-01T11:00Z"))
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(urllib.error.HTTPError) as raised:
            send_alerts(lake, [alert], post, pd.Timedelta(minutes=30), link="http://127.0.0.1/anomalies")
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Capture.received) == 1
    assert FAKE_SECRET not in str(raised.value)
    assert FAKE_SECRET not in _all_logs(caplog)
    for key in lake.list(""):
        assert FAKE_SECRET.encode() not in lake.read_bytes(key)
