"""The end-to-end scenario of ``test_e2e_airflow.py`` with the lake in S3.

The S3 server is moto's ``ThreadedMotoServer`` on 127.0.0.1, started by the
``moto_server`` fixture of ``conftest.py``. The Airflow child process reaches
it through ``AWS_ENDPOINT_URL`` and ``LSTMAE_LAKE=s3://...``, the way a
deployment reaches MinIO. The tests are those of the file scenario, collected here again
so that they run against this module's ``scenario`` fixture.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.airflow, pytest.mark.s3, pytest.mark.slow]

BUCKET = "lstmae-e2e"
PREFIX = "lake"


def _load_file_scenario():
    path = Path(__file__).with_name("test_e2e_airflow.py")
    spec = importlib.util.spec_from_file_location("lstmae_tests_e2e_airflow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load_file_scenario()


@pytest.fixture(scope="module")
def s3_client(moto_server):
    from lstmae.storage import make_s3_client

    client = make_s3_client(moto_server)
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])
        client.delete_bucket(Bucket=BUCKET)


@pytest.fixture(scope="module")
def scenario(s3_client, moto_server, tmp_path_factory) -> dict:
    from lstmae.storage import S3Storage

    storage = S3Storage(f"s3://{BUCKET}/{PREFIX}", client=s3_client)
    workdir = tmp_path_factory.mktemp("e2e-s3")
    return e2e.run_scenario(storage, storage.uri, workdir, env_extra={"AWS_ENDPOINT_URL": moto_server})


def test_lake_is_in_bucket(scenario, s3_client):
    keys = [item["Key"] for item in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/scores/")["Contents"]]
    expected = [f"{PREFIX}/scores/date={day:%Y-%m-%d}/group=all/part-000000-240000.parquet" for day in e2e.SCORE_DAYS]
    assert sorted(keys) == expected
    version = scenario["current"]
    model = s3_client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/models/all/{version}/model.keras")
    assert model["ContentLength"] > 0


test_curated_rows_match_exports = e2e.test_curated_rows_match_exports
test_daily_runs_cover_one_day_each = e2e.test_daily_runs_cover_one_day_each
test_one_model_version_published = e2e.test_one_model_version_published
test_every_timestamp_scored = e2e.test_every_timestamp_scored
test_outputs_carry_model_version = e2e.test_outputs_carry_model_version
test_rerun_replaces_day = e2e.test_rerun_replaces_day
test_range_run_equals_daily_runs = e2e.test_range_run_equals_daily_runs
