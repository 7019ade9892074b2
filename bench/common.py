"""Shared helpers of the benchmarks: timing, the matrix-multiply reference, tables, results.

Every benchmark compares its workloads with each other and with a float32
2048 x 2048 matrix multiply measured in the same process. The machine is
shared and noisy, so a workload is timed several times, each repetition
between two reference matrix multiplies. A workload's rate is reported as
the median over repetitions, and its fraction of the reference rate as the
median of the per-repetition fractions, so that slow drifts of the machine's
load cancel.
"""

from __future__ import annotations

import datetime as _datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MATMUL_SIZE = 2048
MATMUL_FLOP = 2 * MATMUL_SIZE**3


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up messages (set before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median(values) -> float:
    return float(statistics.median(values))


def time_call(function: Callable[[], object]) -> float:
    """Return the wall time of one call, in seconds."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


class MatmulReference:
    """The float32 2048 x 2048 matrix multiply, in numpy and in TensorFlow.

    ``rate()`` times one TensorFlow multiply and returns its FLOP/s; it is the
    reference because numpy's rate depends on the OpenBLAS kernel that the
    environment selects (``OPENBLAS_CORETYPE``), TensorFlow's does not.
    """

    def __init__(self, seed: int = 0):
        import tensorflow as tf

        generator = np.random.default_rng(seed)
        self._a = generator.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
        self._b = generator.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
        self._ta = tf.constant(self._a)
        self._tb = tf.constant(self._b)
        self._tf = tf
        self.rate()
        self.numpy_rate()

    def rate(self) -> float:
        """FLOP/s of one TensorFlow float32 multiply (result copied to numpy)."""
        return MATMUL_FLOP / time_call(lambda: self._tf.matmul(self._ta, self._tb).numpy())

    def numpy_rate(self) -> float:
        """FLOP/s of one numpy float32 multiply (BLAS)."""
        return MATMUL_FLOP / time_call(lambda: self._a @ self._b)

    def summary(self, repetitions: int = 5) -> dict:
        """Median GFLOP/s of both multiplies over ``repetitions`` alternating runs."""
        tf_rates, numpy_rates = [], []
        for _ in range(repetitions):
            tf_rates.append(self.rate())
            numpy_rates.append(self.numpy_rate())
        return {"tensorflow_gflops": median(tf_rates) / 1e9, "numpy_gflops": median(numpy_rates) / 1e9}


def measure(function: Callable[[], object], reference: MatmulReference | None, repetitions: int) -> dict:
    """Time ``function`` ``repetitions`` times, each between two reference multiplies.

    Returns:
        ``{"seconds": median wall time, "seconds_all": [wall time per
        repetition], "reference_rates": [reference FLOP/s per repetition]}``,
        where a repetition's reference rate is the mean of the multiplies
        before and after it (NaN without a reference).
    """
    seconds, references = [], []
    for _ in range(repetitions):
        before = reference.rate() if reference else float("nan")
        seconds.append(time_call(function))
        after = reference.rate() if reference else float("nan")
        references.append((before + after) / 2)
    return {"seconds": median(seconds), "seconds_all": seconds, "reference_rates": references}


def fraction_of_reference(flop_per_run: float, timing: dict) -> float:
    """Median over repetitions of (achieved FLOP/s) / (reference FLOP/s of the same repetition)."""
    return median([flop_per_run / s / r for s, r in zip(timing["seconds_all"], timing["reference_rates"])])


def machine() -> dict:
    """The processor, cores, library versions and BLAS kernel of this run."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "bf16": _has_cpu_flag("avx512_bf16"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "LSTMAE_THREADS": os.environ.get("LSTMAE_THREADS"),
        "LSTMAE_JIT": os.environ.get("LSTMAE_JIT"),
        "date": _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {key: pool.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl is not installed; kernel unknown"
    for package in ("tensorflow", "keras", "pyarrow", "pandas"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on)")
    return info


def _has_cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    """Print a Markdown table (so it can be pasted into BENCHMARKS.md)."""
    cells = [[_format(value) for value in row] for row in rows]
    widths = [max(len(columns[i]), *(len(row[i]) for row in cells)) for i in range(len(columns))]
    print(f"\n### {title}\n")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-.") and not text.startswith("-" * 2)


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01 or value == 0:
            return f"{value:.3g}"
        return f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_result(name: str, data: dict) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
