"""Scoring throughput of the reference model: the prototype's way, plain Keras, and lstmae.

Workloads, all on the same model (units 100/100/100, random weights, seed 0)
and the same 60-step windows of a synthetic series:

* (a) prototype: one ``model.predict`` call per window, as the reference
  prototype scored. Timed on a small sample and extrapolated per window.
* (b) plain ``model.predict`` on all windows at once, with Keras's default
  batch size (32) and with batch 1024.
* (c) lstmae: :func:`lstmae.model.predict` (the inference execution alone),
  :func:`lstmae.scoring.series_errors` (windows, inference and errors of a
  frame) and :func:`lstmae.scoring.score_frame` (everything up to the output
  rows), plus the XLA-compiled inference.

Rows versus windows: the prototype judged non-overlapping windows, so one
window scored 60 rows. lstmae scores every row with the window that ends at
it (stride 1), so one window scores one row. Both rates are reported.

Usage: ``python bench/bench_scoring.py [--features 19 38] [--windows 2048]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

import common

common.quiet_tensorflow()

TIMESTEPS = 60
UNITS = (100, 100, 100)


def lstm_flops(inputs: int, units: int, timesteps: int) -> int:
    """Floating-point operations of one LSTM layer over one window.

    Per step the four gates are one matrix product of ``[x_t, h_{t-1}, 1]``
    (``inputs + units + 1`` values) with a ``(inputs + units + 1, 4 * units)``
    matrix: ``4 * (inputs + units + 1) * units`` multiply-adds, 2 FLOP each.
    The element-wise gate activations and state updates (about ``10 * units``
    per step) are not counted, as usual for FLOP rates of matrix work.

    >>> lstm_flops(19, 100, 60)
    5760000
    """
    return 4 * (inputs + units + 1) * units * 2 * timesteps


def autoencoder_flops(timesteps: int, features: int, units=UNITS) -> int:
    """Floating-point operations of one forward pass of the reference autoencoder on one window.

    ``LSTM(u0)`` on ``features`` inputs + ``Bidirectional(LSTM(u1))`` (two
    LSTMs on ``u0`` inputs) + ``LSTM(u2)`` on the ``2 * u1`` inputs of the
    repeated encoding + ``TimeDistributed(Dense(features))``:
    ``(u2 * features + features) * 2`` per step. Every layer runs
    ``timesteps`` steps.

    >>> autoencoder_flops(60, 19)
    39734280
    >>> autoencoder_flops(60, 38)
    40876560
    """
    u0, u1, u2 = units
    return (
        lstm_flops(features, u0, timesteps)
        + 2 * lstm_flops(u0, u1, timesteps)
        + lstm_flops(2 * u1, u2, timesteps)
        + (u2 * features + features) * 2 * timesteps
    )


def synthetic_frame(rows: int, features: int, seed: int = 0) -> pd.DataFrame:
    """A realistic-looking metric frame: daily cycle, random walk and noise per feature, 1-minute grid."""
    generator = np.random.default_rng(seed)
    minutes = np.arange(rows)
    daily = np.sin(2 * np.pi * minutes / 1440.0)[:, None] * generator.uniform(5, 20, features)
    walk = np.cumsum(generator.normal(0, 0.3, (rows, features)), axis=0)
    values = 50 + daily + walk + generator.normal(0, 1.0, (rows, features))
    index = pd.date_range("2026-09-01", periods=rows, freq="1min", tz="UTC")
    return pd.DataFrame(values, index=index, columns=[f"metric_{i:02d}" for i in range(features)])


def run(features: int, windows: int, repetitions: int, prototype_sample: int, reference) -> dict:
    import keras

    from lstmae.config import ThresholdConfig
    from lstmae.model import build_autoencoder, predict
    from lstmae.scaler import Scaler
    from lstmae.scoring import score_frame, series_errors
    from lstmae.thresholds import fit_thresholds
    from lstmae.windows import cut_windows

    keras.utils.set_random_seed(0)
    model = build_autoencoder(TIMESTEPS, features, UNITS)
    frame = synthetic_frame(windows + TIMESTEPS - 1, features)
    scaler = Scaler.fit(list(frame.columns), frame.to_numpy())
    batch = cut_windows(scaler.transform(frame.to_numpy()), np.arange(windows), TIMESTEPS)
    flop = autoencoder_flops(TIMESTEPS, features, UNITS)

    # Warm-ups: build Keras's predict function and lstmae's traced graphs.
    model.predict(batch[:1], verbose=0)
    model.predict(batch[:64], batch_size=1024, verbose=0)
    predict(model, batch[:8])
    predict(model, batch[:8], jit_compile=True)

    errors = series_errors(model, scaler, frame, TIMESTEPS)
    thresholds = fit_thresholds(list(frame.columns), errors.errors[TIMESTEPS - 1 :], ThresholdConfig())
    start, end = frame.index[0], frame.index[-1] + pd.Timedelta("1min")

    sample = batch[:prototype_sample]
    workloads = {
        "(a) prototype: model.predict per window": (
            lambda: [model.predict(sample[i : i + 1], verbose=0) for i in range(len(sample))], len(sample), TIMESTEPS),
        "(b) model.predict, batch 32 (Keras default)": (lambda: model.predict(batch, verbose=0), windows, 1),
        "(b) model.predict, batch 1024": (lambda: model.predict(batch, batch_size=1024, verbose=0), windows, 1),
        "(c) lstmae.model.predict": (lambda: predict(model, batch), windows, 1),
        "(c) lstmae.model.predict, XLA": (lambda: predict(model, batch, jit_compile=True), windows, 1),
        "(c) lstmae series_errors": (lambda: series_errors(model, scaler, frame, TIMESTEPS), windows, 1),
        "(c) lstmae score_frame": (lambda: score_frame(model, scaler, thresholds, frame, TIMESTEPS, start, end), windows, 1),
    }
    results = {}
    for name, (function, count, rows_per_window) in workloads.items():
        timing = common.measure(function, reference, repetitions if count > len(sample) else max(3, repetitions // 2))
        window_rate = count / timing["seconds"]
        results[name] = {
            "windows": count,
            "rows_per_window": rows_per_window,
            "windows_per_second": window_rate,
            "rows_per_second": window_rate * rows_per_window,
            "gflops": window_rate * flop / 1e9,
            "fraction_of_matmul": common.fraction_of_reference(count * flop, timing),
            "seconds_all": timing["seconds_all"],
        }

    # Equality of lstmae's scores with plain model.predict (standardised units).
    plain = model.predict(batch, batch_size=1024, verbose=0)
    ours = predict(model, batch)
    ours_xla = predict(model, batch, jit_compile=True)
    errors = series_errors(model, scaler, frame, TIMESTEPS)
    restored_last = scaler.transform(errors.reconstruction[TIMESTEPS - 1 :])
    equality = {
        "predict_vs_model_predict": float(np.abs(ours - plain).max()),
        "predict_xla_vs_model_predict": float(np.abs(ours_xla - plain).max()),
        "series_errors_vs_model_predict": float(np.abs(restored_last - plain[:, -1, :]).max()),
    }
    return {"features": features, "flop_per_window": flop, "workloads": results, "max_abs_difference": equality}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[19, 38], help="feature counts to run (default 19 38)")
    parser.add_argument("--windows", type=int, default=2048, help="windows per batched run (default 2048)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed repetitions per workload (default 5)")
    parser.add_argument("--prototype-sample", type=int, default=16, help="windows timed one by one for (a) (default 16)")
    args = parser.parse_args(argv)

    from lstmae.model import configure_tensorflow

    configure_tensorflow()
    reference = common.MatmulReference()
    report = {"benchmark": "scoring", "machine": common.machine(), "load_average_before": common.load_average(),
              "matmul": reference.summary(), "timesteps": TIMESTEPS, "units": UNITS, "runs": []}
    for features in args.features:
        result = run(features, args.windows, args.repetitions, args.prototype_sample, reference)
        report["runs"].append(result)
        prototype = result["workloads"]["(a) prototype: model.predict per window"]
        rows = []
        for name, item in result["workloads"].items():
            rows.append([name, item["windows_per_second"], item["rows_per_second"],
                         item["windows_per_second"] / prototype["windows_per_second"],
                         item["rows_per_second"] / prototype["rows_per_second"],
                         item["gflops"], item["fraction_of_matmul"]])
        common.print_table(
            f"Scoring, {features} features, {TIMESTEPS}-step windows, units {UNITS}, "
            f"{result['flop_per_window'] / 1e6:.1f} MFLOP per window",
            ["workload", "windows/s", "rows/s", "windows vs (a)", "rows vs (a)", "GFLOP/s", "of matmul"],
            rows,
        )
        print("max |difference| to model.predict (standardised units): "
              + ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_difference"].items()))
    report["load_average_after"] = common.load_average()
    matmul = report["matmul"]
    print(f"\nreference float32 2048x2048 matmul: TensorFlow {matmul['tensorflow_gflops']:.1f} GFLOP/s, "
          f"numpy {matmul['numpy_gflops']:.1f} GFLOP/s (BLAS {report['machine'].get('blas')})")
    common.write_result("scoring", report)
    return report


if __name__ == "__main__":
    main()
