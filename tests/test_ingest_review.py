"""The bad inputs of the second ingest review, each with its exact outcome.

Each case lands objects in one day and states the curated values, the
quarantined rows per reason, the quarantined objects per reason and the
deduplicated count. docs/ingest.md lists the same cases. Further tests pin
the raw text and details of the new reasons, the decompression limits, the
per-record guard against parser bugs and the agreement of the fast and slow
number paths.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, EPOCH, curated_rows, ingest, labels, make_config, quarantined, values  # noqa: E402

from lstmae.formats import TOO_LARGE_UNPACKED, TOO_MANY_LAYERS, ParseError, decompress  # noqa: E402
from lstmae.formats.common import (  # noqa: E402
    INFINITE_VALUE,
    LABEL_CONFLICT,
    MALFORMED_RECORD,
    NAIVE_TIMESTAMP,
    NOT_A_NUMBER,
    NOT_IN_LANDING_DAY,
    PARSER_FAILURE,
    TIMESTAMP_OUT_OF_RANGE,
    UNPARSEABLE_TIMESTAMP,
    _slow_numbers,
    parse_values,
)
from lstmae.landing import land_object  # noqa: E402

T0 = "2026-09-01T00:00:00.000Z"
T1 = "2026-09-01T00:01:00.000Z"
T2 = "2026-09-01T00:02:00.000Z"
NS = EPOCH * 10**9
HUGE = "9" * 400
MODE_CONFLICT = f"{LABEL_CONFLICT}: labels differ in 'mode'; set ingest.metric_name to include it"
CPU_CONFLICT = f"{LABEL_CONFLICT}: labels differ in 'cpu'; set ingest.influx_metric_name to include it"


def _parquet(columns: dict | pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(columns if isinstance(columns, pa.Table) else pa.table(columns), buffer)
    return buffer.getvalue()


TIMES = pa.array([EPOCH * 1000, EPOCH * 1000 + 60_000], type=pa.timestamp("ms", tz="UTC"))
LONG_PARQUET = {"timestamp": TIMES, "entity": ["a", "a"], "metric": ["cpu", "cpu"], "value": [1.0, 2.0]}


def _matrix(*series) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": list(series)}}).encode()


def _nested_gzip(data: bytes, layers: int) -> bytes:
    for _ in range(layers):
        data = gzip.compress(data, mtime=0)
    return data


CPU_SERIES = [
    {"metric": {"__name__": "node_cpu_seconds_total", "instance": "n1:9100", "mode": "idle"}, "values": [[EPOCH, "10"]]},
    {"metric": {"__name__": "node_cpu_seconds_total", "instance": "n1:9100", "mode": "user"}, "values": [[EPOCH, "3"]]},
]
PER_CORE = f"cpu,cpu=cpu0,host=a usage_idle=90 {NS}\ncpu,cpu=cpu1,host=a usage_idle=10 {NS}\n".encode()
BASIC_ISO = b"timestamp,cpu\n20260901T000200Z,1\n"


@dataclass
class Case:
    objects: list[tuple[str, bytes]]
    curated: list[tuple]
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    objects_quarantined: dict[str, int] = field(default_factory=dict)
    deduplicated: int = 0
    config: dict = field(default_factory=dict)


CASES = {
    # Failures of the review, now fixed.
    "CR-only line ends": Case(
        [("n1.csv", b"timestamp,cpu,mem\r2026-09-01T00:00:00Z,1,2\r2026-09-01T00:01:00Z,3,4\r")],
        [(T0, "n1", "cpu", 1.0), (T1, "n1", "cpu", 3.0), (T0, "n1", "mem", 2.0), (T1, "n1", "mem", 4.0)]),
    "entity with a trailing NUL": Case(
        [("a.csv", b"timestamp,entity,metric,value\n2026-09-01T00:00:00Z,node\x00,cpu,1\n2026-09-01T00:00:00Z,node,cpu,2\n")],
        [(T0, "node", "cpu", 2.0), (T0, "node\x00", "cpu", 1.0)]),
    "object names node%00 and node": Case(
        [("node%00.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n"), ("node.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,2\n")],
        [(T0, "node", "cpu", 2.0), (T0, "node\x00", "cpu", 1.0)]),
    "Prometheus instance with a trailing NUL": Case(
        [("q.json", _matrix({"metric": {"__name__": "x", "instance": "a\u0000"}, "values": [[EPOCH, "1"]]},
                            {"metric": {"__name__": "x", "instance": "a"}, "values": [[EPOCH, "2"]]}))],
        [(T0, "a", "x", 2.0), (T0, "a\x00", "x", 1.0)]),
    "line protocol timestamp above int64": Case(
        [("t.lp", f"cpu,host=a usage=1 {NS}\ncpu,host=a usage=2 9999999999999999999\n".encode())],
        [(T0, "a", "cpu_usage", 1.0)], rows_quarantined={TIMESTAMP_OUT_OF_RANGE: 1}),
    "line protocol 1e999": Case(
        [("t.lp", f"cpu,host=a usage=1e999 {NS}\n".encode())], [], rows_quarantined={INFINITE_VALUE: 1}),
    "line protocol integer of 400 digits": Case(
        [("t.lp", f"cpu,host=a usage=1 {NS}\ncpu,host=a big={HUGE}i {NS}\n".encode())],
        [(T0, "a", "cpu_usage", 1.0)], rows_quarantined={INFINITE_VALUE: 1}),
    "VictoriaMetrics timestamp above int64": Case(
        [("v.jsonl", b'{"metric":{"__name__":"up","instance":"a"},"values":[1,2],"timestamps":[1788220800000,99999999999999999999]}\n')],
        [(T0, "a", "up", 1.0)], rows_quarantined={TIMESTAMP_OUT_OF_RANGE: 1}),
    "VictoriaMetrics value of 400 digits": Case(
        [("v.jsonl", ('{"metric":{"__name__":"up","instance":"a"},"values":[1,' + HUGE + '],"timestamps":[1788220800000,1788220860000]}\n').encode())],
        [(T0, "a", "up", 1.0)], rows_quarantined={INFINITE_VALUE: 1}),
    "CloudWatch sum of 400 digits": Case(
        [("fh-1", ('{"namespace":"AWS/EC2","metric_name":"CPU","dimensions":{"InstanceId":"i-1"},"timestamp":1788220800000,'
                   '"value":{"sum":' + HUGE + ',"count":1}}\n'
                   '{"namespace":"AWS/EC2","metric_name":"CPU","dimensions":{"InstanceId":"i-1"},"timestamp":1788220860000,'
                   '"value":{"sum":1,"count":1}}\n').encode())],
        [(T1, "i-1", "CPU", 1.0)], rows_quarantined={INFINITE_VALUE: 1}),
    "Parquet list label column": Case(
        [("p.parquet", _parquet({**LONG_PARQUET, "tags": pa.array([["x"], ["y"]])}))],
        [(T0, "a", "cpu", 1.0), (T1, "a", "cpu", 2.0)]),
    "Parquet map label column": Case(
        [("p.parquet", _parquet({**LONG_PARQUET, "attrs": pa.array([[("k", "v")], [("k", "w")]], type=pa.map_(pa.string(), pa.string()))}))],
        [(T0, "a", "cpu", 1.0), (T1, "a", "cpu", 2.0)]),
    "Parquet column region twice": Case(
        [("p.parquet", _parquet(pa.Table.from_arrays(
            [TIMES, pa.array(["a", "a"]), pa.array(["cpu", "cpu"]), pa.array([1.0, 2.0]), pa.array(["r1", "r2"]), pa.array(["z1", "z2"])],
            names=["timestamp", "entity", "metric", "value", "region", "region"])))],
        [], objects_quarantined={"repeated column name": 1}),
    "Parquet column region twice, not a label": Case(
        [("p.parquet", _parquet(pa.Table.from_arrays(
            [TIMES, pa.array(["a", "a"]), pa.array(["cpu", "cpu"]), pa.array([1.0, 2.0]), pa.array(["r1", "r2"]), pa.array(["z1", "z2"])],
            names=["timestamp", "entity", "metric", "value", "region", "region"])))],
        [(T0, "a", "cpu", 1.0), (T1, "a", "cpu", 2.0)], config={"label_columns": []}),
    "Parquet uint64 timestamp 2**64-1": Case(
        [("p.parquet", _parquet({**LONG_PARQUET, "timestamp": pa.array([EPOCH * 1000, 2**64 - 1], type=pa.uint64())}))],
        [(T0, "a", "cpu", 1.0)], rows_quarantined={TIMESTAMP_OUT_OF_RANGE: 1}),
    "Parquet struct entity column": Case(
        [("p.parquet", _parquet({**LONG_PARQUET, "entity": pa.array([{"h": "a"}, {"h": "b"}])}))],
        [], objects_quarantined={"unusable column type": 1}),
    "Prometheus series differing only by mode": Case(
        [("q.json", _matrix(*CPU_SERIES))], [(T0, "n1", "node_cpu_seconds_total", 3.0)], rows_quarantined={MODE_CONFLICT: 1}),
    "Prometheus mode in the metric name": Case(
        [("q.json", _matrix(*CPU_SERIES))],
        [(T0, "n1", "node_cpu_seconds_total:idle", 10.0), (T0, "n1", "node_cpu_seconds_total:user", 3.0)],
        config={"metric_name": "{__name__}:{mode}"}),
    "Telegraf per-core cpu": Case(
        [("t.lp", PER_CORE)], [(T0, "a", "cpu_usage_idle", 10.0)], rows_quarantined={CPU_CONFLICT: 1}),
    "Telegraf per-core cpu in the metric name": Case(
        [("t.lp", PER_CORE)], [(T0, "a", "cpu0_usage_idle", 90.0), (T0, "a", "cpu1_usage_idle", 10.0)],
        config={"influx_metric_name": "{cpu}_{field}"}),
    "Prometheus series with metric null and 5 values": Case(
        [("q.json", _matrix({"metric": None, "values": [[EPOCH + 60 * i, "1"] for i in range(5)]}))], [],
        rows_quarantined={f"{MALFORMED_RECORD}: series 0 is not an object with 'metric'": 5}),
    "basic ISO time next to a naive time": Case(
        [("n.csv", b"timestamp,cpu\n20260901T000200Z,1\n2026-09-01T00:04:00,2\n")], [(T2, "n", "cpu", 1.0)],
        rows_quarantined={NAIVE_TIMESTAMP: 1}),
    "basic ISO time alone": Case([("n.csv", BASIC_ISO)], [(T2, "n", "cpu", 1.0)]),
    "basic ISO time with a time zone set": Case([("n.csv", BASIC_ISO)], [(T2, "n", "cpu", 1.0)], config={"timezone": "Europe/Berlin"}),
    "basic ISO offsets": Case(
        [("n.csv", b"timestamp,cpu\n20260901T020200+0200,1\n20260901T020300+02:00,2\n")],
        [(T2, "n", "cpu", 1.0), ("2026-09-01T00:03:00.000Z", "n", "cpu", 2.0)]),
    "gzip nested four times": Case(
        [("n.csv.gz", _nested_gzip(b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n", 4))], [], objects_quarantined={TOO_MANY_LAYERS: 1}),
    "gzip nested three times": Case(
        [("n.csv.gz", _nested_gzip(b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n", 3))], [(T0, "n", "cpu", 1.0)]),
    "Arabic-Indic and fullwidth digits": Case(
        [("n.csv", "timestamp,cpu\n2026-09-01T00:00:00Z,١٢\n2026-09-01T00:01:00Z,１２\n2026-09-01T00:02:00Z,12\n".encode())],
        [(T2, "n", "cpu", 12.0)], rows_quarantined={NOT_A_NUMBER: 2}),
    "line protocol Arabic-Indic digits": Case(
        [("t.lp", f"cpu,host=a usage=١٢ {NS}\ncpu,host=a usage=12 {NS}\n".encode())], [(T0, "a", "cpu_usage", 12.0)],
        rows_quarantined={NOT_A_NUMBER: 1}),
    "now and today as timestamps": Case(
        [("n.csv", b"timestamp,cpu\nnow,1\ntoday,2\n2026-09-01T00:00:00Z,3\n")], [(T0, "n", "cpu", 3.0)],
        rows_quarantined={UNPARSEABLE_TIMESTAMP: 2}),
    "metric names cpu and cpu, tab, x": Case(
        [("l.csv", b'timestamp,entity,metric,value\n2026-09-01T00:00:00Z,n1,"cpu\tx",1\n2026-09-01T00:00:00Z,n1,cpu,2\n')],
        [(T0, "n1", "cpu", 2.0), (T0, "n1", "cpu\tx", 1.0)]),
    # Cases that passed the review, kept as they are.
    "naive times, no time zone": Case(
        [("n.csv", b"timestamp,cpu\n2026-09-01 00:00:00,1\n2026-09-01 00:01:00,2\n")], [], rows_quarantined={NAIVE_TIMESTAMP: 2}),
    "Prometheus values a string": Case(
        [("q.json", _matrix({"metric": {"__name__": "x", "instance": "a"}, "values": "oops"}))], [],
        rows_quarantined={f"{MALFORMED_RECORD}: 'values' of series 0 is not a list": 1}),
    "offsets +25:00, +24:00, -00:00, +0530": Case(
        [("n.csv", b"timestamp,cpu\n2026-09-01T00:00:00+25:00,1\n2026-09-01T00:01:00+24:00,2\n"
                   b"2026-09-01T00:02:00-00:00,3\n2026-09-01T10:00:00+0530,4\n")],
        [(T2, "n", "cpu", 3.0), ("2026-09-01T04:30:00.000Z", "n", "cpu", 4.0)], rows_quarantined={UNPARSEABLE_TIMESTAMP: 2}),
    "naive Tokyo times across UTC midnight": Case(
        [("n.csv", b"timestamp,cpu\n2026-09-01 08:00:00,1\n2026-09-01 09:30:00,2\n2026-09-02 08:59:00,3\n")],
        [("2026-09-01T00:30:00.000Z", "n", "cpu", 2.0), ("2026-09-01T23:59:00.000Z", "n", "cpu", 3.0)],
        rows_quarantined={NOT_IN_LANDING_DAY: 1}, config={"timezone": "Asia/Tokyo"}),
    "quoted multi-line label": Case(
        [("n.csv", b'timestamp,entity,metric,value,note\n2026-09-01T00:00:00Z,a,cpu,1,"line1\nline2"\n2026-09-01T00:01:00Z,a,cpu,2,x\n')],
        [(T0, "a", "cpu", 1.0), (T1, "a", "cpu", 2.0)]),
    "gzip with trailing garbage": Case(
        [("n.csv.gz", gzip.compress(b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n") + b"GARBAGE")], [],
        objects_quarantined={"corrupt or truncated gzip": 1}),
    "escaped unicode object name": Case([("nodé 1%2Fx.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n")], [(T0, "nodé 1/x", "cpu", 1.0)]),
    "entity with a trailing space": Case(
        [("n.csv", b"timestamp,host,cpu\n2026-09-01T00:00:00Z,a ,1\n2026-09-01T00:00:00Z,a,2\n")], [(T0, "a", "cpu", 2.0)],
        deduplicated=1, config={"entity_column": "host"}),
    "epoch variants": Case(
        [("n.csv", b"timestamp,cpu\n1.7882208e12,1\n1788220860,2\n1788220920000000,3\n1788220980000000000,4\n-0,5\n")],
        [(T0, "n", "cpu", 1.0), (T1, "n", "cpu", 2.0), (T2, "n", "cpu", 3.0), ("2026-09-01T00:03:00.000Z", "n", "cpu", 4.0)],
        rows_quarantined={NOT_IN_LANDING_DAY: 1}),
    "two CSVs joined, each with a byte order mark": Case(
        [("n.csv", "\ufefftimestamp,cpu\n2026-09-01T00:00:00Z,1\n\ufefftimestamp,cpu\n2026-09-01T00:01:00Z,1\n".encode())],
        [(T0, "n", "cpu", 1.0), (T1, "n", "cpu", 1.0)], rows_quarantined={UNPARSEABLE_TIMESTAMP: 1}),
    "VictoriaMetrics NaN and Infinity literals": Case(
        [("v.jsonl", b'{"metric":{"__name__":"up","instance":"a"},"values":[NaN,Infinity,1],"timestamps":[1788220800000,1788220860000,1788220920000]}\n')],
        [(T0, "a", "up", None), (T2, "a", "up", 1.0)], rows_quarantined={INFINITE_VALUE: 1}),
    "Prometheus time as a string": Case(
        [("q.json", _matrix({"metric": {"__name__": "x", "instance": "a"}, "values": [["1788220800", "1"], [EPOCH + 60, "2"]]}))],
        [(T1, "a", "x", 2.0)], rows_quarantined={f"{MALFORMED_RECORD}: a sample is not a [time, value] pair": 1}),
    "NUL in a wide CSV header": Case([("n.csv", b"timestamp,cpu\x00\n2026-09-01T00:00:00Z,1\n")], [], objects_quarantined={"binary content": 1}),
}


def _config(settings: dict):
    settings = dict(settings)
    timezone = settings.pop("timezone", None)
    return make_config(timezone=timezone, **settings)


@pytest.mark.parametrize("name", list(CASES))
def test_review_case(lake, name):
    case = CASES[name]
    for object_name, data in case.objects:
        land_object(lake, DAY, object_name, data)
    report = ingest(lake, _config(case.config))
    assert values(lake) == case.curated
    assert report.quarantined_by_reason == case.rows_quarantined
    assert report.objects_quarantined_by_reason == case.objects_quarantined
    assert report.rows_deduplicated == case.deduplicated
    assert len(quarantined(lake)) == sum(case.rows_quarantined.values()) + sum(case.objects_quarantined.values())


def test_names_are_compared_exactly():
    from lstmae.formats.common import text_codes

    names = pa.array(["node", "node\x00", "node", None, "a\x00\x00", "a"]).dictionary_encode()
    assert text_codes(names).tolist() == [2, 3, 2, -1, 1, 0]


def test_label_conflict_raw_shows_the_labels(lake):
    land_object(lake, DAY, "q.json", _matrix(*CPU_SERIES))
    ingest(lake)
    assert quarantined(lake) == [(
        "q.json", None, MODE_CONFLICT,
        '2026-09-01 00:00:00.000Z,n1,node_cpu_seconds_total,10 {"__name__":"node_cpu_seconds_total","instance":"n1:9100","mode":"idle"}',
    )]
    assert labels(curated_rows(lake)[0][4]) == {"__name__": "node_cpu_seconds_total", "instance": "n1:9100", "mode": "user"}


def test_label_conflict_keeps_duplicates_of_the_kept_labels(lake):
    idle, user = CPU_SERIES
    land_object(lake, DAY, "q.json", _matrix(user, idle, user | {"values": [[EPOCH, "4"]]}))
    report = ingest(lake)
    assert values(lake) == [(T0, "n1", "node_cpu_seconds_total", 4.0)]
    assert report.rows_deduplicated == 1
    assert report.quarantined_by_reason == {MODE_CONFLICT: 1}


def test_label_conflict_across_objects_is_counted(lake):
    idle, user = CPU_SERIES
    land_object(lake, DAY, "a.json", _matrix(idle))
    land_object(lake, DAY, "b.json", _matrix(user))
    report = ingest(lake)
    assert values(lake) == [(T0, "n1", "node_cpu_seconds_total", 3.0)]
    assert (report.rows_deduplicated, report.rows_deduplicated_other_labels, report.rows_quarantined) == (1, 1, 0)


def test_nested_parquet_labels_are_json(lake):
    land_object(lake, DAY, "p.parquet", _parquet({**LONG_PARQUET, "tags": pa.array([["x"], ["y"]]),
                                                  "attrs": pa.array([[("k", "v")], None], type=pa.map_(pa.string(), pa.string()))}))
    ingest(lake)
    assert [labels(row[4]) for row in curated_rows(lake)] == [{"tags": '["x"]', "attrs": '{"k":"v"}'}, {"tags": '["y"]'}]


def test_parquet_details_name_column_and_fix(lake):
    land_object(lake, DAY, "a.parquet", _parquet({**LONG_PARQUET, "entity": pa.array([{"h": "a"}, {"h": "b"}])}))
    land_object(lake, DAY, "b.parquet", _parquet(pa.Table.from_arrays(
        [TIMES, pa.array(["a", "a"]), pa.array(["cpu", "cpu"]), pa.array([1.0, 2.0]), pa.array(["r1", "r2"]), pa.array(["z1", "z2"])],
        names=["timestamp", "entity", "metric", "value", "region", "region"])))
    report = ingest(lake)
    assert [item["detail"] for item in report.quarantined_objects] == [
        "the entity column 'entity' has type struct<h: string>; expected text: write it as such in the exporter, "
        "or point ingest.entity_column at another column",
        "column 'region' appears 2 times; rename the repeated columns in the exporter (or leave it out of ingest.label_columns)",
    ]


def test_decompression_bomb_is_quarantined(lake, monkeypatch):
    bomb = gzip.compress(bytes(10_000_000), mtime=0)
    assert len(bomb) < 20_000
    monkeypatch.setenv("LSTMAE_INGEST_MAX_UNPACKED_BYTES", "1000000")
    land_object(lake, DAY, "bomb.csv.gz", bomb)
    land_object(lake, DAY, "n.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n")
    report = ingest(lake)
    assert values(lake) == [(T0, "n", "cpu", 1.0)]
    assert report.objects_quarantined_by_reason == {TOO_LARGE_UNPACKED: 1}
    assert report.quarantined_objects[0]["detail"] == (
        f"{len(bomb):,} gzip bytes unpack to more than 1,000,000 bytes (a decompression bomb, or an export too large "
        "for one object): split the export, or raise LSTMAE_INGEST_MAX_UNPACKED_BYTES"
    )


@pytest.mark.parametrize("pack", [bz2.compress, lzma.compress], ids=["bzip2", "xz"])
def test_unpack_limit_applies_to_every_format(pack):
    data = bytes(100_000)
    assert decompress("x.csv", pack(data), limit=100_000) == data
    with pytest.raises(ParseError) as error:
        decompress("x.csv", pack(data), limit=99_999)
    assert error.value.reason == TOO_LARGE_UNPACKED


def test_invalid_unpack_limit_setting(lake, monkeypatch):
    monkeypatch.setenv("LSTMAE_INGEST_MAX_UNPACKED_BYTES", "2GiB")
    with pytest.raises(ValueError, match="Invalid LSTMAE_INGEST_MAX_UNPACKED_BYTES '2GiB': expected a positive number of bytes"):
        decompress("x.csv.gz", gzip.compress(b"x"))


def test_parser_failure_reports_the_records_it_held(lake, monkeypatch):
    import lstmae.formats.delimited as delimited

    def broken(key, text, config):
        raise RuntimeError("boom")

    monkeypatch.setattr(delimited, "parse_csv", broken)
    land_object(lake, DAY, "n.csv", b"timestamp,cpu\n2026-09-01T00:00:00Z,1\n2026-09-01T00:01:00Z,2\n\n2026-09-01T00:02:00Z,3\n")
    report = ingest(lake)
    assert report.objects_quarantined_by_reason == {PARSER_FAILURE: 1}
    assert report.rows_in_failed_objects == 3
    assert report.quarantined_objects[0]["detail"] == "RuntimeError: boom; the object held 3 records, none of them read"


def test_parser_bug_costs_one_line_protocol_line(lake, monkeypatch):
    import lstmae.formats.influx as influx

    real = influx.field_value

    def buggy(text):
        if text == "13":
            raise RuntimeError("boom")
        return real(text)

    monkeypatch.setattr(influx, "field_value", buggy)
    land_object(lake, DAY, "t.lp", f"cpu,host=a x=12,y=1 {NS}\ncpu,host=b x=1,y=13 {NS}\n".encode())
    report = ingest(lake)
    assert values(lake) == [(T0, "a", "cpu_x", 12.0), (T0, "a", "cpu_y", 1.0)]
    assert report.quarantined_by_reason == {PARSER_FAILURE: 2}
    assert quarantined(lake)[0] == ("t.lp", 2, PARSER_FAILURE, f"RuntimeError: boom; cpu,host=b x=1,y=13 {NS}")


def test_parser_bug_costs_one_victoriametrics_line(lake, monkeypatch):
    import lstmae.formats.prometheus as prometheus

    real = prometheus._add_series

    def buggy(builder, labels, *rest):
        if labels["instance"] == "b":
            raise RuntimeError("boom")
        return real(builder, labels, *rest)

    monkeypatch.setattr(prometheus, "_add_series", buggy)
    lines = [{"metric": {"__name__": "up", "instance": name}, "values": [1, 2, 3], "timestamps": [EPOCH * 1000 + i for i in range(3)]}
             for name in ("a", "b")]
    land_object(lake, DAY, "v.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    report = ingest(lake)
    assert report.rows_curated == 3
    assert report.quarantined_by_reason == {PARSER_FAILURE: 3}


@pytest.mark.parametrize("text", ["١٢", "１２", "1٢"])
def test_non_ascii_digits_rejected_on_both_paths(text):
    # The fast path is Arrow's cast, which rejects the value; the slow path must agree.
    with pytest.raises(pa.ArrowInvalid):
        pa.compute.cast(pa.array([text]), pa.float64())
    numbers, bad = _slow_numbers(pa.array([text, "12"]), ",")
    assert bad.tolist() == [True, False]
    assert numbers[1] == 12.0
    parsed, reasons = parse_values(pa.array([text, "1,234.5"]), ",")
    assert reasons.tolist() == [NOT_A_NUMBER, None]
    assert np.isnan(parsed[0])
    assert parsed[1] == 1234.5
