"""Training throughput of the reference model: plain ``model.fit`` against lstmae's ``fit_model``.

Both runs start from the same initial weights (seed 0), train on the same
windows (60 steps, stride 30, of a synthetic 19-feature series with a daily
cycle and a random walk) with the reference settings (Adam 0.001, batch 32,
10 % validation split, shuffled), and record per epoch the wall time and the
validation loss. Each of the two runs at batch 32 repeats with ``--seeds``
seeds (initial weights and shuffling order), so that the spread of the
final validation loss between seeds shows what "the same loss" means. The
last run uses ``fit_model`` with a larger batch to show the trade-off
between FLOP rate and loss per epoch.

``fit_model`` trains the reference autoencoder on the fused graph of
:mod:`lstmae.fused`; ``model.fit`` runs Keras's own LSTM loop.

FLOP per training window are estimated as 3 times the forward pass (the
backward pass costs about twice the forward pass), see
:func:`bench_scoring.autoencoder_flops`. Windows per second count training
windows (without the validation split) over the median epoch time of epochs
2 and later; the first epoch also traces the graphs.

"Time to the target loss" is the wall time, from the start of ``fit``, of
the first epoch whose validation loss is at most the target: 1.1 times the
median final validation loss of the plain runs.

Usage: ``python bench/bench_training.py [--windows 1200] [--epochs 6] [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import common
from bench_scoring import TIMESTEPS, UNITS, autoencoder_flops, synthetic_frame

common.quiet_tensorflow()


def epoch_timer():
    """A Keras callback that records each epoch's end time and validation loss."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.started = None
            self.epoch_started = None
            self.epoch_seconds: list[float] = []
            self.elapsed: list[float] = []
            self.validation_loss: list[float] = []

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_seconds.append(now - self.epoch_started)
            self.elapsed.append(now - self.started)
            self.validation_loss.append(float((logs or {}).get("val_loss", float("nan"))))

    return EpochTimer()


def training_windows(windows: int, features: int) -> np.ndarray:
    from lstmae.scaler import Scaler
    from lstmae.windows import cut_windows

    stride = 30
    frame = synthetic_frame((windows - 1) * stride + TIMESTEPS, features, seed=1)
    scaler = Scaler.fit(list(frame.columns), frame.to_numpy())
    return cut_windows(scaler.transform(frame.to_numpy()), np.arange(windows) * stride, TIMESTEPS)


def run_plain(x: np.ndarray, epochs: int, batch_size: int, seed: int):
    import keras

    from lstmae.model import build_autoencoder

    keras.utils.set_random_seed(seed)
    model = build_autoencoder(TIMESTEPS, x.shape[2], UNITS)
    timer = epoch_timer()
    keras.utils.set_random_seed(seed)
    model.fit(x, x, epochs=epochs, batch_size=batch_size, validation_split=0.1, shuffle=True, verbose=0, callbacks=[timer])
    return timer


def run_lstmae(x: np.ndarray, epochs: int, batch_size: int, seed: int):
    import keras

    from lstmae.model import build_autoencoder, fit_model

    keras.utils.set_random_seed(seed)
    model = build_autoencoder(TIMESTEPS, x.shape[2], UNITS)
    timer = epoch_timer()
    fit_model(model, x, x, epochs=epochs, batch_size=batch_size, validation_split=0.1, seed=seed, callbacks=[timer])
    return timer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=1200, help="training windows before the validation split (default 1200)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    parser.add_argument("--features", type=int, default=19, help="features (default 19)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="runs per engine at batch 32, seeds 0 .. seeds-1 (initial weights and order; default 3)")
    parser.add_argument("--large-batch", type=int, default=256, help="batch size of the last run (default 256; 0 skips it)")
    args = parser.parse_args(argv)

    from lstmae.model import configure_tensorflow

    configure_tensorflow()
    reference = common.MatmulReference()
    x = training_windows(args.windows, args.features)
    trained = len(x) - int(len(x) * 0.1)
    flop_per_window = 3 * autoencoder_flops(TIMESTEPS, args.features, UNITS)

    report = {"benchmark": "training", "machine": common.machine(), "load_average_before": common.load_average(),
              "windows": len(x), "training_windows": trained, "features": args.features, "epochs": args.epochs,
              "seeds": args.seeds, "flop_per_training_window": flop_per_window, "runs": {}}
    plain, fused = "plain model.fit, batch 32", "lstmae fit_model, batch 32"
    # The engines alternate seed by seed, so that a slow spell of the machine hits both.
    runs = [(name, function, 32, seed) for seed in range(args.seeds)
            for name, function in ((plain, run_plain), (fused, run_lstmae))]
    if args.large_batch:
        runs.append((f"lstmae fit_model, batch {args.large_batch}", run_lstmae, args.large_batch, 0))
    for name, function, batch_size, seed in runs:
        before = reference.rate()
        timer = function(x, args.epochs, batch_size, seed)
        after = reference.rate()
        steady = common.median(timer.epoch_seconds[1:]) if len(timer.epoch_seconds) > 1 else timer.epoch_seconds[0]
        item = report["runs"].setdefault(name, {"batch_size": batch_size, "seeds": []})
        item["seeds"].append({
            "seed": seed,
            "epoch_seconds": timer.epoch_seconds,
            "elapsed_seconds": timer.elapsed,
            "validation_loss": timer.validation_loss,
            "steady_epoch_seconds": steady,
            "gflops": trained * flop_per_window / steady / 1e9,
            "reference_gflops": (before + after) / 2 / 1e9,
        })
    target = 1.1 * common.median([run["validation_loss"][-1] for run in report["runs"][plain]["seeds"]])
    report["target_validation_loss"] = target
    rows = []
    for name, item in report["runs"].items():
        seeds = item["seeds"]
        for run in seeds:
            reached = [t for t, loss in zip(run["elapsed_seconds"], run["validation_loss"]) if loss <= target]
            run["seconds_to_target"] = reached[0] if reached else None
            run["fraction_of_matmul"] = run["gflops"] / run["reference_gflops"]
        final = [run["validation_loss"][-1] for run in seeds]
        item.update({
            "steady_epoch_seconds": common.median([run["steady_epoch_seconds"] for run in seeds]),
            "gflops": common.median([run["gflops"] for run in seeds]),
            "fraction_of_matmul": common.median([run["fraction_of_matmul"] for run in seeds]),
            "final_validation_loss": final,
            "seconds_to_target": [run["seconds_to_target"] for run in seeds],
        })
        item["windows_per_second"] = trained / item["steady_epoch_seconds"]
        first = common.median([run["epoch_seconds"][0] for run in seeds])
        rows.append([name, len(seeds), item["windows_per_second"], item["gflops"], item["fraction_of_matmul"], first,
                     " ".join(f"{loss:.3f}" for loss in final),
                     " ".join("-" if t is None else f"{t:.1f}" for t in item["seconds_to_target"])])
    report["speedup_over_plain"] = report["runs"][plain]["steady_epoch_seconds"] / report["runs"][fused]["steady_epoch_seconds"]
    common.print_table(
        f"Training, {args.features} features, {len(x)} windows of {TIMESTEPS} steps ({trained} trained), "
        f"units {UNITS}, {args.epochs} epochs, {flop_per_window / 1e6:.0f} MFLOP per training window; "
        "medians over seeds, losses and times per seed",
        ["run", "seeds", "windows/s", "GFLOP/s", "of matmul", "first epoch s", "final val loss",
         f"s to val loss {target:.4g}"],
        rows,
    )
    report["matmul"] = reference.summary()
    report["load_average_after"] = common.load_average()
    print(f"\nlstmae fit_model at batch 32: {report['speedup_over_plain']:.2f} times the plain model.fit epoch rate")
    print(f"reference float32 2048x2048 matmul: TensorFlow {report['matmul']['tensorflow_gflops']:.1f} GFLOP/s, "
          f"numpy {report['matmul']['numpy_gflops']:.1f} GFLOP/s")
    common.write_result("training", report)
    return report


if __name__ == "__main__":
    main()
