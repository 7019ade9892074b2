"""Run every benchmark (what ``make bench`` calls) and write bench/results/*.json.

Each benchmark runs in its own Python process, so that TensorFlow's thread
pools, compiled graphs and memory of one cannot affect the next. The default
sizes keep the whole run under 15 minutes on a quiet 2-core machine; the
fleet benchmark's host counts are the largest part (``--fleet-hosts``), and
each of its steps is stopped after ``--fleet-time-limit`` seconds.

Usage: ``python bench/run_all.py [--only scoring training ingest fleet] [--fleet-hosts 250 500 1000]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("scoring", "training", "ingest", "fleet")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="benchmarks to run (default all)")
    parser.add_argument("--fleet-hosts", nargs="+", default=["25", "50", "100"],
                        help="host counts of the fleet benchmark (default 25 50 100; the full scale is 250 500 1000)")
    parser.add_argument("--fleet-time-limit", default="300",
                        help="seconds after which a fleet step is stopped and reported as failed (default 300)")
    args = parser.parse_args(argv)

    commands = {
        "scoring": ["bench_scoring.py", "--features", "19", "38", "--windows", "1024", "--repetitions", "5"],
        "training": ["bench_training.py", "--windows", "800", "--epochs", "5"],
        "ingest": ["bench_ingest.py", "--hosts", "200", "--repetitions", "3"],
        "fleet": ["bench_fleet.py", "--hosts", *args.fleet_hosts, "--time-limit", args.fleet_time_limit],
    }
    started = time.monotonic()
    failures = []
    for name in args.only:
        print(f"\n## {name}: {' '.join(commands[name])}", flush=True)
        begun = time.monotonic()
        completed = subprocess.run([sys.executable, str(HERE / commands[name][0]), *commands[name][1:]], cwd=HERE, check=False)
        print(f"({name} took {time.monotonic() - begun:.0f} s)", flush=True)
        if completed.returncode != 0:
            failures.append(f"{name} (exit code {completed.returncode})")
    print(f"\nAll benchmarks took {time.monotonic() - started:.0f} s; results in {HERE / 'results'}")
    if failures:
        print(f"Failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
