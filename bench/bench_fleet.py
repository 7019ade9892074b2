"""End to end at fleet scale: one simulated day of 1-minute data, ingest, score, combine.

The fleet (``lstmae.simulate``) has ``metrics`` metrics per host; day 1 is
clean and serves as training data and scoring context, day 2 has incidents
and is the measured day. One shared model (layout ``metrics``: every host
contributes windows of the same metric set) scores every host; it is trained
once on day 1 of the first ``--train-hosts`` hosts with units
``--units`` (default 32/32/32, smaller than the reference 100/100/100 to
keep a fleet day within minutes on 2 cores).

Setup (simulate, write the landing objects, ingest day 1, train) is not
timed. Each measured step of day 2 runs in its own child process, so its
peak resident memory is its own: ingest (landing CSV to curated Parquet),
score (``score_group``: read curated, build frames, reconstruct, write
``scores/`` and ``windows/``), combine (``combine_interval``: votes,
anomalies, incidents). Peak memory is the child's high-water resident set
size (``VmHWM``), which a watchdog in the parent also samples; a step above
``--memory-limit`` or ``--time-limit`` is stopped and reported as failed.

Running several host counts shows whether peak memory stays flat as the
fleet grows, which it must for streaming by partition and group: score and
combine work on batches of entities (``SCORE_BATCH_SERIES`` and
``COMBINE_BATCH_ENTITIES`` of :mod:`lstmae.pipeline`, recorded in the JSON)
and write each batch as a row group.

Usage: ``python bench/bench_fleet.py [--hosts 250 500 1000] [--metrics 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

GROUP = "fleet"
STEPS = ("ingest", "score", "combine")


def fleet_config(lake: str, units: tuple[int, int, int], entities=("*",), epochs: int = 2):
    from lstmae.config import Config, GroupConfig

    group = GroupConfig(name=GROUP, layout="metrics", metrics=("*",), entities=tuple(entities), units=units,
                        epochs=epochs, batch_size=64)
    return Config(lake=lake, step="1min", training_days=1, groups=(group,))


def setup(base: Path, hosts: int, metrics: int, units, train_hosts: int, epochs: int) -> dict:
    """Simulate two days of ``hosts`` hosts into ``base`` and train the shared model on day 1."""
    import pandas as pd

    from lstmae.ingest import ingest_interval
    from lstmae.simulate import simulate_fleet, write_fleet
    from lstmae.storage import LocalStorage
    from lstmae.training import train_group

    storage = LocalStorage(base)
    fleet = simulate_fleet(hosts=hosts, metrics=metrics, days=2, step="1min", seed=0, clean_days=1)
    written = write_fleet(storage, fleet, format="wide")
    day1 = fleet.start
    day2 = day1 + pd.Timedelta(days=1)
    trainers = fleet.hosts[:train_hosts]
    training_lake = base / "_training"
    training_storage = LocalStorage(training_lake)
    for key in storage.list(f"landing/date={day1.strftime('%Y-%m-%d')}/"):
        if Path(key).name.removesuffix(".csv.gz") in trainers:
            training_storage.write_bytes(key, storage.read_bytes(key))
    config = fleet_config(training_storage.uri, units, trainers, epochs)
    ingest_interval(training_storage, config, day1, day2)
    started = time.monotonic()
    trained = train_group(training_storage, config, GROUP, day1, day2, plots=False)
    return {"hosts": hosts, "objects": written["objects"], "day1": str(day1), "day2": str(day2),
            "hosts_list": fleet.hosts, "training": trained, "training_seconds": time.monotonic() - started}


def prepare_lake(base: Path, lake: Path, hosts: list[str], day1, day2) -> None:
    """Copy the landing objects of ``hosts`` and the trained model into ``lake``; ingest day 1 there."""
    import pandas as pd

    from lstmae.ingest import ingest_interval
    from lstmae.storage import LocalStorage

    selected = set(hosts)
    source = LocalStorage(base)
    target = LocalStorage(lake)
    for key in source.list("landing/"):
        if Path(key).name.removesuffix(".csv.gz") in selected:
            target.write_bytes(key, source.read_bytes(key))
    shutil.copytree(base / "_training" / "models", lake / "models")
    ingest_interval(target, fleet_config(target.uri, (1, 1, 1)), pd.Timestamp(day1), pd.Timestamp(day2))


def child(step: str, lake: str, day: str, units) -> dict:
    """Run one measured step in this process and return its wall time and peak memory."""
    import pandas as pd

    from lstmae.storage import LocalStorage

    storage = LocalStorage(lake)
    config = fleet_config(storage.uri, units)
    start = pd.Timestamp(day)
    end = start + pd.Timedelta(days=1)
    if step == "score":
        from lstmae.model import configure_tensorflow

        configure_tensorflow()
    started = time.monotonic()
    if step == "ingest":
        from lstmae.ingest import ingest_interval

        report = ingest_interval(storage, config, start, end)
        summary = {"rows_curated": report.rows_curated, "rows_quarantined": report.rows_quarantined}
    elif step == "score":
        from lstmae.pipeline import score_group

        summary = score_group(storage, config, GROUP, start, end)
    elif step == "combine":
        from lstmae.pipeline import combine_interval

        summary = combine_interval(storage, config, start, end)
        summary = {key: value for key, value in summary.items() if not isinstance(value, list)}
    else:
        raise ValueError(f"Unknown step {step!r}. Expected one of {STEPS}.")
    seconds = time.monotonic() - started
    return {"seconds": seconds, "peak_rss_bytes": peak_rss(), "summary": summary}


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes.

    ``VmHWM`` from ``/proc/self/status`` belongs to the process image since
    its ``exec``; ``ru_maxrss`` of a child would also include the parent's
    memory at ``fork`` time. ``ru_maxrss`` is the fallback without ``/proc``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resident_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(step: str, lake: Path, day: str, units, memory_limit: int, time_limit: float) -> dict:
    """Run ``step`` in a child process; return its result with the wall time of the whole process.

    The child is stopped when its resident memory exceeds ``memory_limit``
    bytes or it runs longer than ``time_limit`` seconds, so that a step that
    does not stream cannot exhaust the shared machine; the result then has
    an ``error``.
    """
    command = [sys.executable, __file__, "--child", step, "--lake", str(lake), "--day", day,
               "--units", *[str(u) for u in units]]
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as stdout, tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        sampled_peak, stopped = 0, None
        while process.poll() is None:
            sampled_peak = max(sampled_peak, _resident_bytes(process.pid))
            if sampled_peak > memory_limit:
                stopped = f"stopped: resident memory above {memory_limit / 2**30:.1f} GiB"
            elif time.monotonic() - started > time_limit:
                stopped = f"stopped: running longer than {time_limit:.0f} s"
            if stopped:
                process.kill()
                process.wait()
                break
            time.sleep(0.2)
        process_seconds = time.monotonic() - started
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if stopped or process.returncode != 0:
        # A failing step is reported in the table and the JSON; the other
        # steps and host counts still run.
        error = stopped or (errors.strip().splitlines()[-1] if errors.strip() else f"exit code {process.returncode}")
        print(f"step {step} failed: {error}\n{errors[-3000:] if not stopped else ''}", file=sys.stderr)
        return {"error": error, "seconds": float("nan"), "peak_rss_bytes": sampled_peak,
                "process_seconds": process_seconds}
    result = json.loads(output.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    result["sampled_peak_rss_bytes"] = sampled_peak
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[250, 500, 1000], help="host counts (default 250 500 1000)")
    parser.add_argument("--metrics", type=int, default=8, help="metrics per host (default 8)")
    parser.add_argument("--units", type=int, nargs=3, default=[32, 32, 32], help="LSTM units of the fleet model (default 32 32 32)")
    parser.add_argument("--train-hosts", type=int, default=16, help="hosts whose day 1 trains the model (default 16)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--memory-limit", type=float, default=8.0,
                        help="GiB of resident memory at which a step is stopped (default 8)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds after which a step is stopped (default 900)")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    units = tuple(args.units)

    if args.child:
        common.quiet_tensorflow()
        print(json.dumps(child(args.child, args.lake, args.day, units), default=str))
        return {}

    from lstmae.pipeline import COMBINE_BATCH_ENTITIES, SCORE_BATCH_SERIES

    report = {"benchmark": "fleet", "machine": common.machine(), "load_average_before": common.load_average(),
              "metrics": args.metrics, "units": units, "train_hosts": args.train_hosts,
              "score_batch_series": SCORE_BATCH_SERIES, "combine_batch_entities": COMBINE_BATCH_ENTITIES, "runs": []}
    with tempfile.TemporaryDirectory(prefix="lstmae-bench-fleet-") as directory:
        base = Path(directory) / "base"
        started = time.monotonic()
        prepared = setup(base, max(args.hosts), args.metrics, units, args.train_hosts, args.epochs)
        report["setup_seconds"] = time.monotonic() - started
        report["training"] = prepared["training"]
        rows = []
        for hosts in sorted(args.hosts):
            lake = Path(directory) / f"lake-{hosts}"
            prepare_lake(base, lake, prepared["hosts_list"][:hosts], prepared["day1"], prepared["day2"])
            steps = {step: run_child(step, lake, prepared["day2"], units, int(args.memory_limit * 2**30), args.time_limit)
                     for step in STEPS}
            failed = [step for step, item in steps.items() if "error" in item]
            total = sum(item["seconds"] for item in steps.values())
            total_process = sum(item["process_seconds"] for item in steps.values())
            peak = max(item["peak_rss_bytes"] for item in steps.values())
            report["runs"].append({"hosts": hosts, "steps": steps, "seconds": total, "process_seconds": total_process,
                                   "peak_rss_bytes": peak, "failed_steps": failed})
            rows.append([hosts, steps["ingest"]["seconds"], steps["score"]["seconds"], steps["combine"]["seconds"],
                         total, total_process, *[steps[s]["peak_rss_bytes"] / 2**30 for s in STEPS],
                         ", ".join(failed) or "none"])
            shutil.rmtree(lake)
            print(f"{hosts} hosts done in {total_process:.0f} s", flush=True)
    common.print_table(
        f"Fleet day: {args.metrics} metrics at 1 min, one shared model (units {units}), seconds and peak GiB per step",
        ["hosts", "ingest s", "score s", "combine s", "total s", "with start-up s", "ingest GiB", "score GiB", "combine GiB",
         "failed steps"],
        rows,
    )
    report["load_average_after"] = common.load_average()
    common.write_result("fleet", report)
    return report


if __name__ == "__main__":
    main()
