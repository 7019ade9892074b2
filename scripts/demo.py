#!/usr/bin/env python3
"""Run lstmae end to end with real Airflow on a lake inside the project.

``make demo`` runs this script. It lands metric exports in ``landing/``, then
runs the three DAGs of ``dags/`` with ``DAG.test()`` against a SQLite metadata
database under ``var/airflow``:

1. ``lstmae_ingest`` over the training period (params ``start``/``end``);
2. ``lstmae_train`` on the whole training period (params ``start``/``end``;
   the validation part is the last ``validation_fraction`` of it, by time);
3. per day of the scoring period, ``lstmae_ingest`` and ``lstmae_score`` with
   that day as the data interval, as a scheduler would run them.

It then prints the model version, its thresholds, the anomalous windows per
day, the first anomalies, where the outputs are and how to query them.
Reruns replace the same partitions, so running it twice gives the same tables.

Usage::

    python scripts/demo.py                    # simulated fleet
    python scripts/demo.py --data DIR         # DIR/train.csv.gz, DIR/test.csv.gz

``--dag-runs FILE`` runs only the DAG runs listed in FILE (JSON Lines, ``-``
for stdin). The Airflow home, lake and configuration then come from the
environment (``AIRFLOW_HOME``, ``LSTMAE_LAKE``, ``LSTMAE_CONFIG``). The
end-to-end tests drive Airflow through it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"


# ---------------------------------------------------------------------------
# Airflow in this process


def airflow_environment(home: Path) -> dict[str, str]:
    """Return the environment that points Airflow at ``home`` and this project's DAGs.

    Airflow reads its configuration when it is first imported, so these
    variables must be set before any ``import airflow``.
    """
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


@contextlib.contextmanager
def output_to(log_path: Path | None):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log_path``.

    Airflow and TensorFlow write to the descriptors directly, so replacing
    ``sys.stdout`` alone would not catch their output.
    """
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class DagRunFailed(RuntimeError):
    """Raised when a DAG run does not end in the ``success`` state."""


class AirflowRunner:
    """Runs this project's DAGs in-process with ``DAG.test()``.

    Creating the runner imports Airflow, creates or migrates the metadata
    database of ``$AIRFLOW_HOME`` and parses ``dags/``. Every DAG run happens in
    this process, one task after another, so TensorFlow is never forked.

    Args:
        log_path: file that receives Airflow's and the tasks' output; ``None``
            leaves it on the terminal.
    """

    def __init__(self, log_path: Path | None = None):
        if "airflow" in sys.modules:
            raise RuntimeError(
                "Airflow was imported before its environment was set; create the AirflowRunner "
                "before anything imports airflow."
            )
        self.log_path = log_path
        with output_to(log_path):
            from airflow.dag_processing.dagbag import DagBag
            from airflow.utils import db

            db.initdb()
            bag = DagBag(dag_folder=str(ROOT / "dags"))
        if bag.import_errors:
            raise RuntimeError(f"DAG files failed to import: {bag.import_errors}")
        self.dags = bag.dags
        # DAG.test() runs the tasks of this process's DAG objects, and Airflow 3.3.2
        # leaves a run's conf in the task's params afterwards. Passing every param on
        # every run, defaults included, keeps one run's params out of the next.
        self.default_params = {dag_id: dict(dag.params) for dag_id, dag in self.dags.items()}

    def run(self, dag_id: str, logical_date: str | None = None, conf: dict | None = None):
        """Run one DAG run and return it; raise :class:`DagRunFailed` unless it succeeds.

        Args:
            dag_id: one of the DAGs in ``dags/``.
            logical_date: ISO 8601 timestamp; with the daily
                ``CronDataIntervalTimetable``, ``DAG.test()`` gives the run the
                last whole day that ends at or before it (logical date
                2026-10-02T00:00Z covers 2026-10-01). ``None`` gives a run
                without a data interval, for DAGs driven by params.
            conf: params of the run, e.g. ``{"start": ..., "end": ...}``.
        """
        import pendulum

        if dag_id not in self.dags:
            raise KeyError(f"Unknown DAG {dag_id!r}; the dags folder has {sorted(self.dags)}.")
        dag = self.dags[dag_id]
        date = pendulum.parse(logical_date) if logical_date else None
        params = {**self.default_params[dag_id], **(conf or {})}
        with output_to(self.log_path):
            run = dag.test(logical_date=date, run_conf=params)
        if run is None or str(run.state) != "success":
            failed = []
            if run is not None:
                failed = [f"{ti.task_id}[{ti.map_index}]={ti.state}" for ti in run.get_task_instances() if str(ti.state) != "success"]
            raise DagRunFailed(
                f"DAG run {dag_id} (logical date {logical_date}, conf {conf}) ended in state "
                f"{getattr(run, 'state', None)}; tasks not successful: {failed}. See the task log in {self.log_path or 'the output above'}."
            )
        return run


def serve_dag_runs(source: str) -> int:
    """Run DAG runs read as JSON Lines from ``source`` (a file, or ``-`` for stdin); return an exit code.

    Each input line is ``{"dag_id": ..., "logical_date": ISO or null, "conf": {...}}``.
    For each, one JSON line goes to stdout as soon as the run ends: ``dag_id``,
    ``run_id``, ``state``, the data interval and ``error`` (null on success),
    so a caller can inspect the lake between runs. Airflow's and the tasks'
    output goes to ``$AIRFLOW_HOME/dag-runs.log``. The Airflow home, the lake
    and the configuration come from the environment.
    """
    for name in ("AIRFLOW_HOME", "LSTMAE_LAKE"):
        if not os.environ.get(name):
            raise SystemExit(f"--dag-runs needs ${name}: set it to the Airflow home folder and the lake URI.")
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    for key, value in airflow_environment(home).items():
        os.environ.setdefault(key, value)
    log_path = home / "dag-runs.log"
    runner = AirflowRunner(log_path)
    failures = 0
    with contextlib.ExitStack() as stack:
        lines = sys.stdin if source == "-" else stack.enter_context(open(source, encoding="utf-8"))
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            started = time.monotonic()
            result = {"dag_id": request.get("dag_id"), "logical_date": request.get("logical_date"), "error": None}
            try:
                run = runner.run(request["dag_id"], request.get("logical_date"), request.get("conf"))
                result.update(run_id=run.run_id, state=str(run.state),
                              data_interval_start=_iso(run.data_interval_start),
                              data_interval_end=_iso(run.data_interval_end))
            except (DagRunFailed, KeyError, ValueError) as error:
                failures += 1
                result.update(state="failed", error=str(error))
            result["seconds"] = round(time.monotonic() - started, 2)
            print(json.dumps(result), flush=True)
    return 1 if failures else 0


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------
# Inputs: exports from a folder, or a simulated fleet


@dataclass
class Landed:
    """Exports the demo landed in ``landing/``, and the periods it trains on and scores.

    Attributes:
        source: a description of the input for the output.
        entities: entity names.
        rows: landed rows (timestamps times entities).
        objects: landed objects (one per entity and day).
        step: sampling step of the exports.
        train: ``(start, end)`` of the training period, end exclusive.
        score: ``(start, end)`` of the scoring period, end exclusive.
        labels: ``timestamp, entity, label`` rows of the scoring period, or None.
        incidents: injected incidents (simulated fleet only): dicts with kind,
            entity, metrics, start, end.
    """

    source: str
    entities: list[str]
    rows: int
    objects: int
    step: "pd.Timedelta"
    train: tuple
    score: tuple
    labels: "pd.DataFrame | None" = None
    incidents: list[dict] | None = None


@dataclass
class Export:
    """One entity's exports: the training file and the file of the period to score."""

    entity: str
    train: Path
    test: Path


def find_exports(data: Path) -> list[Export]:
    """Find ``train.csv[.gz]`` and ``test.csv[.gz]`` in ``data`` or in each of its sub-folders.

    The entity is the name of the folder that contains the two files.
    """
    if not data.is_dir():
        raise SystemExit(f"DATA={data} is not a directory. Give a folder with train.csv.gz and test.csv.gz.")
    if _export_file(data, "train"):
        folders = [data]
    else:
        folders = sorted(p for p in data.iterdir() if p.is_dir() and _export_file(p, "train"))
    exports = []
    for folder in folders:
        train, test = _export_file(folder, "train"), _export_file(folder, "test")
        if test is None:
            raise SystemExit(f"{folder} has {train.name} but no test.csv.gz or test.csv (the period to score).")
        exports.append(Export(folder.name, train, test))
    if not exports:
        raise SystemExit(
            f"No exports in {data}: expected train.csv.gz and test.csv.gz (or .csv) in it, or in its "
            "sub-folders, one folder per entity."
        )
    return exports


def _export_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def land_exports(storage, data: Path) -> Landed:
    """Land every entity's training and scoring exports, one object per entity and UTC day."""
    import pandas as pd

    from lstmae.landing import land_wide_csv

    exports = find_exports(data)
    periods: dict[str, list] = {"train": [], "test": []}
    days_of: dict[str, set] = {}
    rows = objects = 0
    steps = set()
    labels = []
    for export in exports:
        for kind in ("train", "test"):
            path = getattr(export, kind)
            result = land_wide_csv(storage, path, export.entity)
            start, end = pd.Timestamp(result["start"]), pd.Timestamp(result["end"])
            days = set(pd.date_range(start.floor("D"), end - pd.Timedelta(seconds=1), freq="D"))
            shared = days_of.setdefault(export.entity, set()) & days
            if shared:
                raise SystemExit(
                    f"{path}: the training and scoring exports of {export.entity} share the day(s) "
                    f"{sorted(d.date().isoformat() for d in shared)}, but landing holds one object per entity "
                    "and day. Split the two files at a UTC midnight."
                )
            days_of[export.entity] |= days
            periods[kind].append((start, end))
            rows += result["rows"]
            objects += result["objects"]
            steps.add(pd.Timedelta(seconds=result["step_seconds"]))
        label_path = export.train.parent / "labels.csv.gz"
        if label_path.is_file():
            frame = pd.read_csv(label_path)
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
            labels.append(frame.assign(entity=export.entity)[["timestamp", "entity", "label"]])
    if len(steps) != 1:
        raise SystemExit(f"The exports in {data} use different sampling steps {sorted(map(str, steps))}; "
                         "run the demo on exports with one step.")
    train = (min(s for s, _ in periods["train"]), max(e for _, e in periods["train"]))
    score = (min(s for s, _ in periods["test"]), max(e for _, e in periods["test"]))
    if score[0] < train[1]:
        raise SystemExit(f"The scoring period of {data} starts at {score[0]}, before its training period ends at {train[1]}.")
    return Landed(
        source=f"exports in {data}",
        entities=[e.entity for e in exports],
        rows=rows,
        objects=objects,
        step=steps.pop(),
        train=train,
        score=score,
        labels=pd.concat(labels, ignore_index=True) if labels else None,
    )


# The default fleet: large enough to show every incident kind, small enough
# that the demo takes a few minutes on two cores.
FLEET = {"hosts": 6, "metrics": 4, "step": "5min", "seed": 7, "train_days": 10, "score_days": 4}


def land_simulated(storage) -> Landed:
    """Simulate the default fleet into ``landing/``, incidents only in the scoring period."""
    import pandas as pd

    from lstmae.simulate import simulate_fleet, write_fleet

    days = FLEET["train_days"] + FLEET["score_days"]
    fleet = simulate_fleet(hosts=FLEET["hosts"], metrics=FLEET["metrics"], days=days, step=FLEET["step"],
                           seed=FLEET["seed"], clean_days=FLEET["train_days"])
    summary = write_fleet(storage, fleet, labels_key="simulation/labels.csv.gz",
                          incidents_key="simulation/incidents.json")
    split = fleet.start + pd.Timedelta(days=FLEET["train_days"])
    labels = fleet.labels()
    return Landed(
        source=(f"a simulated fleet of {FLEET['hosts']} hosts x {FLEET['metrics']} metrics "
                f"(seed {FLEET['seed']}, {summary['incidents']} injected incidents)"),
        entities=list(fleet.hosts),
        rows=summary["rows"],
        objects=summary["objects"],
        step=fleet.step,
        train=(fleet.start, split),
        score=(split, fleet.end),
        labels=labels[labels["timestamp"] >= split].reset_index(drop=True),
        incidents=[incident.to_dict() for incident in fleet.incidents],
    )


# ---------------------------------------------------------------------------
# The demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with train.csv.gz and test.csv.gz (the entity is the "
                        "folder name), or a folder of such folders; default: a simulated fleet")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the reference 20)")
    parser.add_argument("--var", type=Path, default=VAR, help="folder for the Airflow home, the lake and the "
                        "demo configuration (default: ./var)")
    parser.add_argument("--dag-runs", metavar="FILE", help="run only the DAG runs listed in FILE (JSON Lines; "
                        "- for stdin) with the Airflow home, lake and configuration of the environment, "
                        "printing one JSON line per run; the end-to-end tests use it")
    args = parser.parse_args(argv)
    if args.dag_runs:
        return serve_dag_runs(args.dag_runs)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive integer. Received: {args.epochs}.")
    return run_demo(args.data.resolve() if args.data else None, args.epochs, args.var.resolve())


def run_demo(data: Path | None, epochs: int | None, var: Path) -> int:
    """Land the input, run the three DAGs, and print what they produced."""
    started = time.monotonic()
    name = data.name if data else "simulated"
    home = var / "airflow"
    lake_path = var / "lake" / name
    config_path = var / "demo" / f"{name}.yaml"
    log_path = home / "demo.log"
    for folder in (home, lake_path, config_path.parent):
        folder.mkdir(parents=True, exist_ok=True)

    # Airflow reads its configuration on first import, and the tasks read the
    # lake and the configuration from the environment.
    os.environ.update(airflow_environment(home))
    os.environ["LSTMAE_LAKE"] = lake_path.as_uri()
    os.environ["LSTMAE_CONFIG"] = str(config_path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import pandas as pd

    from lstmae.config import load_config
    from lstmae.storage import open_storage

    storage = open_storage(lake_path.as_uri())
    landed = land_exports(storage, data) if data else land_simulated(storage)
    score_days = list(pd.date_range(landed.score[0].floor("D"), landed.score[1].ceil("D") - pd.Timedelta(days=1), freq="D"))

    config_text = f"# Written by scripts/demo.py for {landed.source}.\nlake: {lake_path.as_uri()}\nstep: {_duration(landed.step)}\n"
    if epochs is not None:
        config_text += f"groups:\n  - name: all\n    epochs: {epochs}\n"
    config_path.write_text(config_text)
    config = load_config(config_path)

    print(f"lstmae demo on {landed.source}")
    print(f"  landed {landed.rows} rows of {len(landed.entities)} entit{'y' if len(landed.entities) == 1 else 'ies'} "
          f"as {landed.objects} daily objects in {_relative(lake_path)}/landing/")
    print(f"  training period {_day(landed.train[0])} .. {_day(landed.train[1])} (end exclusive), "
          f"scoring {len(score_days)} days from {score_days[0].date()} to {score_days[-1].date()}")
    for group in config.groups:
        reference = " (the reference)" if group.epochs == 20 else ""
        print(f"  model {group.name!r}: LSTM units {list(group.units)}, {group.timesteps} timesteps, "
              f"{group.epochs} epochs{reference}, batch {group.batch_size}; configuration {_relative(config_path)}")
    print(f"  Airflow home {_relative(home)} (SQLite); Airflow and task output go to {_relative(log_path)}")

    runner = _step("Airflow: import, migrate the metadata database, parse dags/", lambda: AirflowRunner(log_path))
    one_day = pd.Timedelta(days=1)
    ingest_range = {"start": landed.train[0].floor("D").isoformat(), "end": landed.train[1].ceil("D").isoformat()}
    _step("lstmae_ingest over the training period", lambda: runner.run("lstmae_ingest", conf=ingest_range), log_path)
    train_range = {"start": landed.train[0].isoformat(), "end": landed.train[1].isoformat()}
    _step("lstmae_train on the training period", lambda: runner.run("lstmae_train", conf=train_range), log_path)
    for day in score_days:
        # DAG.test() gives a run the last whole day that ends at or before its
        # logical date, so the logical date of day D is D + 1 at midnight.
        logical_date = (day + one_day).isoformat()
        _step(f"lstmae_ingest and lstmae_score for {day.date()}", lambda: (
            runner.run("lstmae_ingest", logical_date=logical_date),
            runner.run("lstmae_score", logical_date=logical_date),
        ), log_path)

    report(storage, config, landed, score_days, lake_path)
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    return 0


def _step(label: str, action, log_path: Path | None = None):
    print(f"- {label} ...", end=" ", flush=True)
    started = time.monotonic()
    try:
        result = action()
    except DagRunFailed as error:
        print("failed")
        if log_path is not None:
            print(_last_traceback(log_path), file=sys.stderr)
        raise SystemExit(str(error)) from None
    print(f"{time.monotonic() - started:.1f} s", flush=True)
    return result


def _last_traceback(log_path: Path, max_lines: int = 40) -> str:
    """Return the last Python traceback in the log, so that a failed run shows its cause."""
    lines = log_path.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ""
    tail = lines[starts[-1]:]
    end = next((i + 1 for i, line in enumerate(tail) if i and line and not line[0].isspace()), len(tail))
    shown = tail[:end]
    if len(shown) > max_lines:
        shown = shown[:3] + ["  ..."] + shown[-(max_lines - 4):]
    return "\n".join(shown)


def _duration(step) -> str:
    return f"{int(step.total_seconds())}s"


def _day(stamp) -> str:
    return stamp.isoformat().replace("+00:00", "Z")


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------
# The report


def report(storage, config, landed: Landed, score_days: list, lake_path: Path) -> None:
    """Print rows ingested, the model, anomalies per day, the first anomalies and how to query them."""
    import pandas as pd

    from lstmae.lake import read_days

    one_day = pd.Timedelta(days=1)
    first, end = landed.train[0].floor("D"), score_days[-1] + one_day
    metrics = read_days(storage, "metrics", first, end)
    quarantine = read_days(storage, "quarantine", first, end)
    print(f"\nRows ingested: {metrics.num_rows if metrics is not None else 0} curated values "
          f"(timestamp, entity, metric), {quarantine.num_rows if quarantine is not None else 0} quarantined")

    _print_models(storage, config)

    windows = _frame(read_days(storage, "windows", score_days[0], end))
    anomalies = _frame(read_days(storage, "anomalies", score_days[0], end))
    scores = _frame(read_days(storage, "scores", score_days[0], end))
    print("\nPer day of the scoring period:")
    print("  day         windows  anomalous windows  points scored  anomalous points")
    for day in score_days:
        day_windows = _between(windows, "window_end", day, day + one_day)
        day_anomalies = _between(anomalies, "window_end", day, day + one_day)
        day_scores = _between(scores, "timestamp", day, day + one_day)
        scored = int((day_scores["status"] == "scored").sum()) if len(day_scores) else 0
        flagged = int(day_scores["is_anomaly"].fillna(False).astype(bool).sum()) if len(day_scores) else 0
        print(f"  {day.date()}  {len(day_windows):>7}  {len(day_anomalies):>17}  {scored:>13}  {flagged:>16}")

    if len(anomalies):
        print("\nFirst anomalous windows (entity, window, first offending timestamp, features over threshold):")
        for row in anomalies.sort_values(["window_start", "entity"]).head(5).itertuples():
            features = list(row.features_over_threshold)
            shown = ", ".join(features[:5]) + (f" and {len(features) - 5} more" if len(features) > 5 else "")
            print(f"  {row.entity}  {row.window_start:%Y-%m-%d %H:%M} .. {row.window_end:%H:%M}  "
                  f"first {row.first_offending_timestamp:%Y-%m-%d %H:%M}  max error ratio {row.max_ratio:.2f}  {shown}")
    else:
        print("\nNo anomalous windows in the scoring period.")

    _print_labels(landed, scores, anomalies)
    _print_queries(lake_path)


def _frame(table):
    import pandas as pd

    return table.to_pandas() if table is not None else pd.DataFrame()


def _between(frame, column: str, start, end):
    if frame.empty:
        return frame
    return frame[(frame[column] >= start) & (frame[column] < end)]


def _print_models(storage, config) -> None:
    from lstmae import registry

    for group in config.groups:
        entry = registry.resolve(storage, group.name)
        data_range = entry.metadata["data_range"]
        print(f"\nModel of group {group.name!r}: version {entry.version}")
        print(f"  trained on {data_range['start']} .. {data_range['end']}, validation from {data_range['validation_start']}")
        newest = registry.list_versions(storage, group.name)[-1]
        if newest.version != entry.version:
            print(f"  the newest version {newest.version} is {newest.metadata.get('status')}: {newest.metadata.get('reason')}")
        thresholds = entry.thresholds
        print(f"  thresholds ({thresholds.method}): anomaly score threshold {thresholds.score_threshold:.4g}; per feature:")
        for feature, value in zip(thresholds.features, thresholds.feature_thresholds):
            print(f"    {feature:<24} {value:.4g}")


def _print_labels(landed: Landed, scores, anomalies) -> None:
    """Compare the flagged points with the labels of the input, when it has labels."""
    if landed.incidents:
        import pandas as pd

        print("\nInjected incidents and whether an anomalous window overlaps them:")
        for incident in landed.incidents:
            start, end = pd.Timestamp(incident["start"]), pd.Timestamp(incident["end"])
            found = 0
            if len(anomalies):
                mine = anomalies[anomalies["entity"] == incident["entity"]]
                found = int(((mine["window_start"] < end) & (mine["window_end"] >= start)).sum())
            print(f"  {incident['kind']:<16} {incident['entity']}  {start:%Y-%m-%d %H:%M} .. {end:%H:%M}  "
                  f"{', '.join(incident['metrics'])}: {'found, ' + str(found) + ' window(s)' if found else 'missed'}")
    if landed.labels is not None and len(scores):
        flagged = scores[scores["is_anomaly"].fillna(False).astype(bool)][["timestamp", "entity"]]
        labelled = landed.labels[landed.labels["label"] == 1][["timestamp", "entity"]]
        hits = len(flagged.merge(labelled, on=["timestamp", "entity"]))
        print(f"\nLabels: {len(labelled)} labelled anomalous points; the model flagged {len(flagged)} points, "
              f"{hits} of them labelled (no point adjustment).")


def _print_queries(lake_path: Path) -> None:
    lake = _relative(lake_path)
    print(f"\nOutputs, Parquet partitioned by date, under {lake}/:")
    for table, what in (("scores", "one row per timestamp, entity and group: anomaly score, verdict, feature errors"),
                        ("windows", "the verdict of every non-overlapping window"),
                        ("anomalies", "anomalous windows with the vote across groups"),
                        ("incidents", "runs of anomalous points per entity and group"),
                        ("models", "model versions: model.keras and model.json (scaler, thresholds)")):
        print(f"  {lake}/{table}/  {what}")
    print("\nQuery them with pandas:")
    print(f"  .venv/bin/python -c \"import pandas as pd; print(pd.read_parquet('{lake}/anomalies')"
          f"[['entity', 'window_start', 'first_offending_timestamp', 'features_over_threshold']].to_string())\"")
    print("or with DuckDB:")
    print(f"  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"SELECT date, entity, count(*) FILTER (WHERE is_anomaly) "
          f"AS anomalous_points, round(max(anomaly_score), 3) AS max_score FROM read_parquet('{lake}/scores/*/*/*.parquet', "
          f"hive_partitioning = true) GROUP BY ALL ORDER BY ALL\\\").show()\"")


if __name__ == "__main__":
    sys.exit(main())
