"""A simulated fleet of hosts with labelled incidents, for the demo, tests and benchmarks.

Every host reports ``metrics`` resource metrics on a fixed step. A value is the
sum of four parts:

* a host-specific base level.
* the host's share of a *fleet load* common to all hosts. The load follows a
  daily cycle that peaks at 14:00 UTC (shifted by up to half an hour per
  host) and is lower on weekends. A slow random fluctuation shared by the
  whole fleet is added, so hosts are correlated with their peers.
* a slow per-host, per-metric random drift (AR(1), 30-minute time constant).
* white noise.

Incidents of five kinds are injected on top (see :data:`INCIDENT_KINDS`), and
every point inside an incident is labelled 1. The random streams of the
normal behaviour do not depend on the incidents, so a fleet simulated with
``incidents=0`` and the same seed is the incident-free counterpart of the
same data: the two differ only inside labelled incidents.

Data are produced one UTC day at a time (:meth:`Fleet.iter_days`), so a large
fleet never has to be held in memory for more than one day: one day of
1,000 hosts x 8 metrics at a 1-minute step is an array of 11.5 million
float64 values (92 MB).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from lstmae.storage import Storage, escape_segment

log = logging.getLogger(__name__)

DEFAULT_START = "2026-09-01T00:00:00Z"
FORMATS = ("wide", "long")
INCIDENT_KINDS = ("spike", "level_shift", "slow_leak", "stuck_value", "peer_divergence")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Number of hosts whose random streams are drawn together. It is a constant
# so that the data never depend on how a caller batches hosts.
_HOST_BLOCK = 128
_DRIFT_TIME_CONSTANT = pd.Timedelta("30min")
_FLEET_TIME_CONSTANT = pd.Timedelta("2h")
_PEAK_HOUR_UTC = 14.0


@dataclass(frozen=True)
class MetricProfile:
    """Normal behaviour of one metric.

    Attributes:
        name: metric name in the exports.
        kind: ``cpu``, ``memory``, ``disk`` or ``network``.
        base: range of the host base levels (each host draws one), in the
            metric's unit.
        amplitude: swing of the value between an idle and a fully loaded fleet.
        drift: standard deviation of the slow per-host random drift.
        noise: standard deviation of the white noise.
        upper: upper bound of the value (100 for percentages), ``None`` for none.
            Every value is also at least 0.
    """

    name: str
    kind: str
    base: tuple[float, float]
    amplitude: float
    drift: float
    noise: float
    upper: float | None


# The metric names cycle through cpu, memory, disk and network. A fleet with
# more metrics than profiles reuses them with a numeric suffix (cpu_percent_2).
METRIC_PROFILES = (
    MetricProfile("cpu_percent", "cpu", (30.0, 50.0), 40.0, 3.0, 2.5, 100.0),
    MetricProfile("memory_used_percent", "memory", (35.0, 65.0), 12.0, 1.5, 0.8, 100.0),
    MetricProfile("disk_io_percent", "disk", (12.0, 25.0), 16.0, 2.0, 2.0, 100.0),
    MetricProfile("network_rx_mbps", "network", (130.0, 220.0), 180.0, 10.0, 8.0, None),
    MetricProfile("cpu_iowait_percent", "cpu", (3.0, 6.0), 4.0, 0.5, 0.5, 100.0),
    MetricProfile("memory_cache_percent", "memory", (10.0, 25.0), 6.0, 1.0, 0.4, 100.0),
    MetricProfile("disk_used_percent", "disk", (30.0, 60.0), 2.0, 0.5, 0.1, 100.0),
    MetricProfile("network_tx_mbps", "network", (90.0, 150.0), 120.0, 8.0, 6.0, None),
)


def metric_profiles(count: int) -> list[MetricProfile]:
    """Return the profiles of a fleet with ``count`` metrics, names made unique.

    >>> [p.name for p in metric_profiles(3)]
    ['cpu_percent', 'memory_used_percent', 'disk_io_percent']
    >>> metric_profiles(9)[8].name
    'cpu_percent_2'
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"Invalid number of metrics {count!r}: expected a positive integer such as 4 or 8.")
    profiles = []
    for position in range(count):
        profile = METRIC_PROFILES[position % len(METRIC_PROFILES)]
        cycle = position // len(METRIC_PROFILES)
        if cycle:
            profile = MetricProfile(f"{profile.name}_{cycle + 1}", profile.kind, profile.base,
                                    profile.amplitude, profile.drift, profile.noise, profile.upper)
        profiles.append(profile)
    return profiles


@dataclass(frozen=True)
class Incident:
    """One injected incident; the points of ``entity`` in ``[start, end)`` are labelled 1.

    Attributes:
        kind: one of :data:`INCIDENT_KINDS`.
        entity: the host.
        metrics: the metrics it changes.
        start: first affected timestamp (UTC, on the grid).
        end: first timestamp after the incident (exclusive).
        magnitude: size of the change in units of each metric's ``amplitude``
            (spike height, level shift, final leak height, gain of the
            diverging load); 0 for ``stuck_value``.
    """

    kind: str
    entity: str
    metrics: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    magnitude: float

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "entity": self.entity,
            "metrics": list(self.metrics),
            "start": self.start.strftime(TIMESTAMP_FORMAT),
            "end": self.end.strftime(TIMESTAMP_FORMAT),
            "magnitude": self.magnitude,
        }


@dataclass
class FleetDay:
    """One UTC day of a simulated fleet.

    Attributes:
        day: midnight UTC that starts the day.
        index: ``(rows,)`` timestamps of the day.
        hosts: host names, the order of the first axis of ``values``.
        metrics: metric names, the order of the last axis of ``values``.
        values: ``(hosts, rows, metrics)`` float64 values, rounded to 3 decimals.
        labels: ``(hosts, rows)`` int8, 1 inside an incident.
    """

    day: pd.Timestamp
    index: pd.DatetimeIndex
    hosts: list[str]
    metrics: list[str]
    values: np.ndarray
    labels: np.ndarray

    def wide(self, host: str) -> pd.DataFrame:
        """Return ``host``'s day as a frame indexed by ``timestamp``, one column per metric."""
        frame = pd.DataFrame(self.values[self.hosts.index(host)], index=self.index, columns=self.metrics)
        frame.index.name = "timestamp"
        return frame

    def long(self, host: str) -> pd.DataFrame:
        """Return ``host``'s day as long rows: timestamp, entity, metric, value."""
        rows, metrics = len(self.index), len(self.metrics)
        return pd.DataFrame(
            {
                "timestamp": np.repeat(self.index, metrics),
                "entity": host,
                "metric": np.tile(self.metrics, rows),
                "value": self.values[self.hosts.index(host)].reshape(-1),
            }
        )

    def label_frame(self) -> pd.DataFrame:
        """Return the labels as rows of timestamp, entity, label (hosts in order, then time)."""
        hosts, rows = self.labels.shape
        return pd.DataFrame(
            {
                "timestamp": np.tile(self.index, hosts),
                "entity": np.repeat(self.hosts, rows),
                "label": self.labels.reshape(-1),
            }
        )


@dataclass
class Fleet:
    """A simulated fleet: its shape, its incidents, and its data one day at a time.

    Build it with :func:`simulate_fleet`. Iterating :meth:`iter_days` twice
    gives the same data.
    """

    hosts: list[str]
    profiles: list[MetricProfile]
    start: pd.Timestamp
    days: int
    step: pd.Timedelta
    seed: int
    incidents: list[Incident]
    clean_days: int = 0
    _host_base: np.ndarray = field(repr=False, default=None)
    _host_gain: np.ndarray = field(repr=False, default=None)
    _host_loading: np.ndarray = field(repr=False, default=None)
    _host_phase: np.ndarray = field(repr=False, default=None)

    @property
    def metrics(self) -> list[str]:
        return [profile.name for profile in self.profiles]

    @property
    def rows_per_day(self) -> int:
        return int(pd.Timedelta(days=1) / self.step)

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=self.days)

    def iter_days(self) -> Iterator[FleetDay]:
        """Yield the fleet's days in time order, one :class:`FleetDay` each."""
        hosts, metrics, rows = len(self.hosts), len(self.profiles), self.rows_per_day
        amplitude = np.array([p.amplitude for p in self.profiles])
        noise = np.array([p.noise for p in self.profiles])
        drift = np.array([p.drift for p in self.profiles])
        upper = np.array([np.inf if p.upper is None else p.upper for p in self.profiles])
        host_drift = np.zeros((hosts, metrics))
        fleet_state = np.zeros(1)
        stuck: dict[int, np.ndarray] = {}
        fleet_phi = float(np.exp(-self.step / _FLEET_TIME_CONSTANT))
        drift_phi = float(np.exp(-self.step / _DRIFT_TIME_CONSTANT))

        for day_number in range(self.days):
            day = self.start + pd.Timedelta(days=day_number)
            index = pd.date_range(day, periods=rows, freq=self.step)
            fleet_noise, fleet_state = _ar1(
                np.random.default_rng([self.seed, 3, day_number]).standard_normal((rows, 1)),
                fleet_phi, 0.08, fleet_state,
            )
            load = self._load(index, fleet_noise[:, 0])  # (hosts, rows)
            values = np.empty((hosts, rows, metrics))
            for block_start in range(0, hosts, _HOST_BLOCK):
                block = slice(block_start, min(hosts, block_start + _HOST_BLOCK))
                rng = np.random.default_rng([self.seed, 2, day_number, block_start])
                size = (block.stop - block.start, rows, metrics)
                drift_values, host_drift[block] = _ar1(
                    rng.standard_normal(size).transpose(1, 0, 2), drift_phi, drift, host_drift[block]
                )
                values[block] = (
                    self._host_base[block, None, :]
                    + amplitude * self._host_gain[block, None, :] * (load[block, :, None] - 0.5)
                    + drift_values.transpose(1, 0, 2)
                    + noise * rng.standard_normal(size)
                )
            labels = np.zeros((hosts, rows), dtype=np.int8)
            overlapping = [
                (number, incident) for number, incident in enumerate(self.incidents)
                if incident.start < index[-1] + self.step and incident.end > day
            ]
            for number, incident in overlapping:
                self._apply(incident, values, labels, load, index, amplitude)
            np.clip(values, 0.0, upper, out=values)
            np.round(values, 3, out=values)
            for number, incident in overlapping:
                if incident.kind == "stuck_value":
                    self._hold(number, incident, values, index, stuck)
            log.debug("Simulated day %s: %d hosts, %d rows, %d incidents", day.date(), hosts, rows, len(overlapping))
            yield FleetDay(day, index, list(self.hosts), self.metrics, values, labels)

    def _load(self, index: pd.DatetimeIndex, fleet_noise: np.ndarray) -> np.ndarray:
        """Return the ``(hosts, rows)`` load: about 0 when idle and 1 at the weekday peak."""
        seconds = (index - pd.Timestamp(0, tz="UTC")).total_seconds().to_numpy()
        hour = (seconds % 86400) / 3600.0
        weekday = (seconds / 86400.0 + 3.0) % 7.0  # 1970-01-01 was a Thursday (Monday = 0)
        weekend = 0.5 + 0.5 * np.cos(2 * np.pi * (weekday - 5.5) / 7.0)  # 1 on Saturday noon, 0 on Wednesday
        daily = 0.5 + 0.5 * np.cos(2 * np.pi * (hour[None, :] - _PEAK_HOUR_UTC - self._host_phase[:, None]) / 24.0)
        return self._host_loading[:, None] * daily * (1.0 - 0.35 * weekend[None, :]) + fleet_noise[None, :]

    def _apply(self, incident: Incident, values, labels, load, index, amplitude) -> None:
        host = self.hosts.index(incident.entity)
        columns = [self.metrics.index(name) for name in incident.metrics]
        inside = (index >= incident.start) & (index < incident.end)
        rows = np.flatnonzero(inside)
        labels[host, rows] = 1
        size = incident.magnitude * amplitude[columns]
        block = np.ix_([host], rows, columns)
        if incident.kind in ("spike", "level_shift"):
            values[block] += size
        elif incident.kind == "slow_leak":
            total = (incident.end - incident.start) / self.step
            elapsed = ((index[rows] - incident.start) / self.step + 1.0) / total
            values[block] += np.asarray(elapsed)[None, :, None] * size
        elif incident.kind == "peer_divergence":
            # The host stops following the fleet: its load term is mirrored
            # around 0.5 and scaled by the magnitude, so it rises when its
            # peers fall.
            gain = amplitude[columns] * self._host_gain[host, columns]
            mirrored = (0.5 - load[host, rows])[None, :, None]
            values[block] += mirrored * gain * (1.0 + incident.magnitude)
        elif incident.kind != "stuck_value":
            raise ValueError(f"Unknown incident kind {incident.kind!r}. Expected one of {INCIDENT_KINDS}.")

    def _hold(self, number: int, incident: Incident, values, index, stuck: dict[int, np.ndarray]) -> None:
        """Freeze the metrics at their value at the incident's start (kept across days)."""
        host = self.hosts.index(incident.entity)
        columns = [self.metrics.index(name) for name in incident.metrics]
        rows = np.flatnonzero((index >= incident.start) & (index < incident.end))
        if number not in stuck:
            stuck[number] = values[host, rows[0], columns].copy()
        values[np.ix_([host], rows, columns)] = stuck[number][None, None, :]

    def frames(self) -> dict[str, pd.DataFrame]:
        """Return every host's whole range as a wide frame (for small fleets, because it keeps all days in memory)."""
        pieces: dict[str, list[pd.DataFrame]] = {host: [] for host in self.hosts}
        for fleet_day in self.iter_days():
            for host in self.hosts:
                pieces[host].append(fleet_day.wide(host))
        return {host: pd.concat(parts) for host, parts in pieces.items()}

    def labels(self) -> pd.DataFrame:
        """Return the labels of the whole range (timestamp, entity, label), sorted by entity and time."""
        frame = pd.concat([fleet_day.label_frame() for fleet_day in self.iter_days()], ignore_index=True)
        return frame.sort_values(["entity", "timestamp"], kind="stable").reset_index(drop=True)

    def description(self) -> dict:
        """Return the fleet's parameters and incidents as a JSON-serialisable dict."""
        return {
            "fleet": {
                "hosts": len(self.hosts),
                "metrics": self.metrics,
                "start": self.start.strftime(TIMESTAMP_FORMAT),
                "end": self.end.strftime(TIMESTAMP_FORMAT),
                "days": self.days,
                "step": _step_text(self.step),
                "seed": self.seed,
                "clean_days": self.clean_days,
            },
            "incidents": [incident.to_dict() for incident in self.incidents],
        }


def _ar1(innovations: np.ndarray, phi: float, std, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a stationary AR(1) along axis 0 of ``(rows, ...)`` standard normal innovations.

    Returns the ``(rows, ...)`` process, with standard deviation ``std``, and its last value.
    """
    scale = np.asarray(std) * np.sqrt(1.0 - phi * phi)
    output = np.empty_like(innovations)
    current = np.array(state, dtype=np.float64)
    for row in range(len(innovations)):
        current = phi * current + scale * innovations[row]
        output[row] = current
    return output, current


def _step_text(step: pd.Timedelta) -> str:
    seconds = int(step.total_seconds())
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_step(step) -> pd.Timedelta:
    """Parse a sampling step that divides one day, such as ``"1min"``; raise ValueError with the fix otherwise."""
    try:
        delta = pd.Timedelta(step)
    except (TypeError, ValueError):
        delta = None
    if delta is None or delta is pd.NaT or delta <= pd.Timedelta(0):
        raise ValueError(f"Invalid step {step!r}: expected a positive duration such as '1min', '5min' or '30s'.")
    if delta < pd.Timedelta(seconds=1) or pd.Timedelta(days=1) % delta != pd.Timedelta(0):
        raise ValueError(
            f"Invalid step {step!r}: the simulator writes one file per host per day, so the step must divide "
            "one day into whole steps of at least one second (for example 30s, 1min, 5min or 1h)."
        )
    return delta


def _parse_start(start) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(start)
    except (TypeError, ValueError):
        stamp = None
    if stamp is None or stamp is pd.NaT:
        raise ValueError(f"Invalid start {start!r}: expected an ISO 8601 date such as 2026-09-01.")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp != stamp.floor("D"):
        raise ValueError(f"Invalid start {start!r}: the simulation starts at a UTC midnight, e.g. 2026-09-01T00:00:00Z.")
    return stamp


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Invalid {name} {value!r}: expected an integer of at least {minimum}.")
    return int(value)


# Incident durations as (shortest, longest) time spans.
_DURATIONS = {
    "spike": (pd.Timedelta("1min"), pd.Timedelta("5min")),
    "level_shift": (pd.Timedelta("1h"), pd.Timedelta("4h")),
    "slow_leak": (pd.Timedelta("4h"), pd.Timedelta("12h")),
    "stuck_value": (pd.Timedelta("1h"), pd.Timedelta("3h")),
    "peer_divergence": (pd.Timedelta("4h"), pd.Timedelta("10h")),
}
# Magnitudes in units of the metric amplitude, as (smallest, largest).
_MAGNITUDES = {
    "spike": (1.5, 2.5),
    "level_shift": (0.6, 1.0),
    "slow_leak": (1.0, 1.5),
    "stuck_value": (0.0, 0.0),
    "peer_divergence": (0.5, 1.0),
}
_PLACEMENT_ATTEMPTS = 1000


def _plan_incidents(hosts: list[str], profiles: list[MetricProfile], start: pd.Timestamp, days: int,
                    step: pd.Timedelta, seed: int, count: int, clean_days: int) -> list[Incident]:
    """Place ``count`` incidents on random hosts after the clean days, never overlapping on one host.

    Kinds cycle through :data:`INCIDENT_KINDS`, so every kind appears once
    ``count`` is at least 5. Incidents of one host keep at least one hour
    between them.
    """
    rng = np.random.default_rng([seed, 4])
    rows_per_day = int(pd.Timedelta(days=1) / step)
    first_row, total_rows = clean_days * rows_per_day, days * rows_per_day
    available = total_rows - first_row
    separation = max(1, int(pd.Timedelta("1h") / step))
    busy_ranges: dict[int, list[tuple[int, int]]] = {}
    incidents = []
    names = [profile.name for profile in profiles]
    memory = [profile.name for profile in profiles if profile.kind == "memory"]
    for number in range(count):
        kind = INCIDENT_KINDS[number % len(INCIDENT_KINDS)]
        shortest, longest = (max(1, int(span / step)) for span in _DURATIONS[kind])
        length = min(available, int(rng.integers(shortest, longest + 1)))
        magnitude = round(float(rng.uniform(*_MAGNITUDES[kind])), 3)
        if kind == "spike":
            metrics = sorted(rng.choice(len(names), size=min(len(names), int(rng.integers(1, 3))), replace=False))
            chosen = tuple(names[i] for i in metrics)
        elif kind == "level_shift":
            chosen = (names[int(rng.integers(len(names)))],)
        elif kind == "slow_leak":
            chosen = (memory[0],) if memory else (names[int(rng.integers(len(names)))],)
        else:
            chosen = tuple(names)
        for _ in range(_PLACEMENT_ATTEMPTS):
            host = int(rng.integers(len(hosts)))
            begin = first_row + int(rng.integers(0, available - length + 1))
            finish = begin + length
            if all(finish + separation <= other_start or begin >= other_end + separation
                   for other_start, other_end in busy_ranges.get(host, [])):
                break
        else:
            raise ValueError(
                f"Cannot place {count} incidents without overlap on {len(hosts)} host(s) over "
                f"{days - clean_days} day(s): ask for fewer incidents, more hosts or more days."
            )
        busy_ranges.setdefault(host, []).append((begin, finish))
        incidents.append(Incident(kind, hosts[host], chosen, start + begin * step, start + finish * step, magnitude))
    return sorted(incidents, key=lambda incident: (incident.start, incident.entity))


def simulate_fleet(
    hosts: int = 10,
    metrics: int = 4,
    days: int = 1,
    step: str | pd.Timedelta = "1min",
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
    incidents: int | None = None,
    clean_days: int = 0,
) -> Fleet:
    """Build a simulated fleet; its data are generated day by day on iteration.

    Args:
        hosts: number of hosts, named ``host-0001``, ``host-0002``, ... Default 10.
        metrics: metrics per host, named from :data:`METRIC_PROFILES` in order
            (cpu_percent, memory_used_percent, disk_io_percent,
            network_rx_mbps, ...). Default 4.
        days: whole UTC days to simulate. Default 1.
        step: sampling step, a pandas duration that divides one day
            (``"30s"``, ``"1min"``, ``"5min"``). Default ``"1min"``.
        seed: seed of every random draw; the same arguments give the same
            data, incidents and labels. Default 0.
        start: first day, a UTC midnight. Default 2026-09-01.
        incidents: number of incidents; kinds cycle through
            :data:`INCIDENT_KINDS`. Default: 5 % of the host-days after the
            clean days, at least 5 (one of each kind). ``0`` gives a fleet
            without incidents.
        clean_days: leading days without incidents (for training). Default 0.

    Returns:
        The :class:`Fleet`. ``fleet.iter_days()`` yields :class:`FleetDay`
        objects with ``values`` of shape ``(hosts, rows_per_day, metrics)``;
        ``fleet.frames()`` returns ``{host: wide DataFrame}`` over all days,
        and ``fleet.labels()`` the labels (timestamp, entity, label).

    Raises:
        ValueError: on an invalid argument, or when the incidents cannot be
            placed without overlap.

    >>> fleet = simulate_fleet(hosts=2, metrics=3, days=1, step="5min", seed=7)
    >>> day = next(fleet.iter_days())
    >>> day.values.shape, day.labels.shape
    ((2, 288, 3), (2, 288))
    """
    hosts = _count("number of hosts", hosts, 1)
    days = _count("number of days", days, 1)
    seed = _count("seed", seed, 0)
    clean_days = _count("number of clean days", clean_days, 0)
    if clean_days >= days and incidents != 0:
        raise ValueError(
            f"Invalid clean_days {clean_days}: it must be below days ({days}) so that incidents have room, "
            "or pass incidents=0."
        )
    step_delta = parse_step(step)
    start_stamp = _parse_start(start)
    profiles = metric_profiles(metrics)
    width = max(4, len(str(hosts)))
    names = [f"host-{number:0{width}d}" for number in range(1, hosts + 1)]
    if incidents is None:
        incidents = max(len(INCIDENT_KINDS), round(0.05 * hosts * (days - clean_days)))
    incidents = _count("number of incidents", incidents, 0)
    planned = _plan_incidents(names, profiles, start_stamp, days, step_delta, seed, incidents, clean_days) if incidents else []

    rng = np.random.default_rng([seed, 1])
    low = np.array([p.base[0] for p in profiles])
    high = np.array([p.base[1] for p in profiles])
    fleet = Fleet(
        hosts=names, profiles=profiles, start=start_stamp, days=days, step=step_delta, seed=seed,
        incidents=planned, clean_days=clean_days,
        _host_base=rng.uniform(low, high, size=(hosts, len(profiles))),
        _host_gain=rng.uniform(0.7, 1.3, size=(hosts, len(profiles))),
        _host_loading=rng.uniform(0.6, 1.0, size=hosts),
        _host_phase=rng.uniform(-0.5, 0.5, size=hosts),
    )
    log.info("Simulated fleet: %d hosts, %d metrics, %d days at %s, %d incidents (seed %d)",
             hosts, len(profiles), days, step_delta, len(planned), seed)
    return fleet


def _csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    options = pa_csv.WriteOptions(include_header=True, quoting_style="needed", quoting_header="none")
    pa_csv.write_csv(table, buffer, options)
    return buffer.getvalue()


def _day_tables(fleet_day: FleetDay, export_format: str) -> Iterator[tuple[str, pa.Table]]:
    stamps = np.asarray(fleet_day.index.strftime(TIMESTAMP_FORMAT), dtype=object)
    rows, metrics = len(fleet_day.index), len(fleet_day.metrics)
    if export_format == "wide":
        timestamp_column = pa.array(stamps, pa.string())
        for position, host in enumerate(fleet_day.hosts):
            columns = [timestamp_column] + [pa.array(fleet_day.values[position, :, i]) for i in range(metrics)]
            yield host, pa.table(columns, names=["timestamp"] + fleet_day.metrics)
    elif export_format == "long":
        timestamp_column = pa.array(np.repeat(stamps, metrics), pa.string())
        metric_column = pa.array(np.tile(np.array(fleet_day.metrics, dtype=object), rows), pa.string())
        for position, host in enumerate(fleet_day.hosts):
            yield host, pa.table(
                [timestamp_column, pa.array([host] * (rows * metrics), pa.string()), metric_column,
                 pa.array(fleet_day.values[position].reshape(-1))],
                names=["timestamp", "entity", "metric", "value"],
            )
    else:
        raise ValueError(f"Unknown export format {export_format!r}. Expected one of {', '.join(FORMATS)}.")


def write_fleet(
    storage: Storage,
    fleet: Fleet | None = None,
    *,
    format: str = "wide",
    labels_key: str = "labels.csv.gz",
    incidents_key: str = "incidents.json",
    progress: Callable[[int, int, pd.Timestamp], None] | None = None,
    **simulate_args,
) -> dict:
    """Write a simulated fleet as landing exports plus its labels and incidents.

    Objects written, one UTC day at a time:

    * ``landing/date=YYYY-MM-DD/<host>.csv.gz``: one gzip CSV per host per
      day. ``wide``: ``timestamp`` then one column per metric; ``long``:
      ``timestamp, entity, metric, value``. Timestamps are ISO 8601 UTC
      (``2026-09-01T00:00:00Z``).
    * ``labels_key``: gzip CSV ``timestamp, entity, label`` with one row per
      host and timestamp, label 1 inside an incident.
    * ``incidents_key``: JSON ``{"fleet": {parameters}, "incidents": [{kind,
      entity, metrics, start, end, magnitude}]}``, ``end`` exclusive.

    Args:
        storage: the lake or any other :class:`~lstmae.storage.Storage`.
        fleet: the fleet to write; when None, one is built with
            ``simulate_fleet(**simulate_args)``.
        format: ``"wide"`` (default) or ``"long"``.
        labels_key, incidents_key: keys of the labels and incidents objects.
        progress: called as ``progress(days_done, days_total, day)`` after
            each day.

    Returns:
        ``{"objects", "rows", "values", "start", "end", "hosts", "metrics",
        "incidents", "incidents_by_kind", "labels_key", "incidents_key",
        "seconds"}``; ``rows`` counts timestamps times hosts.
    """
    started = time.monotonic()
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}. Expected one of {', '.join(FORMATS)}.")
    if fleet is None:
        fleet = simulate_fleet(**simulate_args)
    elif simulate_args:
        raise ValueError(f"Pass either a fleet or simulate_fleet arguments, not both. Received: {sorted(simulate_args)}.")
    labels_stream = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip container
    labels_parts = [labels_stream.compress(b"timestamp,entity,label\n")]
    objects = rows = 0
    for number, fleet_day in enumerate(fleet.iter_days(), start=1):
        prefix = f"landing/date={fleet_day.day.strftime('%Y-%m-%d')}"
        for host, table in _day_tables(fleet_day, format):
            data = gzip.compress(_csv_bytes(table), compresslevel=1, mtime=0)
            storage.write_bytes(f"{prefix}/{escape_segment(host)}.csv.gz", data)
            objects += 1
        host_count, day_rows = fleet_day.labels.shape
        label_table = pa.table(
            {
                "timestamp": pa.array(np.tile(np.asarray(fleet_day.index.strftime(TIMESTAMP_FORMAT), dtype=object),
                                              host_count), pa.string()),
                "entity": pa.array(np.repeat(np.array(fleet_day.hosts, dtype=object), day_rows), pa.string()),
                "label": pa.array(fleet_day.labels.reshape(-1)),
            }
        )
        csv = _csv_bytes(label_table)
        labels_parts.append(labels_stream.compress(csv[csv.index(b"\n") + 1 :]))
        rows += fleet_day.labels.size
        if progress is not None:
            progress(number, fleet.days, fleet_day.day)
    labels_parts.append(labels_stream.flush())
    storage.write_bytes(labels_key, b"".join(labels_parts))
    description = fleet.description()
    storage.write_bytes(incidents_key, json.dumps(description, indent=2).encode())
    by_kind = {kind: sum(1 for i in fleet.incidents if i.kind == kind) for kind in INCIDENT_KINDS}
    summary = {
        "objects": objects,
        "rows": rows,
        "values": rows * len(fleet.profiles),
        "start": fleet.start.strftime(TIMESTAMP_FORMAT),
        "end": fleet.end.strftime(TIMESTAMP_FORMAT),
        "hosts": len(fleet.hosts),
        "metrics": fleet.metrics,
        "incidents": len(fleet.incidents),
        "incidents_by_kind": by_kind,
        "labels_key": labels_key,
        "incidents_key": incidents_key,
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("Wrote simulated fleet to %s: %d objects, %d values, %d incidents in %.1f s",
             storage.uri, objects, summary["values"], summary["incidents"], summary["seconds"])
    return summary
