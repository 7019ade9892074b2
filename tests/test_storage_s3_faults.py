"""S3 faults through a fault-injecting proxy on 127.0.0.1 in front of moto: retries, logs, and what readers see."""

from __future__ import annotations

import json
import logging
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FaultProxy  # noqa: E402
from ingest_helpers import DAY, NEXT_DAY, make_config, values  # noqa: E402

from lstmae import registry  # noqa: E402
from lstmae.ingest import ingest_interval  # noqa: E402
from lstmae.landing import land_object  # noqa: E402
from lstmae.storage import S3Storage, StorageError, make_s3_client  # noqa: E402

pytestmark = pytest.mark.s3
BUCKET = "lstmae-faults"


@pytest.fixture
def faulty(moto_server, monkeypatch):
    """``(storage through the proxy, proxy)``; the bucket is made directly on moto and reset afterwards."""
    monkeypatch.setenv("LSTMAE_S3_READ_TIMEOUT", "1")
    make_s3_client(moto_server).create_bucket(Bucket=BUCKET)
    proxy = FaultProxy(moto_server).start()
    try:
        yield S3Storage(f"s3://{BUCKET}/lake", endpoint_url=proxy.url), proxy
    finally:
        proxy.stop()
        request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def _retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lstmae.storage" and r.getMessage().startswith("Retrying")]


def _long(rows: list[str]) -> bytes:
    return ("timestamp,entity,metric,value\n" + "\n".join(rows) + "\n").encode()


def test_throttled_put_retried_and_logged(faulty, caplog):
    storage, proxy = faulty
    proxy.add("503", method="PUT", path="a/object", times=2)
    with caplog.at_level(logging.INFO, logger="lstmae.storage"):
        storage.write_bytes("a/object", b"payload")
    assert storage.read_bytes("a/object") == b"payload"
    assert [r.action for r in proxy.requests if r.method == "PUT"] == ["503", "503", None]
    assert _retries(caplog) == [
        "Retrying S3 PutObject (attempt 2 of 3) after: 503 SlowDown",
        "Retrying S3 PutObject (attempt 3 of 3) after: 503 SlowDown",
    ]


def test_connection_reset_retried(faulty, caplog):
    storage, proxy = faulty
    proxy.add("reset", method="PUT", path="a/object")
    with caplog.at_level(logging.INFO, logger="lstmae.storage"):
        storage.write_bytes("a/object", b"payload")
    assert storage.read_bytes("a/object") == b"payload"
    assert len(proxy.faults("reset")) == 1
    [line] = _retries(caplog)
    assert line.startswith("Retrying S3 PutObject (attempt 2 of 3) after: Connection was closed")


def test_cut_off_body_read_again(faulty, caplog):
    storage, proxy = faulty
    storage.write_bytes("a/object", b"0123456789" * 100)
    proxy.add("truncate", method="GET", path="a/object")
    with caplog.at_level(logging.INFO, logger="lstmae.storage"):
        assert storage.read_bytes("a/object") == b"0123456789" * 100
    [line] = _retries(caplog)
    assert line.startswith("Retrying S3 GetObject of s3://lstmae-faults/lake/a/object (attempt 2 of 3): the body was cut off")


def test_slow_response_times_out_and_retries(faulty, caplog):
    storage, proxy = faulty
    storage.write_bytes("a/object", b"payload")
    proxy.add("delay", method="GET", path="a/object", delay=2.5)
    with caplog.at_level(logging.INFO, logger="lstmae.storage"):
        assert storage.read_bytes("a/object") == b"payload"
    [line] = _retries(caplog)
    assert line.startswith("Retrying S3 GetObject (attempt 2 of 3) after: Read timeout")


def test_exhausted_retries_name_endpoint(faulty):
    storage, proxy = faulty
    storage.write_bytes("a/object", b"old")
    proxy.add("503", method="PUT", path="a/object", times=10)
    with pytest.raises(StorageError) as raised:
        storage.write_bytes("a/object", b"new")
    message = str(raised.value)
    assert f"S3 PutObject of s3://{BUCKET}/lake/a/object at {proxy.url} failed after 3 attempt(s): 503 SlowDown" in message
    assert "throttling" in message
    assert len(proxy.faults("503")) == 3
    assert storage.read_bytes("a/object") == b"old"


def test_failed_partition_upload_keeps_previous_day(faulty):
    storage, proxy = faulty
    land_object(storage, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1"]))
    land_object(storage, NEXT_DAY, "a.csv", _long(["2026-09-02T00:00:00Z,n1,cpu,2"]))
    ingest_interval(storage, make_config(), DAY, NEXT_DAY + pd.Timedelta(days=1))
    land_object(storage, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,10"]))
    land_object(storage, NEXT_DAY, "a.csv", _long(["2026-09-02T00:00:00Z,n1,cpu,20"]))
    proxy.add("503", method="PUT", path=r"metrics/date(=|%3D)2026-09-02/part-", times=10)
    with pytest.raises(StorageError, match="PutObject of s3://lstmae-faults/lake/metrics/date=2026-09-02/part-000000-240000.parquet"):
        ingest_interval(storage, make_config(), DAY, NEXT_DAY + pd.Timedelta(days=1))
    # Day 1 is the new complete slice, day 2 still the old complete one.
    assert values(storage, DAY, NEXT_DAY + pd.Timedelta(days=1)) == [
        ("2026-09-01T00:00:00.000Z", "n1", "cpu", 10.0),
        ("2026-09-02T00:00:00.000Z", "n1", "cpu", 2.0),
    ]
    proxy.clear()
    ingest_interval(storage, make_config(), DAY, NEXT_DAY + pd.Timedelta(days=1))
    assert [row[3] for row in values(storage, DAY, NEXT_DAY + pd.Timedelta(days=1))] == [10.0, 20.0]


class _FakeModel:
    """Stands in for a Keras model: the registry only calls ``save(path)``."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def save(self, path: str) -> None:
        Path(path).write_bytes(self.payload)


def test_failed_model_publication_keeps_current(faulty):
    storage, proxy = faulty
    registry.register(storage, "all", "20260901T000000Z-aaaaaa", _FakeModel(b"v1"), {"status": "promoted", "features": ["cpu"]})
    registry.promote(storage, "all", "20260901T000000Z-aaaaaa")
    proxy.add("503", method="PUT", path=r"20260902T000000Z-bbbbbb/model\.json", times=10)
    with pytest.raises(StorageError, match=r"model\.json"):
        registry.register(storage, "all", "20260902T000000Z-bbbbbb", _FakeModel(b"v2"), {"status": "promoted", "features": ["cpu"]})
    assert storage.exists("models/all/20260902T000000Z-bbbbbb/model.keras")
    assert [entry.version for entry in registry.list_versions(storage, "all")] == ["20260901T000000Z-aaaaaa"]
    assert registry.resolve(storage, "all").version == "20260901T000000Z-aaaaaa"
    with pytest.raises(registry.RegistryError, match="20260902T000000Z-bbbbbb"):
        registry.get_version(storage, "all", "20260902T000000Z-bbbbbb")


def test_ingest_through_faults_matches_clean_run(faulty, moto_server):
    storage, proxy = faulty
    rows = [f"{(DAY + pd.Timedelta(minutes=5 * i)).isoformat()},n{i % 3},cpu,{i}" for i in range(50)]
    land_object(storage, DAY, "a.csv", _long(rows))
    land_object(storage, DAY, "b.csv", _long(rows[10:20] + ["bad,n1,cpu,1"]))
    clean = ingest_interval(storage, make_config(), DAY, NEXT_DAY)
    expected = values(storage)
    proxy.add("503", method="GET", path=r"^/lstmae-faults/lake/landing/.*a\.csv$", times=2)
    proxy.add("reset", method="PUT", path=r"^/lstmae-faults/lake/metrics/", times=1)
    proxy.add("truncate", method="GET", path=r"^/lstmae-faults/lake/landing/.*b\.csv$", times=1)
    proxy.add("500", method="GET", path=r"list-type=2.*prefix=lake%2Fmetrics", times=1)
    faulted = ingest_interval(storage, make_config(), DAY, NEXT_DAY)
    assert values(storage) == expected
    counts = ("rows_read", "rows_curated", "rows_deduplicated", "rows_quarantined", "objects_quarantined")
    assert [getattr(faulted, name) for name in counts] == [getattr(clean, name) for name in counts]
    assert (clean.rows_read, clean.rows_curated, clean.rows_deduplicated, clean.rows_quarantined) == (61, 50, 10, 1)
    assert {r.action for r in proxy.faults()} == {"503", "reset", "truncate", "500"}


def test_endpoint_without_scheme_fails_with_fix():
    with pytest.raises(ValueError, match=r"Invalid S3 endpoint '127.0.0.1:9000' from the endpoint_url argument: give the scheme too"):
        S3Storage("s3://bucket-x/lake", endpoint_url="127.0.0.1:9000")


def test_endpoint_env_without_scheme_names_variable(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(ValueError, match=r"Invalid S3 endpoint 'minio:9000' from \$AWS_ENDPOINT_URL"):
        S3Storage("s3://bucket-x/lake")


def test_wrong_port_fails_fast_naming_endpoint(moto_server, caplog):
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = S3Storage("s3://bucket-x/lake", endpoint_url=f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.INFO, logger="lstmae.storage"), pytest.raises(StorageError) as raised:
        storage.list("metrics/")
    message = str(raised.value)
    assert message.startswith("S3 ListObjectsV2 of s3://bucket-x/lake/metrics/ failed after 3 attempt(s): Could not connect")
    assert f"Check that the endpoint http://127.0.0.1:{port} (from the endpoint_url argument) is right" in message
    assert len(_retries(caplog)) == 2


def test_refused_credentials_fail_without_retry(faulty):
    storage, proxy = faulty
    proxy.add("403", times=10)
    with pytest.raises(StorageError) as raised:
        storage.read_bytes("a/object")
    message = str(raised.value)
    assert message.startswith(f"S3 GetObject of s3://{BUCKET}/lake/a/object was rejected by {proxy.url} (from the endpoint_url argument)")
    assert "InvalidAccessKeyId" in message
    assert "Check the credentials" in message
    assert len(proxy.requests) == 1


def test_missing_bucket_named(moto_server):
    storage = S3Storage("s3://no-such-bucket-here/lake", endpoint_url=moto_server)
    with pytest.raises(StorageError, match=rf"S3 bucket 'no-such-bucket-here' does not exist at {moto_server}"):
        storage.write_bytes("a", b"x")


def test_missing_key_is_file_not_found(faulty):
    storage, _ = faulty
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/lake/none does not exist"):
        storage.read_bytes("none")
    assert storage.exists("none") is False


def test_report_json_on_s3(faulty):
    storage, _ = faulty
    land_object(storage, DAY, "a.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1"]))
    report = ingest_interval(storage, make_config(), DAY, NEXT_DAY)
    saved = json.loads(storage.read_bytes("metrics/date=2026-09-01/_ingest_report-000000-240000.json"))
    assert saved == report.to_dict()
