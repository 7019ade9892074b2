"""The anomalies page of the Airflow plugin, driven in headless Chromium.

The plugin's FastAPI app is served by uvicorn on 127.0.0.1 over the
synthetic scored lake; Playwright opens the page, checks the incident list
against the incidents/ files read directly, picks the cpu-spike incident and
checks the plot. Needs Debian's chromium at /usr/bin/chromium (`make test`
installs it).
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def load_plugin_module():
    spec = importlib.util.spec_from_file_location("lstmae_plugin_under_test", ROOT / "plugins" / "lstmae_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def incidents_on_disk(lake: Path) -> pd.DataFrame:
    """Latest row per incident id, read with pyarrow.dataset (independent of lstmae.query)."""
    frame = ds.dataset(lake / "incidents", format="parquet", partitioning="hive").to_table().to_pandas()
    frame = frame.sort_values(["incident_id", "end"]).drop_duplicates("incident_id", keep="last")
    return frame


@pytest.fixture(scope="module")
def page_url(scored_lake):
    import uvicorn

    module = load_plugin_module()
    app = module.create_app(storage_factory=lambda: scored_lake["storage"], require_login=False)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s on 127.0.0.1")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium) or `apt-get install chromium`.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def test_page_lists_every_incident(scored_lake, page_url, browser):
    expected = incidents_on_disk(scored_lake["lake"])
    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_selector("#incidents tbody tr")
    ids = page.eval_on_selector_all("#incidents tbody tr", "rows => rows.map(r => r.dataset.incidentId)")
    assert sorted(ids) == sorted(expected["incident_id"])
    # Newest start first.
    starts = expected.set_index("incident_id").loc[ids, "start"].tolist()
    assert starts == sorted(starts, reverse=True)
    assert page.input_value("#since") == (scored_lake["score_days"][-1] - pd.Timedelta(days=6)).strftime("%Y-%m-%d")
    assert page.input_value("#until") == scored_lake["score_days"][-1].strftime("%Y-%m-%d")
    page.close()


def test_page_filters_by_entity_and_date(scored_lake, page_url, browser):
    expected = incidents_on_disk(scored_lake["lake"])
    day = scored_lake["score_days"][1]
    wanted = expected[(expected["entity"] == "host-b") & (expected["end"] >= day) & (expected["start"] < day + pd.Timedelta(days=1))]
    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_selector("#incidents tbody tr")
    page.select_option("#entity", "host-b")
    page.fill("#since", day.strftime("%Y-%m-%d"))
    page.fill("#until", day.strftime("%Y-%m-%d"))
    page.click("button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#incidents tbody tr').length === n", arg=len(wanted))
    entities = page.eval_on_selector_all("#incidents tbody tr td:nth-child(4)", "cells => cells.map(c => c.textContent)")
    assert entities == ["host-b"] * len(wanted)
    ids = page.eval_on_selector_all("#incidents tbody tr", "rows => rows.map(r => r.dataset.incidentId)")
    assert sorted(ids) == sorted(wanted["incident_id"])
    page.close()


def test_picking_incident_draws_plot(scored_lake, page_url, browser):
    expected = incidents_on_disk(scored_lake["lake"])
    spike_start = pd.Timestamp("2026-09-05T10:00:00Z")
    spike = expected[
        (expected["entity"] == "host-a")
        & (expected["start"] <= spike_start + pd.Timedelta(minutes=30))
        & (expected["end"] >= spike_start)
        & expected["top_features"].map(lambda names: "cpu" in list(names))
    ]
    assert len(spike) == 1, spike
    incident = spike.iloc[0]

    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_selector("#incidents tbody tr")
    page.click(f"#incidents tbody tr[data-incident-id='{incident.incident_id}']")
    page.wait_for_selector("svg.feature-plot[data-feature='anomaly score']")

    titles = page.eval_on_selector_all("svg.feature-plot", "plots => plots.map(p => p.dataset.feature)")
    assert titles == list(incident.top_features)[:3] + ["anomaly score"]
    cpu = page.locator("svg.feature-plot[data-feature='cpu']")
    for name in ("actual", "reconstruction"):
        path = cpu.locator(f"path.series[data-name='{name}']").get_attribute("d")
        # The spike alone covers 12 grid points, so each line has at least 12 segments.
        assert path.count("L") >= 12
    assert cpu.locator("polygon.threshold-band").count() == 1
    assert cpu.locator("circle.over-threshold").count() >= 1
    assert "host-a" in page.inner_text("#detail-title")
    assert f"#incident={incident.incident_id}" in page.url
    page.screenshot(path=str(scored_lake["root"] / "anomalies-page.png"), full_page=True)
    page.close()
