"""The fleet simulator: determinism, shapes, labels, and each incident kind visible where labelled."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json

import numpy as np
import pandas as pd
import pytest

from lstmae.config import Config
from lstmae.ingest import ingest_interval, read_curated
from lstmae.simulate import INCIDENT_KINDS, Incident, metric_profiles, simulate_fleet, write_fleet

DAY = pd.Timestamp("2026-09-01T00:00:00Z")


def at(hours: float) -> pd.Timestamp:
    return DAY + pd.Timedelta(hours=hours)


@pytest.fixture(scope="module")
def quiet_fleet():
    """Four hosts, four metrics, two days at 5 minutes, without incidents."""
    return simulate_fleet(hosts=4, metrics=4, days=2, step="5min", seed=11, incidents=0)


@pytest.fixture(scope="module")
def quiet_frames(quiet_fleet):
    return quiet_fleet.frames()


def with_incident(fleet, kind: str, metrics: tuple[str, ...], magnitude: float,
                  start: pd.Timestamp = at(20), end: pd.Timestamp = at(26)):
    """The same fleet with one incident on host-0002, by default 20:00 to 02:00 the next day."""
    incident = Incident(kind, "host-0002", metrics, start, end, magnitude)
    return dataclasses.replace(fleet, incidents=[incident]), incident


def inside(frame: pd.DataFrame, incident: Incident) -> np.ndarray:
    return np.asarray((frame.index >= incident.start) & (frame.index < incident.end))


# Shapes and names


def test_day_shapes(quiet_fleet):
    days = list(quiet_fleet.iter_days())
    assert len(days) == 2
    assert days[0].values.shape == (4, 288, 4)  # 24 h / 5 min = 288 rows
    assert days[0].labels.shape == (4, 288)
    assert days[0].labels.dtype == np.int8
    assert days[1].day == DAY + pd.Timedelta(days=1)


def test_day_timestamps(quiet_fleet):
    day = next(quiet_fleet.iter_days())
    assert day.index[0] == DAY
    assert day.index[-1] == at(24) - pd.Timedelta("5min")
    assert ((day.index[1:] - day.index[:-1]) == pd.Timedelta("5min")).all()


def test_host_and_metric_names(quiet_fleet):
    assert quiet_fleet.hosts == ["host-0001", "host-0002", "host-0003", "host-0004"]
    assert quiet_fleet.metrics == ["cpu_percent", "memory_used_percent", "disk_io_percent", "network_rx_mbps"]


def test_metric_names_cycle():
    names = [p.name for p in metric_profiles(10)]
    assert names[:4] == ["cpu_percent", "memory_used_percent", "disk_io_percent", "network_rx_mbps"]
    assert names[8:] == ["cpu_percent_2", "memory_used_percent_2"]
    assert len(set(names)) == 10


def test_frames_cover_all_days(quiet_frames):
    frame = quiet_frames["host-0003"]
    assert frame.shape == (576, 4)
    assert frame.index[0] == DAY
    assert frame.index[-1] == at(48) - pd.Timedelta("5min")


def test_values_within_bounds(quiet_frames):
    for frame in quiet_frames.values():
        assert (frame.to_numpy() >= 0).all()
        percent = frame[[c for c in frame.columns if c.endswith("percent")]]
        assert (percent.to_numpy() <= 100).all()


def test_hosts_correlated(quiet_frames):
    cpu = pd.DataFrame({host: frame["cpu_percent"] for host, frame in quiet_frames.items()})
    correlation = cpu.corr().to_numpy()
    # The shared daily load makes every pair of hosts move together.
    assert correlation[np.triu_indices(4, 1)].min() > 0.5


def test_daily_cycle(quiet_frames):
    cpu = quiet_frames["host-0001"]["cpu_percent"]
    afternoon = cpu[(cpu.index.hour >= 13) & (cpu.index.hour < 16)].mean()
    night = cpu[(cpu.index.hour >= 1) & (cpu.index.hour < 4)].mean()
    # The load peaks at 14:00 UTC and is lowest around 02:00.
    assert afternoon > night + 10


# Determinism


def test_same_seed_same_data():
    first = simulate_fleet(hosts=3, metrics=3, days=2, step="10min", seed=5)
    second = simulate_fleet(hosts=3, metrics=3, days=2, step="10min", seed=5)
    assert first.incidents == second.incidents
    for a, b in zip(first.iter_days(), second.iter_days()):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_iterating_twice_same_data():
    fleet = simulate_fleet(hosts=2, metrics=2, days=2, step="10min", seed=5)
    first = [day.values.copy() for day in fleet.iter_days()]
    second = [day.values for day in fleet.iter_days()]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_other_seed_other_data():
    first = next(simulate_fleet(hosts=2, metrics=2, days=1, step="10min", seed=5).iter_days())
    second = next(simulate_fleet(hosts=2, metrics=2, days=1, step="10min", seed=6).iter_days())
    assert not np.array_equal(first.values, second.values)


def test_many_hosts_deterministic():
    # 130 hosts span two blocks of 128 hosts whose random streams are drawn together.
    first = next(simulate_fleet(hosts=130, metrics=2, days=1, step="1h", seed=3, incidents=0).iter_days())
    second = next(simulate_fleet(hosts=130, metrics=2, days=1, step="1h", seed=3, incidents=0).iter_days())
    assert first.values.shape == (130, 24, 2)
    np.testing.assert_array_equal(first.values, second.values)
    assert not np.array_equal(first.values[128], first.values[0])


# Planned incidents


def test_default_incidents_cover_every_kind():
    fleet = simulate_fleet(hosts=3, metrics=4, days=2, step="5min", seed=1)
    # 5 % of 3 host-days rounds to 0, so the minimum of 5, one of each kind, applies.
    assert sorted(i.kind for i in fleet.incidents) == sorted(INCIDENT_KINDS)


def test_default_incident_count_scales():
    fleet = simulate_fleet(hosts=100, metrics=2, days=2, step="1h", seed=1)
    assert len(fleet.incidents) == 10  # 5 % of 200 host-days


def test_clean_days_have_no_incident():
    fleet = simulate_fleet(hosts=3, metrics=4, days=3, step="5min", seed=2, incidents=5, clean_days=2)
    assert len(fleet.incidents) == 5
    assert min(i.start for i in fleet.incidents) >= DAY + pd.Timedelta(days=2)
    assert max(i.end for i in fleet.incidents) <= DAY + pd.Timedelta(days=3)


def test_incidents_never_overlap_on_host():
    fleet = simulate_fleet(hosts=2, metrics=4, days=3, step="5min", seed=4, incidents=12)
    for host in fleet.hosts:
        spans = sorted((i.start, i.end) for i in fleet.incidents if i.entity == host)
        for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
            assert second_start >= first_end + pd.Timedelta("1h")


def test_incidents_on_grid(quiet_fleet):
    fleet = simulate_fleet(hosts=4, metrics=4, days=2, step="5min", seed=8, incidents=20)
    for incident in fleet.incidents:
        assert (incident.start - DAY) % pd.Timedelta("5min") == pd.Timedelta(0)
        assert (incident.end - DAY) % pd.Timedelta("5min") == pd.Timedelta(0)
        assert incident.end > incident.start


def test_too_many_incidents_rejected():
    with pytest.raises(ValueError, match="Cannot place 40 incidents without overlap on 1 host"):
        simulate_fleet(hosts=1, metrics=2, days=1, step="5min", seed=0, incidents=40)


# Labels


def test_labels_align_with_incidents():
    fleet = simulate_fleet(hosts=3, metrics=4, days=2, step="5min", seed=9, incidents=6)
    labels = fleet.labels()
    frames = fleet.frames()
    assert len(labels) == 3 * 576
    for host in fleet.hosts:
        rows = labels[labels["entity"] == host]
        assert list(rows["timestamp"]) == list(frames[host].index)
        expected = np.zeros(len(rows), dtype=np.int8)
        for incident in (i for i in fleet.incidents if i.entity == host):
            expected[np.asarray((rows["timestamp"] >= incident.start) & (rows["timestamp"] < incident.end))] = 1
        np.testing.assert_array_equal(rows["label"].to_numpy(), expected)


def test_label_count_matches_durations():
    fleet = simulate_fleet(hosts=3, metrics=4, days=2, step="5min", seed=9, incidents=6)
    expected = sum((i.end - i.start) // pd.Timedelta("5min") for i in fleet.incidents)
    assert int(fleet.labels()["label"].sum()) == expected


# Each kind, on a fleet that is otherwise identical to the quiet one


def test_spike_adds_magnitude(quiet_fleet, quiet_frames):
    fleet, incident = with_incident(quiet_fleet, "spike", ("disk_io_percent",), 2.0, at(22), at(22.25))
    frame = fleet.frames()["host-0002"]
    difference = frame - quiet_frames["host-0002"]
    rows = inside(frame, incident)
    # disk_io_percent has an amplitude of 16, so the spike adds 2 * 16 = 32 for 3 points.
    assert rows.sum() == 3
    np.testing.assert_allclose(difference.loc[rows, "disk_io_percent"], 32.0, atol=1.5e-3)
    assert (difference.loc[~rows].to_numpy() == 0).all()
    assert (difference.drop(columns="disk_io_percent").to_numpy() == 0).all()


def test_level_shift_mean_difference(quiet_fleet, quiet_frames):
    fleet, incident = with_incident(quiet_fleet, "level_shift", ("cpu_percent",), 0.5)
    frame = fleet.frames()["host-0002"]
    rows = inside(frame, incident)
    cpu = frame["cpu_percent"]
    # cpu_percent has an amplitude of 40: the level moves by 20 over the whole incident, across midnight.
    assert rows.sum() == 72
    difference = cpu - quiet_frames["host-0002"]["cpu_percent"]
    np.testing.assert_allclose(difference[rows], 20.0, atol=1.5e-3)
    assert cpu[rows].mean() == pytest.approx(quiet_frames["host-0002"]["cpu_percent"][rows].mean() + 20.0, abs=1e-3)
    assert (difference[~rows] == 0).all()


def test_slow_leak_ramps_up(quiet_fleet, quiet_frames):
    fleet, incident = with_incident(quiet_fleet, "slow_leak", ("memory_used_percent",), 1.0)
    frame = fleet.frames()["host-0002"]
    rows = inside(frame, incident)
    difference = (frame - quiet_frames["host-0002"])["memory_used_percent"][rows].to_numpy()
    # memory_used_percent has an amplitude of 12: point k of 72 is raised by 12 * k / 72.
    np.testing.assert_allclose(difference, 12.0 * np.arange(1, 73) / 72, atol=1.5e-3)
    assert (frame - quiet_frames["host-0002"]).loc[~rows].abs().to_numpy().max() == 0


def test_stuck_value_zero_variance(quiet_fleet, quiet_frames):
    metrics = tuple(quiet_fleet.metrics)
    fleet, incident = with_incident(quiet_fleet, "stuck_value", metrics, 0.0)
    frame = fleet.frames()["host-0002"]
    rows = inside(frame, incident)
    stuck = frame.loc[rows]
    # Every metric repeats its value at 20:00 until 02:00 the next day.
    assert (stuck.std(ddof=0).to_numpy() == 0).all()
    assert stuck.iloc[0].tolist() == quiet_frames["host-0002"].loc[incident.start].tolist()
    assert quiet_frames["host-0002"].loc[rows].std(ddof=0).min() > 0


def test_peer_divergence_against_peers(quiet_fleet, quiet_frames):
    fleet, incident = with_incident(quiet_fleet, "peer_divergence", tuple(quiet_fleet.metrics), 1.0)
    frames = fleet.frames()
    rows = inside(frames["host-0002"], incident)
    peers = pd.concat([frames[h]["cpu_percent"] for h in ("host-0001", "host-0003", "host-0004")], axis=1).mean(axis=1)
    diverging = frames["host-0002"]["cpu_percent"][rows].corr(peers[rows])
    normal = quiet_frames["host-0002"]["cpu_percent"][rows].corr(peers[rows])
    # From 20:00 to 02:00 the fleet load falls; the diverging host rises instead.
    assert normal > 0.5
    assert diverging < -0.5
    assert (frames["host-0002"] - quiet_frames["host-0002"]).loc[~rows].abs().to_numpy().max() == 0


def test_incident_labels_only_on_host(quiet_fleet):
    fleet, incident = with_incident(quiet_fleet, "level_shift", ("cpu_percent",), 0.5)
    labels = fleet.labels()
    labelled = labels[labels["label"] == 1]
    assert set(labelled["entity"]) == {"host-0002"}
    assert labelled["timestamp"].min() == incident.start
    assert labelled["timestamp"].max() == incident.end - pd.Timedelta("5min")
    assert len(labelled) == 72


def test_random_incidents_visible():
    fleet = simulate_fleet(hosts=3, metrics=4, days=2, step="5min", seed=12, incidents=10)
    quiet = dataclasses.replace(fleet, incidents=[])
    frames, quiet_frames = fleet.frames(), quiet.frames()
    changed = {host: (frames[host] != quiet_frames[host]).any(axis=1) for host in fleet.hosts}
    labels = fleet.labels()
    for host in fleet.hosts:
        host_labels = labels[labels["entity"] == host]["label"].to_numpy().astype(bool)
        # Data differ from the incident-free twin only at labelled points.
        assert not (changed[host].to_numpy() & ~host_labels).any()
    for incident in fleet.incidents:
        assert changed[incident.entity][incident.start : incident.end - pd.Timedelta("1ns")].any()


# Argument checks


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"step": "7min"}, "Invalid step '7min'"),
        ({"step": "soon"}, "Invalid step 'soon'"),
        ({"start": "2026-09-01T06:00:00Z"}, "starts at a UTC midnight"),
        ({"hosts": 0}, "Invalid number of hosts 0"),
        ({"metrics": 0}, "Invalid number of metrics 0"),
        ({"days": 2, "clean_days": 2}, "Invalid clean_days 2"),
        ({"incidents": -1}, "Invalid number of incidents -1"),
    ],
)
def test_invalid_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        simulate_fleet(**arguments)


# Writing exports


@pytest.fixture(scope="module")
def small_fleet():
    return simulate_fleet(hosts=3, metrics=2, days=2, step="5min", seed=21, incidents=5)


def test_write_wide_exports(tmp_path, small_fleet):
    from lstmae.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    summary = write_fleet(storage, small_fleet)
    assert summary["objects"] == 6
    assert summary["rows"] == 3 * 576
    assert summary["values"] == 3 * 576 * 2
    assert summary["incidents"] == 5
    keys = storage.list("landing/")
    assert keys[0] == "landing/date=2026-09-01/host-0001.csv.gz"
    assert len(keys) == 6
    frame = pd.read_csv(io.BytesIO(gzip.decompress(storage.read_bytes("landing/date=2026-09-02/host-0003.csv.gz"))))
    assert list(frame.columns) == ["timestamp", "cpu_percent", "memory_used_percent"]
    assert frame["timestamp"].iloc[0] == "2026-09-02T00:00:00Z"
    expected = small_fleet.frames()["host-0003"].iloc[288:]
    np.testing.assert_array_equal(frame[["cpu_percent", "memory_used_percent"]].to_numpy(), expected.to_numpy())


def test_write_long_exports(tmp_path, small_fleet):
    from lstmae.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    write_fleet(storage, small_fleet, format="long")
    frame = pd.read_csv(io.BytesIO(gzip.decompress(storage.read_bytes("landing/date=2026-09-01/host-0002.csv.gz"))))
    assert list(frame.columns) == ["timestamp", "entity", "metric", "value"]
    assert len(frame) == 288 * 2
    assert frame.iloc[0].tolist()[:3] == ["2026-09-01T00:00:00Z", "host-0002", "cpu_percent"]
    assert frame.iloc[1].tolist()[:3] == ["2026-09-01T00:00:00Z", "host-0002", "memory_used_percent"]
    expected = small_fleet.frames()["host-0002"].iloc[:288]
    np.testing.assert_array_equal(frame["value"].to_numpy(), expected.to_numpy().reshape(-1))


def test_write_labels_and_incidents(tmp_path, small_fleet):
    from lstmae.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    write_fleet(storage, small_fleet)
    labels = pd.read_csv(io.BytesIO(gzip.decompress(storage.read_bytes("labels.csv.gz"))))
    assert list(labels.columns) == ["timestamp", "entity", "label"]
    assert len(labels) == 3 * 576
    expected = small_fleet.labels()
    merged = labels.assign(timestamp=pd.to_datetime(labels["timestamp"], utc=True)).sort_values(["entity", "timestamp"])
    np.testing.assert_array_equal(merged["label"].to_numpy(), expected["label"].to_numpy())
    description = json.loads(storage.read_bytes("incidents.json"))
    assert description["fleet"]["hosts"] == 3
    assert description["fleet"]["step"] == "5min"
    assert description["fleet"]["seed"] == 21
    assert [i["kind"] for i in description["incidents"]] == [i.kind for i in small_fleet.incidents]
    first = description["incidents"][0]
    assert set(first) == {"kind", "entity", "metrics", "start", "end", "magnitude"}
    assert pd.Timestamp(first["start"]) == small_fleet.incidents[0].start


@pytest.mark.parametrize("export_format", ["wide", "long"])
def test_written_exports_ingest_exactly(tmp_path, small_fleet, export_format):
    from lstmae.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    write_fleet(storage, small_fleet, format=export_format)
    config = Config(lake=str(tmp_path), step="5min")
    report = ingest_interval(storage, config, DAY, DAY + pd.Timedelta(days=2))
    # 3 hosts x 576 timestamps x 2 metrics, nothing quarantined.
    assert report.rows_curated == 3456
    assert report.rows_quarantined == 0
    curated = read_curated(storage, DAY, DAY + pd.Timedelta(days=2))
    host = curated[(curated["entity"] == "host-0001") & (curated["metric"] == "cpu_percent")]
    np.testing.assert_array_equal(host["value"].to_numpy(), small_fleet.frames()["host-0001"]["cpu_percent"].to_numpy())


def test_write_fleet_from_arguments(tmp_path):
    from lstmae.storage import LocalStorage

    seen = []
    summary = write_fleet(LocalStorage(tmp_path), hosts=2, metrics=1, days=2, step="1h", seed=1,
                          progress=lambda done, total, day: seen.append((done, total, day)))
    assert summary["objects"] == 4
    assert seen == [(1, 2, DAY), (2, 2, DAY + pd.Timedelta(days=1))]


def test_write_fleet_rejects_unknown_format(tmp_path, small_fleet):
    from lstmae.storage import LocalStorage

    with pytest.raises(ValueError, match="Unknown export format 'parquet'"):
        write_fleet(LocalStorage(tmp_path), small_fleet, format="parquet")
