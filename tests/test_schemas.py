"""docs/schemas.md against the code and against the files of a real run.

The column tables of the page are parsed and compared with the Arrow schemas
in lstmae.schema, with what pyarrow.dataset reads from the synthetic scored
lake (hive partitioning), and with what DuckDB's
``read_parquet(..., hive_partitioning = true)`` reports. The JSON key tables
are compared with a registered model version, the current pointer and the
alert ledger.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from lstmae import alerts, schema
from lstmae.storage import LocalStorage

DOC = Path(__file__).resolve().parents[1] / "docs" / "schemas.md"

SCHEMAS = {
    "metrics": schema.CURATED,
    "quarantine": schema.QUARANTINE,
    "scores": schema.SCORES,
    "windows": schema.WINDOWS,
    "votes": schema.VOTES,
    "anomalies": schema.ANOMALIES,
    "incidents": schema.INCIDENTS,
    "slo_violations": schema.SLO_VIOLATIONS,
    "drift_events": schema.DRIFT_EVENTS,
}
# Lake folders that contain no Parquet table.
NOT_TABLES = {"landing", "models", "alerts", "plots", "requests"}
# Columns that only the hive partitioning adds (``group`` of scores and windows is also a file column).
PARTITION_COLUMNS = ["date"]


def parse_doc() -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Return ``({table: [column rows]}, {json document: [keys]})`` from docs/schemas.md."""
    tables: dict[str, list[dict]] = {}
    documents: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        marker = re.match(r"<!-- (table|json): (.+) -->", line)
        if marker:
            current = (marker.group(1), marker.group(2))
            (tables if current[0] == "table" else documents)[current[1]] = []
            continue
        if current is None:
            continue
        if not line.startswith("|"):
            if line.strip():
                current = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in ("column", "key") or set(cells[0]) <= {"-"}:
            continue
        name = cells[0].strip("`")
        if current[0] == "table":
            tables[current[1]].append(
                {"name": name, "pyarrow": cells[1].strip("`"), "duckdb": cells[2].strip("`"), "nullable": cells[3] == "yes"}
            )
        else:
            documents[current[1]].append(name)
    return tables, documents


DOC_TABLES, DOC_JSON = parse_doc()


def test_doc_documents_every_schema():
    assert sorted(DOC_TABLES) == sorted(SCHEMAS)
    assert sorted(DOC_JSON) == ["alert ledger", "current.json", "model.json"]


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_doc_matches_code_schema(table):
    rows = [row for row in DOC_TABLES[table] if row["name"] not in PARTITION_COLUMNS]
    fields = list(SCHEMAS[table])
    assert [row["name"] for row in rows] == [field.name for field in fields]
    for row, field in zip(rows, fields):
        assert row["nullable"] == field.nullable, field.name
    assert [row["name"] for row in DOC_TABLES[table]][-1] == "date"


@pytest.fixture(scope="module")
def lake(scored_lake) -> Path:
    return scored_lake["lake"]


def output_tables(lake: Path) -> list[str]:
    return sorted(path.name for path in lake.iterdir() if path.is_dir() and path.name not in NOT_TABLES)


def test_every_output_table_is_documented(lake):
    tables = output_tables(lake)
    assert set(tables) <= set(DOC_TABLES)
    # The synthetic run writes every table, SLO violations and drift events included.
    assert set(tables) == set(DOC_TABLES)


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_pyarrow_reads_documented_types(lake, table):
    dataset = ds.dataset(lake / table, format="parquet", partitioning="hive")
    read = [(field.name, str(field.type)) for field in dataset.schema]
    documented = [(row["name"], row["pyarrow"]) for row in DOC_TABLES[table]]
    assert read == documented
    code = {field.name: field.type for field in SCHEMAS[table]}
    for field in dataset.schema:
        if field.name in code:
            assert field.type.equals(code[field.name]), field.name
    assert dataset.count_rows() > 0


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_duckdb_reads_documented_types(lake, table):
    connection = duckdb.connect()
    try:
        described = connection.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{lake / table}/**/*.parquet', hive_partitioning = true)"
        ).fetchall()
        count = connection.execute(f"SELECT count(*) FROM read_parquet('{lake / table}/**/*.parquet', hive_partitioning = true)").fetchone()[0]
    finally:
        connection.close()
    read = [(row[0], row[1]) for row in described]
    documented = [(row["name"], row["duckdb"]) for row in DOC_TABLES[table]]
    assert read == documented
    assert count == ds.dataset(lake / table, format="parquet", partitioning="hive").count_rows()


def test_duckdb_partition_group_matches_column(lake):
    connection = duckdb.connect()
    try:
        mismatched = connection.execute(
            f"""SELECT count(*) FROM read_parquet('{lake}/scores/**/*.parquet', hive_partitioning = true, filename = true)
                WHERE filename NOT LIKE '%/group=' || "group" || '/%'"""
        ).fetchone()[0]
    finally:
        connection.close()
    assert mismatched == 0


def test_model_json_has_documented_keys(scored_lake):
    lake = scored_lake["lake"]
    metadata = json.loads((lake / "models" / "all" / scored_lake["version"] / "model.json").read_text())
    assert sorted(metadata) == sorted(DOC_JSON["model.json"])
    pointer = json.loads((lake / "models" / "all" / "current.json").read_text())
    assert sorted(pointer) == sorted(DOC_JSON["current.json"])


def test_alert_ledger_has_documented_keys(scored_lake, tmp_path):
    shutil.copytree(scored_lake["lake"], tmp_path / "lake")
    storage = LocalStorage(tmp_path / "lake")
    day = scored_lake["score_days"][1]
    candidates = alerts.incident_alerts(storage, day, day + pd.Timedelta(days=1))
    alerts.send_alerts(storage, candidates[:1], lambda payload: None, pd.Timedelta("30min"))
    entry = json.loads(storage.read_bytes(alerts.ledger_key(candidates[0])))
    assert sorted(entry) == sorted(DOC_JSON["alert ledger"])
