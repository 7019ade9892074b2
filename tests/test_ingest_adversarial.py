"""Twenty further bad inputs against ``ingest_interval``, each with its exact outcome.

Every case lands one or more objects in one day and states the curated
values, the quarantined rows per reason, the quarantined objects per reason
and the deduplicated count. docs/ingest.md lists the same cases.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, EPOCH, ingest, make_config, quarantined, values  # noqa: E402

from lstmae.formats.common import (  # noqa: E402
    INFINITE_VALUE,
    MALFORMED_RECORD,
    MISSING_METRIC,
    NOT_IN_LANDING_DAY,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
)
from lstmae.landing import land_object  # noqa: E402

T0 = "2026-09-01T00:00:00.000Z"


def _long(rows: list[str]) -> bytes:
    return ("timestamp,entity,metric,value\n" + "\n".join(rows) + "\n").encode()


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("n1.csv", data)
    return buffer.getvalue()


def _parquet_head() -> bytes:
    buffer = io.BytesIO()
    table = pa.table({"timestamp": pa.array([EPOCH * 1000] * 100, pa.timestamp("ms", tz="UTC")),
                      "entity": ["n1"] * 100, "metric": ["cpu"] * 100, "value": [float(i) for i in range(100)]})
    pq.write_table(table, buffer)
    return buffer.getvalue()[:300]


WIDE = b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n"


@dataclass
class Case:
    objects: list[tuple[str, bytes]]
    curated: list[tuple]
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    objects_quarantined: dict[str, int] = field(default_factory=dict)
    deduplicated: int = 0
    ingest: dict = field(default_factory=dict)


CASES = {
    "header only": Case([("n1.csv", b"timestamp,cpu,mem\n")], []),
    "semicolons, default delimiter": Case(
        [("n1.csv", b"timestamp;cpu\n2026-09-01T00:00:00Z;1\n")], [], objects_quarantined={"missing timestamp column": 1}),
    "metric column twice": Case(
        [("n1.csv", b"timestamp,cpu,cpu\n2026-09-01T00:00:00Z,1,2\n")], [(T0, "n1", "cpu", 2.0)], deduplicated=1),
    "trailing delimiter in header": Case(
        [("n1.csv", b"timestamp,cpu,\n2026-09-01T00:00:00Z,1,\n2026-09-01T00:05:00Z,2,7\n")],
        [(T0, "n1", "cpu", 1.0), ("2026-09-01T00:05:00.000Z", "n1", "cpu", 2.0)],
        rows_quarantined={f"{MISSING_METRIC}: column 3 has no name in the header": 1}),
    "UTF-16 from a spreadsheet": Case([("n1.csv", WIDE.decode().encode("utf-16"))], [(T0, "n1", "cpu", 1.0)]),
    "Latin-1 bytes": Case(
        [("l.csv", _long(["2026-09-01T00:00:00Z,café,cpu,1"]).decode().encode("latin-1"))], [],
        objects_quarantined={"not UTF-8 text": 1}),
    "gzip inside gzip": Case([("n1.csv.gz", gzip.compress(gzip.compress(WIDE)))], [(T0, "n1", "cpu", 1.0)]),
    "ZIP archive named .csv": Case([("n1.csv", _zip(WIDE))], [], objects_quarantined={"ZIP archive instead of an export": 1}),
    "bzip2, xz and zstd": Case(
        [("a.csv.bz2", bz2.compress(WIDE)), ("b.csv.xz", lzma.compress(WIDE)), ("c.csv.zst", _zstd(WIDE))],
        [(T0, "a", "cpu", 1.0), (T0, "b", "cpu", 1.0), (T0, "c", "cpu", 1.0)]),
    "nanosecond fractions": Case(
        [("l.csv", _long(["2026-09-01T00:00:00.123456789Z,n1,cpu,1", "2026-09-01T00:00:00.123999Z,n1,cpu,2"]))],
        [("2026-09-01T00:00:00.123Z", "n1", "cpu", 2.0)], deduplicated=1),
    "year 9999 and a leap second": Case(
        [("l.csv", _long(["9999-12-31T23:59:59Z,n1,cpu,1", "2026-09-01T23:59:60Z,n1,cpu,2"]))], [],
        rows_quarantined={TIMESTAMP_OUT_OF_RANGE: 1, UNPARSEABLE_TIMESTAMP: 1}),
    "overflow to infinity and negative zero": Case(
        [("l.csv", _long(["2026-09-01T00:00:00Z,n1,cpu,1e309", "2026-09-01T00:01:00Z,n1,cpu,-0"]))],
        [("2026-09-01T00:01:00.000Z", "n1", "cpu", -0.0)], rows_quarantined={INFINITE_VALUE: 1}),
    "VictoriaMetrics export cut mid-line": Case(
        [("e.jsonl", (json.dumps({"metric": {"__name__": "up", "instance": "a:9100"}, "values": [1, 2],
                                  "timestamps": [EPOCH * 1000, EPOCH * 1000 + 1000]}) + '\n{"metric":{"__name__":"up","instance":"b').encode())],
        [(T0, "a", "up", 1.0), ("2026-09-01T00:00:01.000Z", "a", "up", 2.0)],
        rows_quarantined={f"{MALFORMED_RECORD}: not a JSON object with 'metric', 'values' and 'timestamps'": 1}),
    "VictoriaMetrics lengths differ": Case(
        [("e.jsonl", json.dumps({"metric": {"__name__": "up", "instance": "a"}, "values": [1, 2, 3],
                                 "timestamps": [EPOCH * 1000]}).encode())], [],
        rows_quarantined={f"{MALFORMED_RECORD}: 3 values but 1 timestamps": 3}),
    "Prometheus series twice": Case(
        [("q.json", json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "x", "instance": "a"}, "values": [[EPOCH, "1"]]},
            {"metric": {"__name__": "x", "instance": "a"}, "values": [[EPOCH, "2"]]}]}}).encode())],
        [(T0, "a", "x", 2.0)], deduplicated=1),
    "Prometheus scalar result": Case(
        [("q.json", json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [EPOCH, "1"]}}).encode())], [],
        objects_quarantined={"unsupported result type": 1}),
    "line protocol without fields, escaped comma": Case(
        [("t.lp", b"cpu,host=a 1788220800000000000\ncpu\\,x,host=b usage=1 1788220800000000000\n")],
        [(T0, "b", "cpu,x_usage", 1.0)], rows_quarantined={f"{MALFORMED_RECORD}: not a line-protocol point": 1}),
    "line protocol seconds read as nanoseconds": Case(
        [("t.lp", f"cpu,host=a usage=1 {EPOCH}\n".encode())], [], rows_quarantined={NOT_IN_LANDING_DAY: 1}),
    "Parquet cut short": Case([("p.parquet", _parquet_head())], [], objects_quarantined={"unreadable Parquet": 1}),
    "CloudWatch average of count 0": Case(
        [("fleet-1-2026-09-01-00-05-00-ab12", json.dumps({
            "namespace": "AWS/EC2", "metric_name": "CPUUtilization", "dimensions": {"InstanceId": "i-1"},
            "timestamp": EPOCH * 1000, "value": {"sum": 0.0, "count": 0.0, "min": 0.0, "max": 0.0}}).encode())], [],
        rows_quarantined={"average of a value with count 0": 1}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_further_bad_input(lake, name):
    case = CASES[name]
    for object_name, data in case.objects:
        land_object(lake, DAY, object_name, data)
    report = ingest(lake, make_config(**case.ingest))
    assert values(lake) == case.curated
    assert report.quarantined_by_reason == case.rows_quarantined
    assert report.objects_quarantined_by_reason == case.objects_quarantined
    assert report.rows_deduplicated == case.deduplicated
    assert len(quarantined(lake)) == sum(case.rows_quarantined.values()) + sum(case.objects_quarantined.values())


def test_twenty_cases():
    assert len(CASES) == 20


def test_delimiter_hint_in_detail(lake):
    land_object(lake, DAY, "n1.csv", b"timestamp;cpu\n2026-09-01T00:00:00Z;1\n")
    report = ingest(lake)
    assert report.quarantined_objects[0]["detail"] == (
        "no column 'timestamp' in ['timestamp;cpu']; the header is one column, so the delimiter is not ',': set ingest.delimiter"
    )


def test_line_protocol_seconds_show_1970(lake):
    land_object(lake, DAY, "t.lp", f"cpu,host=a usage=1 {EPOCH}\n".encode())
    ingest(lake)
    assert quarantined(lake) == [("t.lp", None, NOT_IN_LANDING_DAY, "1970-01-01 00:00:01.788Z,a,cpu_usage,1")]
