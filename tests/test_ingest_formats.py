"""Every supported export format, as a realistic sample, mapped onto the curated schema by configuration."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_helpers import DAY, EPOCH, curated_rows, gz, ingest, labels, make_config, quarantined, values  # noqa: E402

from lstmae.formats.common import INFINITE_VALUE, MISSING_TEMPLATE_FIELD, NO_ENTITY_LABEL  # noqa: E402
from lstmae.landing import land_object  # noqa: E402


def test_wide_csv_gzip_any_column_order(lake):
    text = "\ufeffcpu,timestamp,mem\r\n0.5,2026-09-01T00:00:00Z,0.25\r\n0.75,2026-09-01T00:05:00Z,0.5\r\n"
    land_object(lake, DAY, "node-1.csv.gz", gz(text))
    report = ingest(lake)
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "node-1", "cpu", 0.5),
        ("2026-09-01T00:05:00.000Z", "node-1", "cpu", 0.75),
        ("2026-09-01T00:00:00.000Z", "node-1", "mem", 0.25),
        ("2026-09-01T00:05:00.000Z", "node-1", "mem", 0.5),
    ]
    assert report.rows_read == 4
    assert report.rows_curated == 4
    assert report.objects_by_format == {"csv": 1}
    assert curated_rows(lake)[0][5] == "landing/date=2026-09-01/node-1.csv.gz"


def test_wide_csv_configured_headers_and_entity_column(lake):
    text = "Host;Time;load1;load5\nweb-1;2026-09-01T02:00:00+02:00;1.5;1.25\nweb-2;2026-09-01T00:00:00Z;2.5;2.25\n"
    land_object(lake, DAY, "fleet.csv", text.encode())
    report = ingest(lake, make_config(timestamp_column="Time", entity_column="Host", delimiter=";"))
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "web-1", "load1", 1.5),
        ("2026-09-01T00:00:00.000Z", "web-1", "load5", 1.25),
        ("2026-09-01T00:00:00.000Z", "web-2", "load1", 2.5),
        ("2026-09-01T00:00:00.000Z", "web-2", "load5", 2.25),
    ]
    assert report.rows_curated == 4


def test_long_tsv_keeps_label_columns(lake):
    text = (
        "value\tmetric\tregion\ttimestamp\tentity\n"
        "0.5\tcpu\teu-west-1\t2026-09-01T00:00:00Z\tdb-1\n"
        "1,234.5\tdisk_bytes\teu-west-1\t2026-09-01T00:00:00Z\tdb-1\n"
        "7\tcpu\t\t2026-09-01T00:05:00Z\tdb-2\n"
    )
    land_object(lake, DAY, "long.tsv", text.encode())
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "db-1", "cpu", 0.5),
        ("2026-09-01T00:00:00.000Z", "db-1", "disk_bytes", 1234.5),
        ("2026-09-01T00:05:00.000Z", "db-2", "cpu", 7.0),
    ]
    assert labels(rows[0][4]) == {"region": "eu-west-1"}
    assert labels(rows[1][4]) == {"region": "eu-west-1"}
    assert rows[2][4] is None
    assert report.rows_quarantined == 0


def test_long_csv_label_columns_configured(lake):
    text = "timestamp,entity,metric,value,region,team\n2026-09-01T00:00:00Z,db-1,cpu,0.5,eu,storage\n"
    land_object(lake, DAY, "long.csv", text.encode())
    ingest(lake, make_config(label_columns=["team"]))
    assert labels(curated_rows(lake)[0][4]) == {"team": "storage"}


PROMETHEUS = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "node_load1", "instance": "node-1:9100", "job": "node"},
                "values": [[EPOCH, "0.5"], [EPOCH + 15.5, "NaN"], [EPOCH + 30, "+Inf"]],
            },
            {
                "metric": {"__name__": "node_load1", "instance": "node-2:9100", "job": "node"},
                "values": [[EPOCH, "1.25"]],
            },
        ],
    },
}


def test_prometheus_query_range_matrix(lake):
    land_object(lake, DAY, "query_range-node_load1.json", json.dumps(PROMETHEUS).encode())
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "node-1", "node_load1", 0.5),
        ("2026-09-01T00:00:15.500Z", "node-1", "node_load1", None),
        ("2026-09-01T00:00:00.000Z", "node-2", "node_load1", 1.25),
    ]
    assert labels(rows[0][4]) == {"__name__": "node_load1", "instance": "node-1:9100", "job": "node"}
    assert report.objects_by_format == {"prometheus": 1}
    assert report.rows_read == 4
    assert report.quarantined_by_reason == {INFINITE_VALUE: 1}
    [(source, line, reason, raw)] = quarantined(lake)
    assert source == "query_range-node_load1.json"
    assert line is None
    assert reason == INFINITE_VALUE
    assert "'+Inf'" in raw


def test_prometheus_metric_template_and_entity_label(lake):
    document = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"__name__": "node_cpu_seconds_total", "pod": "api-7f9", "mode": "idle"}, "values": [[EPOCH, "10"]]},
                {"metric": {"__name__": "node_cpu_seconds_total", "pod": "api-7f9", "mode": "user"}, "values": [[EPOCH, "2"]]},
                {"metric": {"__name__": "node_cpu_seconds_total", "pod": "api-7f9"}, "values": [[EPOCH, "3"], [EPOCH + 60, "4"]]},
                {"metric": {"__name__": "node_cpu_seconds_total", "mode": "idle"}, "values": [[EPOCH, "5"]]},
            ],
        },
    }
    land_object(lake, DAY, "cpu.json.gz", gz(json.dumps(document)))
    report = ingest(lake, make_config(entity_labels=["pod"], metric_name="{__name__}:{mode}"))
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "api-7f9", "node_cpu_seconds_total:idle", 10.0),
        ("2026-09-01T00:00:00.000Z", "api-7f9", "node_cpu_seconds_total:user", 2.0),
    ]
    assert report.quarantined_by_reason == {f"{MISSING_TEMPLATE_FIELD}: 'mode'": 2, NO_ENTITY_LABEL: 1}
    assert report.rows_read == 5


def test_prometheus_vector_and_error_response(lake):
    vector = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "instance": "node-1:9100"}, "value": [EPOCH + 60, "1"]}]}}
    error = {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}
    land_object(lake, DAY, "instant.json", json.dumps(vector).encode())
    land_object(lake, DAY, "timeout.json", json.dumps(error).encode())
    report = ingest(lake)
    assert values(lake) == [("2026-09-01T00:01:00.000Z", "node-1", "up", 1.0)]
    assert report.objects_quarantined == 1
    assert report.quarantined_objects == [{
        "key": "landing/date=2026-09-01/timeout.json",
        "reason": "Prometheus error response",
        "detail": "timeout: query timed out in expression evaluation",
    }]


def test_victoriametrics_export_lines(lake):
    lines = [
        {"metric": {"__name__": "up", "job": "node", "instance": "node-1:9100"}, "values": [1, 1, 0],
         "timestamps": [EPOCH * 1000, EPOCH * 1000 + 15000, EPOCH * 1000 + 30000]},
        {"metric": {"__name__": "up", "job": "node", "instance": "node-2:9100"}, "values": [1], "timestamps": [EPOCH * 1000]},
    ]
    land_object(lake, DAY, "export.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    report = ingest(lake)
    assert values(lake) == [
        ("2026-09-01T00:00:00.000Z", "node-1", "up", 1.0),
        ("2026-09-01T00:00:15.000Z", "node-1", "up", 1.0),
        ("2026-09-01T00:00:30.000Z", "node-1", "up", 0.0),
        ("2026-09-01T00:00:00.000Z", "node-2", "up", 1.0),
    ]
    assert report.objects_by_format == {"victoriametrics": 1}


def _cloudwatch_records() -> str:
    base = {"metric_stream_name": "fleet", "account_id": "123456789012", "region": "eu-west-1", "namespace": "AWS/EC2"}
    records = [
        dict(base, metric_name="CPUUtilization", dimensions={"InstanceId": "i-0abc"}, timestamp=EPOCH * 1000,
             value={"max": 9.0, "min": 1.0, "sum": 15.0, "count": 3.0}, unit="Percent"),
        dict(base, metric_name="NetworkIn", dimensions={"InstanceId": "i-0abc"}, timestamp=EPOCH * 1000 + 60000,
             value={"max": 300.0, "min": 100.0, "sum": 600.0, "count": 3.0}, unit="Bytes"),
        dict(base, namespace="AWS/Usage", metric_name="CallCount", dimensions={"Service": "S3"}, timestamp=EPOCH * 1000,
             value={"max": 1.0, "min": 1.0, "sum": 4.0, "count": 4.0}, unit="None"),
    ]
    return "\n".join(json.dumps(record) for record in records) + "\n"


def test_cloudwatch_metric_streams_firehose_object(lake):
    # Firehose names objects <stream>-<version>-<time>-<id>, without an extension.
    land_object(lake, DAY, "hour=00/fleet-1-2026-09-01-00-05-00-3f1d2c", gz(_cloudwatch_records()))
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "i-0abc", "CPUUtilization", 5.0),
        ("2026-09-01T00:01:00.000Z", "i-0abc", "NetworkIn", 200.0),
    ]
    assert labels(rows[0][4]) == {
        "InstanceId": "i-0abc", "account_id": "123456789012", "namespace": "AWS/EC2", "region": "eu-west-1", "unit": "Percent",
    }
    assert report.objects_by_format == {"cloudwatch": 1}
    assert report.quarantined_by_reason == {NO_ENTITY_LABEL: 1}


@pytest.mark.parametrize(
    ("statistic", "expected"),
    [("max", [9.0, 300.0]), ("min", [1.0, 100.0]), ("sum", [15.0, 600.0]), ("count", [3.0, 3.0])],
)
def test_cloudwatch_statistic_is_configured(lake, statistic, expected):
    land_object(lake, DAY, "fleet-1-2026-09-01-00-05-00-3f1d2c", gz(_cloudwatch_records()))
    ingest(lake, make_config(cloudwatch_statistic=statistic, cloudwatch_metric_name="{namespace}/{metric_name}"))
    assert [(row[2], row[3]) for row in values(lake)] == [
        ("AWS/EC2/CPUUtilization", expected[0]),
        ("AWS/EC2/NetworkIn", expected[1]),
    ]


def test_cloudwatch_missing_percentile_is_quarantined(lake):
    land_object(lake, DAY, "fleet-1-2026-09-01-00-05-00-3f1d2c", gz(_cloudwatch_records()))
    report = ingest(lake, make_config(cloudwatch_statistic="p99", entity_labels=["InstanceId", "Service"]))
    assert values(lake) == []
    assert report.quarantined_by_reason == {"statistic missing from the record's value: set ingest.cloudwatch_statistic": 3}


def test_influx_line_protocol_from_telegraf(lake):
    text = (
        "# Telegraf file output\n"
        "cpu,cpu=cpu-total,host=node-1 usage_idle=97.5,usage_user=1.25 1788220800000000000\n"
        "mem,host=node-1 used_percent=41.5,available=8123456i,active=true 1788220800000000000\n"
        'system,host=node-1 uptime_format="1 day,  2:03" 1788220800000000000\n'
        "disk,host=node-1,path=/var\\ log used=10u 1788220860000000000\n"
    )
    land_object(lake, DAY, "telegraf.lp.gz", gz(text))
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "node-1", "cpu_usage_idle", 97.5),
        ("2026-09-01T00:00:00.000Z", "node-1", "cpu_usage_user", 1.25),
        ("2026-09-01T00:01:00.000Z", "node-1", "disk_used", 10.0),
        ("2026-09-01T00:00:00.000Z", "node-1", "mem_active", 1.0),
        ("2026-09-01T00:00:00.000Z", "node-1", "mem_available", 8123456.0),
        ("2026-09-01T00:00:00.000Z", "node-1", "mem_used_percent", 41.5),
    ]
    assert labels(rows[2][4]) == {"host": "node-1", "path": "/var log"}
    assert report.rows_read == 7
    [(source, line, reason, raw)] = quarantined(lake)
    assert (source, line) == ("telegraf.lp.gz", 4)
    assert reason == "value is not a number: string field"
    assert raw.startswith("uptime_format: system,host=node-1")


def test_influx_precision_is_configured(lake):
    land_object(lake, DAY, "seconds.influx", f"load,host=node-1 load1=0.5 {EPOCH + 120}\n".encode())
    ingest(lake, make_config(influx_precision="s", influx_metric_name="{measurement}.{field}"))
    assert values(lake) == [("2026-09-01T00:02:00.000Z", "node-1", "load.load1", 0.5)]


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_parquet_long_form(lake):
    table = pa.table({
        "Timestamp": pa.array([EPOCH * 1000, EPOCH * 1000 + 300_000], type=pa.timestamp("ms", tz="UTC")),
        "Entity": pa.array(["node-1", "node-1"]).dictionary_encode(),
        "Metric": ["cpu", "cpu"],
        "Value": pa.array([5, 7], type=pa.int32()),
        "datacenter": ["fra1", "fra1"],
    })
    land_object(lake, DAY, "export.parquet", _parquet(table))
    report = ingest(lake)
    rows = curated_rows(lake)
    assert [row[:4] for row in rows] == [
        ("2026-09-01T00:00:00.000Z", "node-1", "cpu", 5.0),
        ("2026-09-01T00:05:00.000Z", "node-1", "cpu", 7.0),
    ]
    assert labels(rows[0][4]) == {"datacenter": "fra1"}
    assert report.objects_by_format == {"parquet": 1}


def test_parquet_naive_times_use_configured_zone(lake):
    table = pa.table({
        "timestamp": pa.array([EPOCH * 1000 + 2 * 3_600_000], type=pa.timestamp("ms")),
        "entity": ["node-1"], "metric": ["cpu"], "value": [0.5],
    })
    land_object(lake, DAY, "local.parquet", _parquet(table))
    ingest(lake, make_config(timezone="Europe/Berlin"))
    assert values(lake) == [("2026-09-01T00:00:00.000Z", "node-1", "cpu", 0.5)]


def test_parquet_wide_layout_is_quarantined_with_fix(lake):
    table = pa.table({"timestamp": pa.array([EPOCH * 1000], type=pa.timestamp("ms", tz="UTC")), "cpu": [0.5]})
    land_object(lake, DAY, "wide.parquet", _parquet(table))
    report = ingest(lake)
    assert report.objects_quarantined_by_reason == {"missing entity column": 1}
    assert "set ingest.entity_column" in report.quarantined_objects[0]["detail"]
