"""Time the anomalies page of the Airflow plugin over a month of outputs.

Generates a month of lstmae outputs in a temporary ``file://`` lake (scores
with per-feature errors and incidents, in the real partition layout, written
through ``lstmae.lake.write_slice``), then times the page's routes through
the plugin's FastAPI app in this process, and, when Debian's chromium is
installed, the page in headless Chromium: from navigation to the rendered
incident list, and from a click on an incident to the drawn plot.

Default size: 50 entities, 2 groups of 8 features, 5-minute step, 30 days,
10 incidents per group and day (864,000 score rows, 600 incidents).

Usage: ``python bench/bench_plugin_page.py [--entities 50] [--days 30] [--repetitions 5]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from common import ROOT, machine, median, print_table, write_result

STEP = pd.Timedelta("5min")
FIRST_DAY = pd.Timestamp("2026-09-01", tz="UTC")
CHROMIUM = "/usr/bin/chromium"


def scores_day(day: pd.Timestamp, group: str, entities: list[str], features: list[str], rng) -> pa.Table:
    """Build one day of ``scores`` rows for one group: every entity at every grid point, all scored."""
    from lstmae import schema

    times = pd.date_range(day, periods=int(pd.Timedelta(days=1) / STEP), freq=STEP)
    rows = len(times) * len(entities)
    count = len(features)
    values = rng.random(rows * count)
    reconstructions = values + rng.normal(0, 0.05, rows * count)
    errors = np.abs(values - reconstructions)
    thresholds = np.full(rows * count, 0.1)
    structs = pa.StructArray.from_arrays(
        [pa.array(np.tile(features, rows)), pa.array(values), pa.array(reconstructions), pa.array(errors),
         pa.array(thresholds), pa.array(errors / thresholds)],
        fields=list(schema.FEATURE_ERROR),
    )
    feature_errors = pa.ListArray.from_arrays(pa.array(np.arange(0, rows * count + 1, count, dtype=np.int32)), structs)
    score = (errors / thresholds).reshape(rows, count).mean(axis=1)
    return pa.table(
        {
            "timestamp": pa.array(np.repeat(times.values, len(entities)), schema.TIMESTAMP),
            "entity": pa.array(np.tile(entities, len(times))),
            "group": pa.array([group] * rows),
            "model_version": pa.array(["20260901T020000Z-000000"] * rows),
            "status": pa.array(["scored"] * rows),
            "reason": pa.array([None] * rows, pa.string()),
            "anomaly_score": pa.array(score),
            "score_threshold": pa.array(np.full(rows, 0.9)),
            "is_anomaly": pa.array(score > 0.9),
            "early_warning_score": pa.array([None] * rows, pa.float64()),
            "feature_errors": feature_errors,
        },
        schema=schema.SCORES,
    )


def incidents_day(day: pd.Timestamp, group: str, entities: list[str], features: list[str], count: int, rng) -> pa.Table:
    from lstmae import schema
    from lstmae.pipeline import incident_id

    rows = []
    for _ in range(count):
        entity = entities[rng.integers(len(entities))]
        start = day + STEP * int(rng.integers(0, 250))
        end = start + STEP * int(rng.integers(1, 30))
        rows.append({
            "incident_id": incident_id(group, entity, start), "entity": entity, "group": group,
            "model_version": "20260901T020000Z-000000", "start": start, "end": end,
            "peak_timestamp": start + (end - start) / 2, "peak_score": float(1 + rng.random()),
            "points": int((end - start) / STEP) + 1,
            "top_features": [features[i] for i in rng.choice(len(features), 3, replace=False)], "open": False,
        })
    return pa.Table.from_pylist(rows, schema=schema.INCIDENTS)


def generate(lake: Path, entities: int, days: int, incidents: int) -> dict:
    from lstmae.lake import write_slice
    from lstmae.storage import LocalStorage

    storage = LocalStorage(lake)
    rng = np.random.default_rng(0)
    names = [f"host-{i:03d}" for i in range(entities)]
    groups = {"cpu": [f"cpu_{i}" for i in range(8)], "io": [f"io_{i}" for i in range(8)]}
    score_rows = 0
    for offset in range(days):
        day = FIRST_DAY + pd.Timedelta(days=offset)
        parts = []
        for group, features in groups.items():
            table = scores_day(day, group, names, features, rng)
            score_rows += table.num_rows
            write_slice(storage, "scores", day, day, day + pd.Timedelta(days=1), table, group=group)
            parts.append(incidents_day(day, group, names, features, incidents, rng))
        write_slice(storage, "incidents", day, day, day + pd.Timedelta(days=1), pa.concat_tables(parts))
    size = sum(path.stat().st_size for path in lake.rglob("*") if path.is_file())
    return {"storage": storage, "score_rows": score_rows, "incidents": days * len(groups) * incidents, "bytes": size}


def load_plugin():
    spec = importlib.util.spec_from_file_location("lstmae_plugin_bench", ROOT / "plugins" / "lstmae_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_route(client, path: str, repetitions: int) -> dict:
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} returned {response.status_code}: {response.text[:300]}")
    return {"first_ms": times[0] * 1000, "median_ms": median(times) * 1000, "max_ms": max(times) * 1000}


def time_browser(app, incident: dict, repetitions: int) -> dict | None:
    """Time the page in headless Chromium; None when chromium is not installed."""
    if not Path(CHROMIUM).exists():
        return None
    import uvicorn
    from playwright.sync_api import sync_playwright

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    loads, plots = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            for _ in range(repetitions):
                page = browser.new_page()
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("#incidents tbody tr")
                loads.append(time.perf_counter() - started)
                started = time.perf_counter()
                page.evaluate("([id, date]) => showIncident(id, date)", [incident["incident_id"], incident["date"]])
                page.wait_for_selector("svg.feature-plot[data-feature='anomaly score']")
                plots.append(time.perf_counter() - started)
                page.close()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
    return {"list_median_ms": median(loads) * 1000, "list_max_ms": max(loads) * 1000,
            "plot_median_ms": median(plots) * 1000, "plot_max_ms": max(plots) * 1000}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=50, help="entities (default %(default)s)")
    parser.add_argument("--days", type=int, default=30, help="days of outputs (default %(default)s)")
    parser.add_argument("--incidents", type=int, default=10, help="incidents per group and day (default %(default)s)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed requests per route (default %(default)s)")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient
    from lstmae.query import read_incidents

    directory = Path(tempfile.mkdtemp(prefix="lstmae-bench-plugin-"))
    try:
        started = time.perf_counter()
        data = generate(directory / "lake", args.entities, args.days, args.incidents)
        generation = time.perf_counter() - started
        storage = data["storage"]
        app = load_plugin().create_app(storage_factory=lambda: storage, require_login=False)
        client = TestClient(app)
        month = read_incidents(storage, since=FIRST_DAY)
        sample = month.iloc[len(month) // 2]
        last = month.iloc[0]
        routes = {
            "page HTML": "/",
            "incidents, last 7 days": "/api/incidents",
            "incidents, whole month": f"/api/incidents?since={FIRST_DAY.date()}",
            "incidents, month, one entity": f"/api/incidents?since={FIRST_DAY.date()}&entity={sample.entity}",
            "one incident with date": f"/api/incidents/{sample.incident_id}?date={sample.date}",
            "one incident, newest, no date": f"/api/incidents/{last.incident_id}",
            "one incident, mid-month, no date": f"/api/incidents/{sample.incident_id}",
        }
        results = {name: time_route(client, path, args.repetitions) for name, path in routes.items()}
        browser = time_browser(app, {"incident_id": sample.incident_id, "date": sample.date}, args.repetitions)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    size = (f"{args.entities} entities x 2 groups x 8 features, {args.days} days at 5 min: "
            f"{data['score_rows']:,} score rows, {data['incidents']:,} incidents, {data['bytes'] / 1e6:.0f} MB of Parquet "
            f"(generated in {generation:.0f} s)")
    print(size)
    print_table("anomalies page routes (FastAPI app in process)", ["route", "first ms", "median ms", "max ms"],
                [[name, r["first_ms"], r["median_ms"], r["max_ms"]] for name, r in results.items()])
    if browser:
        print_table("anomalies page in headless Chromium", ["step", "median ms", "max ms"],
                    [["open page until incidents listed", browser["list_median_ms"], browser["list_max_ms"]],
                     ["pick incident until plot drawn", browser["plot_median_ms"], browser["plot_max_ms"]]])
    else:
        print(f"\n{CHROMIUM} not found: browser timings skipped")
    write_result("plugin_page", {"size": size, "routes": results, "browser": browser, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
