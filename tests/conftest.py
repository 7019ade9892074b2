"""Fixtures shared by the test suite: real data, lakes, and an S3 server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """Return a path under ../shared/data; fail under CI and skip elsewhere when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if path.exists():
        return path
    message = f"Real data {path} is missing: place ../shared/data beside the repository."
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def omi1() -> Path:
    return require_shared_data("asd", "omi-1")


@pytest.fixture
def lake(tmp_path):
    from lstmae.storage import LocalStorage

    return LocalStorage(tmp_path / "lake")


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 with dummy credentials; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_lake(moto_server):
    """An empty bucket on the moto server, reset after the test; yields an S3Storage."""
    import urllib.request

    from lstmae.storage import S3Storage, make_s3_client

    client = make_s3_client(moto_server)
    client.create_bucket(Bucket="lstmae-test")
    try:
        yield S3Storage("s3://lstmae-test/lake", client=client)
    finally:
        request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()
