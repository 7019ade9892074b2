"""Ingest throughput: gzip CSV exports to curated Parquet, against pyarrow's own CSV read.

The landing objects are one simulated day of a fleet (``lstmae.simulate``,
wide CSV, one gzip object per host, 1-minute step) in a lake in a temporary
directory. Workloads, timed alternately in the same process:

* pyarrow: ``pyarrow.csv.read_csv`` of every landing object (gunzip and
  parse, nothing else). This is the baseline.
* lstmae: :func:`lstmae.ingest.ingest_interval` over the day (list, read,
  parse, validate, reshape to long rows, deduplicate, write the curated and
  quarantine Parquet partitions and the report).

MB/s count the uncompressed CSV bytes; rows/s count CSV lines (one timestamp
of one host, ``metrics`` values each). CPU seconds are the process's user
and system time during the call, all threads together; their ratio shows
how much more work ingest does than the read, whatever the machine's load,
while the wall-time ratio (the target) also depends on free cores.

Usage: ``python bench/bench_ingest.py [--hosts 100] [--metrics 8]``.
"""

from __future__ import annotations

import argparse
import gzip
import resource
import tempfile
import time

import pandas as pd

import common


def _timed(function) -> tuple[float, float]:
    """Call ``function`` once; return its wall seconds and the process's CPU seconds (all threads)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    function()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100, help="hosts, one landing object each (default 100)")
    parser.add_argument("--metrics", type=int, default=8, help="metrics per host (default 8)")
    parser.add_argument("--repetitions", type=int, default=3, help="timed repetitions per workload (default 3)")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from lstmae.config import Config
    from lstmae.ingest import ingest_interval
    from lstmae.simulate import simulate_fleet, write_fleet
    from lstmae.storage import LocalStorage

    with tempfile.TemporaryDirectory(prefix="lstmae-bench-ingest-") as directory:
        storage = LocalStorage(directory)
        config = Config(lake=storage.uri, step="1min")
        fleet = simulate_fleet(hosts=args.hosts, metrics=args.metrics, days=1, step="1min", seed=0)
        written = write_fleet(storage, fleet, format="wide")
        start = fleet.start
        end = start + pd.Timedelta(days=1)
        keys = storage.list(f"landing/date={start.strftime('%Y-%m-%d')}/")
        compressed = sum(len(storage.read_bytes(key)) for key in keys)
        uncompressed = sum(len(gzip.decompress(storage.read_bytes(key))) for key in keys)
        lines = written["rows"]
        values = written["values"]

        def pyarrow_read():
            rows_read = 0
            for key in keys:
                stream = pa.input_stream(pa.BufferReader(storage.read_bytes(key)), compression="gzip")
                rows_read += pa_csv.read_csv(stream).num_rows
            return rows_read

        def lstmae_ingest():
            return ingest_interval(storage, config, start, end)

        parsed = pyarrow_read()
        report = lstmae_ingest()
        if parsed != lines:
            raise RuntimeError(f"pyarrow read {parsed} CSV lines, expected {lines}")
        workloads = {"pyarrow.csv.read_csv (baseline)": pyarrow_read, "lstmae ingest_interval": lstmae_ingest}
        timings = {name: [] for name in workloads}
        cpu = {name: [] for name in workloads}
        for _ in range(args.repetitions):
            for name, function in workloads.items():
                wall, used = _timed(function)
                timings[name].append(wall)
                cpu[name].append(used)

    result = {"benchmark": "ingest", "machine": common.machine(), "load_average": common.load_average(),
              "hosts": args.hosts, "metrics": args.metrics, "objects": len(keys), "csv_lines": lines,
              "values": values, "compressed_bytes": compressed, "uncompressed_bytes": uncompressed,
              "curated_rows": getattr(report, "rows_curated", None), "workloads": {}}
    baseline = common.median(timings["pyarrow.csv.read_csv (baseline)"])
    baseline_cpu = common.median(cpu["pyarrow.csv.read_csv (baseline)"])
    rows = []
    for name, seconds in timings.items():
        middle = common.median(seconds)
        cpu_middle = common.median(cpu[name])
        item = {
            "seconds": middle,
            "seconds_all": seconds,
            "cpu_seconds": cpu_middle,
            "cpu_seconds_all": cpu[name],
            "cpu_rate_vs_pyarrow": baseline_cpu / cpu_middle,
            "megabytes_per_second": uncompressed / middle / 1e6,
            "compressed_megabytes_per_second": compressed / middle / 1e6,
            "lines_per_second": lines / middle,
            "values_per_second": values / middle,
            "rate_vs_pyarrow": baseline / middle,
        }
        result["workloads"][name] = item
        rows.append([name, middle, item["megabytes_per_second"], item["compressed_megabytes_per_second"],
                     item["lines_per_second"], item["values_per_second"], item["rate_vs_pyarrow"], cpu_middle,
                     item["cpu_rate_vs_pyarrow"]])
    common.print_table(
        f"Ingest, {len(keys)} gzip wide CSV objects ({args.hosts} hosts x 1 day x {args.metrics} metrics at 1 min), "
        f"{uncompressed / 1e6:.1f} MB CSV, {compressed / 1e6:.1f} MB gzip",
        ["workload", "seconds", "MB/s (CSV)", "MB/s (gzip)", "lines/s", "values/s", "rate vs pyarrow", "CPU s",
         "CPU rate vs pyarrow"],
        rows,
    )
    common.write_result("ingest", result)
    return result


if __name__ == "__main__":
    main()
