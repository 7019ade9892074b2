"""Airflow plugin: the lstmae anomalies page.

Adds a FastAPI app under ``/lstmae`` to the Airflow api-server and an
"Anomalies" entry to the UI's Browse menu that shows it inside the Airflow
UI. The page lists recent incidents (filter by group, entity and date) and,
for the incident picked, plots the actual and reconstructed values of its top
features with each feature's threshold band, and the anomaly score against
its threshold.

Data comes straight from the lake named by ``$LSTMAE_CONFIG`` /
``$LSTMAE_LAKE`` (the same settings the DAGs use) through ``lstmae.query``;
the page needs no TensorFlow and no metadata database. Inside Airflow every
route requires a logged-in user (the UI's session cookie or a bearer token).

JSON routes, relative to ``/lstmae/``:

* ``api/incidents?since=YYYY-MM-DD&until=YYYY-MM-DD&group=G&entity=E``:
  incidents overlapping the days ``since`` to ``until`` (both inclusive;
  default the last 7 days that have incidents), newest first, with the
  groups and entities of that period for the filters.
* ``api/incidents/{incident_id}?date=YYYY-MM-DD``: one incident and the
  scores around it; ``date`` is the partition listed with the incident and
  spares a search.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/lstmae"
MAX_INCIDENTS = 500


@lru_cache(maxsize=4)
def _open_lake(config_path: str | None, lake: str | None):
    from lstmae.config import load_config
    from lstmae.storage import open_storage

    return open_storage(load_config(config_path).lake)


def lake_storage():
    """Open the lake of the current settings (cached per ``$LSTMAE_CONFIG`` and ``$LSTMAE_LAKE``)."""
    return _open_lake(os.environ.get("LSTMAE_CONFIG"), os.environ.get("LSTMAE_LAKE"))


def _day(value: str | None, name: str) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise HTTPException(status_code=400, detail=f"Invalid {name} {value!r}: expected a date such as 2026-09-01.") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _json_value(value):
    if isinstance(value, pd.Timestamp) or hasattr(value, "isoformat"):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _record(row: dict) -> dict:
    return {key: _json_value(value) for key, value in row.items()}


def create_app(storage_factory=lake_storage, require_login: bool = True) -> FastAPI:
    """Build the FastAPI app of the anomalies page.

    Args:
        storage_factory: returns the :class:`lstmae.storage.Storage` to read.
        require_login: protect every route with Airflow's authentication
            (needs a running api-server); tests that serve the app alone pass False.
    """
    dependencies = []
    if require_login:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        dependencies.append(Depends(requires_authenticated()))
    app = FastAPI(title="lstmae anomalies", dependencies=dependencies)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/incidents")
    def incidents(
        since: str | None = Query(None, description="First day, YYYY-MM-DD (UTC)."),
        until: str | None = Query(None, description="Last day, inclusive, YYYY-MM-DD (UTC)."),
        group: str | None = Query(None),
        entity: str | None = Query(None),
    ) -> dict:
        from lstmae.query import INCIDENTS, RECENT_DAYS, partition_days, read_incidents

        storage = storage_factory()
        available = partition_days(storage, INCIDENTS)
        if not available:
            return {"since": None, "until": None, "incidents": [], "total": 0, "groups": [], "entities": []}
        last = _day(until, "until") or available[-1]
        first = _day(since, "since") or last - pd.Timedelta(days=RECENT_DAYS - 1)
        end = last.floor("D") + pd.Timedelta(days=1)
        try:
            frame = read_incidents(storage, since=first.floor("D"), until=end)
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        groups = sorted(frame["group"].dropna().unique().tolist()) if len(frame) else []
        entities = sorted(frame["entity"].dropna().unique().tolist()) if len(frame) else []
        if group:
            frame = frame[frame["group"] == group]
        if entity:
            frame = frame[frame["entity"] == entity]
        rows = [_record(row) for row in frame.head(MAX_INCIDENTS).to_dict("records")]
        return {
            "since": first.strftime("%Y-%m-%d"),
            "until": last.strftime("%Y-%m-%d"),
            "incidents": rows,
            "total": int(len(frame)),
            "groups": groups,
            "entities": entities,
        }

    @app.get("/api/incidents/{incident_id}")
    def incident(incident_id: str, date: str | None = Query(None), features: int = Query(3, ge=1, le=10)) -> dict:
        from lstmae.query import find_incident, incident_series

        storage = storage_factory()
        hint = _day(date, "date")
        try:
            row = find_incident(storage, incident_id, hint)
        except LookupError as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        series = incident_series(storage, row, features=features)
        return {"incident": _record(row), "series": series}

    return app


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lstmae anomalies</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; color: #1a202c; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  h2 { font-size: 16px; margin: 16px 0 8px; }
  form { display: flex; gap: 12px; align-items: end; flex-wrap: wrap; margin-bottom: 12px; }
  label { display: flex; flex-direction: column; font-size: 12px; gap: 2px; }
  table { border-collapse: collapse; font-size: 13px; width: 100%; }
  th, td { border-bottom: 1px solid #e2e8f0; padding: 4px 8px; text-align: left; }
  thead th { position: sticky; top: 0; background: #fff; }
  tbody tr { cursor: pointer; }
  tbody tr:hover, tbody tr.selected { background: #ebf4ff; }
  #status { font-size: 12px; color: #4a5568; margin: 4px 0; }
  .legend { font-size: 12px; display: flex; gap: 16px; margin: 4px 0; }
  .legend span::before { content: ""; display: inline-block; width: 14px; height: 3px; margin-right: 4px; vertical-align: middle; background: var(--c); }
  svg text { font-size: 11px; fill: #4a5568; }
  #list { max-height: 40vh; overflow: auto; }
</style>
</head>
<body>
<h1>lstmae anomalies</h1>
<form id="filters">
  <label>Group <select id="group" name="group"><option value="">all</option></select></label>
  <label>Entity <select id="entity" name="entity"><option value="">all</option></select></label>
  <label>From <input id="since" name="since" type="date"></label>
  <label>To <input id="until" name="until" type="date"></label>
  <button type="submit">Apply</button>
</form>
<div id="status">Loading incidents...</div>
<div id="list">
<table id="incidents">
  <thead><tr><th>Start (UTC)</th><th>End</th><th>Group</th><th>Entity</th><th>Peak score</th><th>Points</th><th>Top features</th><th>Open</th></tr></thead>
  <tbody></tbody>
</table>
</div>
<section id="detail" hidden>
  <h2 id="detail-title"></h2>
  <div class="legend">
    <span style="--c:#2b6cb0">actual</span><span style="--c:#dd6b20">reconstruction</span>
    <span style="--c:#fbd38d">reconstruction &plusmn; threshold</span><span style="--c:#fed7d7">incident</span>
    <span style="--c:#c53030">error above threshold</span>
  </div>
  <div id="plot"></div>
</section>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const state = { incidents: [] };

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(stamp) { return stamp ? stamp.replace("T", " ").slice(0, 16) : ""; }
function num(value) { return value === null || value === undefined ? "" : Number(value).toPrecision(4); }

function setOptions(select, values) {
  const chosen = select.value;
  select.innerHTML = '<option value="">all</option>';
  for (const value of values) {
    const option = document.createElement("option");
    option.value = value; option.textContent = value;
    select.appendChild(option);
  }
  if (values.includes(chosen)) select.value = chosen;
}

async function loadIncidents() {
  const params = new URLSearchParams();
  for (const name of ["since", "until", "group", "entity"]) {
    const value = document.getElementById(name).value;
    if (value) params.set(name, value);
  }
  const status = document.getElementById("status");
  status.textContent = "Loading incidents...";
  const response = await fetch("api/incidents?" + params.toString());
  if (!response.ok) { status.textContent = "Could not load incidents: " + (await response.text()); return; }
  const data = await response.json();
  state.incidents = data.incidents;
  if (data.since && !document.getElementById("since").value) document.getElementById("since").value = data.since;
  if (data.until && !document.getElementById("until").value) document.getElementById("until").value = data.until;
  setOptions(document.getElementById("group"), data.groups);
  setOptions(document.getElementById("entity"), data.entities);
  const body = document.querySelector("#incidents tbody");
  body.innerHTML = "";
  for (const incident of data.incidents) {
    const row = document.createElement("tr");
    row.dataset.incidentId = incident.incident_id;
    row.dataset.date = incident.date;
    const cells = [fmt(incident.start), fmt(incident.end), incident.group, incident.entity,
                   num(incident.peak_score), incident.points, (incident.top_features || []).join(", "),
                   incident.open ? "yes" : "no"];
    for (const value of cells) { const cell = document.createElement("td"); cell.textContent = value; row.appendChild(cell); }
    row.addEventListener("click", () => showIncident(incident.incident_id, incident.date));
    body.appendChild(row);
  }
  const shown = data.incidents.length < data.total ? ` (showing ${data.incidents.length})` : "";
  status.textContent = data.since ? `${data.total} incidents from ${data.since} to ${data.until}${shown}.` : "No incidents in the lake yet.";
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.get("incident")) showIncident(wanted.get("incident"), wanted.get("date"));
}

async function showIncident(id, date) {
  for (const row of document.querySelectorAll("#incidents tbody tr")) row.classList.toggle("selected", row.dataset.incidentId === id);
  const query = date ? "?date=" + encodeURIComponent(date) : "";
  const response = await fetch("api/incidents/" + encodeURIComponent(id) + query);
  const detail = document.getElementById("detail");
  const plot = document.getElementById("plot");
  detail.hidden = false;
  plot.innerHTML = "";
  if (!response.ok) { document.getElementById("detail-title").textContent = "Could not load incident " + id; return; }
  const data = await response.json();
  const incident = data.incident;
  history.replaceState(null, "", "#incident=" + encodeURIComponent(id) + "&date=" + encodeURIComponent(incident.date));
  document.getElementById("detail-title").textContent =
    `${incident.entity} (group ${incident.group}): ${fmt(incident.start)} to ${fmt(incident.end)}, peak ${num(incident.peak_score)} at ${fmt(incident.peak_timestamp)}, model ${incident.model_version}`;
  const times = data.series.timestamps.map((t) => Date.parse(t));
  const span = [Date.parse(incident.start), Date.parse(incident.end)];
  for (const feature of data.series.features) {
    const band = feature.reconstructions.map((r, i) => (r === null || feature.thresholds[i] === null) ? null : [r - feature.thresholds[i], r + feature.thresholds[i]]);
    chart(plot, feature.feature, times, span, [
      { kind: "band", values: band, color: "#fbd38d" },
      { kind: "line", values: feature.reconstructions, color: "#dd6b20", dash: "4 3", name: "reconstruction" },
      { kind: "line", values: feature.values, color: "#2b6cb0", name: "actual" },
      { kind: "dots", values: feature.values.map((v, i) => (feature.ratios[i] !== null && feature.ratios[i] > 1) ? v : null), color: "#c53030" },
    ]);
  }
  chart(plot, "anomaly score", times, span, [
    { kind: "line", values: data.series.score_threshold, color: "#718096", dash: "6 3", name: "score threshold" },
    { kind: "line", values: data.series.anomaly_score, color: "#553c9a", name: "anomaly score" },
  ]);
}

function chart(parent, title, times, span, layers) {
  const width = 900, height = 170, left = 56, right = 12, top = 18, bottom = 22;
  const svg = el("svg", { width, height, class: "feature-plot", "data-feature": title, role: "img", "aria-label": title }, parent);
  let low = Infinity, high = -Infinity;
  for (const layer of layers) for (const v of layer.values) {
    if (v === null || v === undefined) continue;
    for (const x of (Array.isArray(v) ? v : [v])) { low = Math.min(low, x); high = Math.max(high, x); }
  }
  if (!isFinite(low) || times.length === 0) { el("text", { x: left, y: height / 2 }, svg).textContent = title + ": no scored points"; return; }
  if (high === low) { high += 1; low -= 1; }
  const t0 = times[0], t1 = times[times.length - 1] === t0 ? t0 + 1 : times[times.length - 1];
  const x = (t) => left + (t - t0) / (t1 - t0) * (width - left - right);
  const y = (v) => top + (high - v) / (high - low) * (height - top - bottom);
  el("rect", { x: x(Math.max(span[0], t0)), y: top, width: Math.max(2, x(Math.min(span[1], t1)) - x(Math.max(span[0], t0))), height: height - top - bottom, fill: "#fed7d7" }, svg);
  for (const layer of layers) {
    if (layer.kind === "band") {
      const upper = [], lower = [];
      layer.values.forEach((v, i) => { if (v) { upper.push(`${x(times[i])},${y(v[1])}`); lower.unshift(`${x(times[i])},${y(v[0])}`); } });
      if (upper.length) el("polygon", { points: upper.concat(lower).join(" "), fill: layer.color, "fill-opacity": 0.6, class: "threshold-band" }, svg);
    } else if (layer.kind === "line") {
      let path = "", pen = false;
      layer.values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        path += (pen ? " L" : " M") + x(times[i]).toFixed(1) + "," + y(v).toFixed(1); pen = true;
      });
      el("path", { d: path, fill: "none", stroke: layer.color, "stroke-width": 1.5, "stroke-dasharray": layer.dash || "", class: "series", "data-name": layer.name }, svg);
    } else {
      layer.values.forEach((v, i) => { if (v !== null && v !== undefined) el("circle", { cx: x(times[i]), cy: y(v), r: 2.5, fill: layer.color, class: "over-threshold" }, svg); });
    }
  }
  el("line", { x1: left, x2: left, y1: top, y2: height - bottom, stroke: "#a0aec0" }, svg);
  el("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, stroke: "#a0aec0" }, svg);
  el("text", { x: left, y: 12 }, svg).textContent = title;
  el("text", { x: 4, y: top + 8 }, svg).textContent = num(high);
  el("text", { x: 4, y: height - bottom }, svg).textContent = num(low);
  el("text", { x: left, y: height - 6 }, svg).textContent = fmt(new Date(t0).toISOString());
  el("text", { x: width - right - 100, y: height - 6 }, svg).textContent = fmt(new Date(t1).toISOString());
}

document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); loadIncidents(); });
loadIncidents();
</script>
</body>
</html>
"""


class LstmaePlugin(AirflowPlugin):
    """Registers the anomalies page with the Airflow 3 api-server and UI."""

    name = "lstmae"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "lstmae anomalies"}]
    external_views = [
        {
            "name": "Anomalies",
            # Relative to the UI's base URL, so it also works when Airflow is served under a sub-path.
            "href": "lstmae/",
            "destination": "nav",
            "category": "browse",
            "url_route": "lstmae_anomalies",
        }
    ]
