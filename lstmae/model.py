"""The LSTM autoencoder and its predictor variant, in Keras 3.

TensorFlow is imported inside the functions, never at module import: Airflow
parses DAG files and forks task processes, and TensorFlow must not be
initialised in a process that forks afterwards.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import numpy as np

from lstmae.fused import autoencoder_function

log = logging.getLogger(__name__)


def configure_tensorflow(threads: int | None = None, seed: int | None = None) -> None:
    """Set TensorFlow's thread pools and seeds before its first operation.

    Args:
        threads: intra-op threads; defaults to ``$LSTMAE_THREADS`` or every core.
        seed: seed for Python, numpy and TensorFlow, for reproducible training.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    threads = threads or int(os.environ.get("LSTMAE_THREADS", "0")) or None
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            # Thread pools can only be set before TensorFlow runs its first
            # operation; a second call in the same process keeps the first setting.
            log.debug("TensorFlow threads already initialised; keeping the existing setting")
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)


def build_autoencoder(timesteps: int, features: int, units=(100, 100, 100), learning_rate: float = 0.001):
    """Build the reference LSTM autoencoder.

    Layers: ``LSTM(units[0], relu, return_sequences)`` →
    ``Bidirectional(LSTM(units[1]))`` (the encoding of the whole window) →
    ``RepeatVector(timesteps)`` → ``LSTM(units[2], relu, return_sequences)`` →
    ``TimeDistributed(Dense(features))``; Adam and mean squared error.

    Input and output shapes are ``(batch, timesteps, features)``.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(timesteps, features), name="window")
    x = layers.LSTM(units[0], activation="relu", return_sequences=True, name="encoder")(inputs)
    x = layers.Bidirectional(layers.LSTM(units[1]), name="encoding")(x)
    x = layers.RepeatVector(timesteps, name="repeat")(x)
    x = layers.LSTM(units[2], activation="relu", return_sequences=True, name="decoder")(x)
    outputs = layers.TimeDistributed(layers.Dense(features), name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="lstm_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


def build_predictor(timesteps: int, features: int, look_ahead: int, units=(100, 100, 100), learning_rate: float = 0.001):
    """Build the reconstruct-and-predict variant.

    One encoder ``LSTM(units[0], relu)`` reads the window; one decoder
    reconstructs its ``timesteps`` rows, the other predicts the next
    ``look_ahead`` rows. Both are trained jointly with mean squared error.
    Outputs: ``{"reconstruction": (batch, timesteps, features),
    "prediction": (batch, look_ahead, features)}``.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(timesteps, features), name="window")
    encoding = layers.LSTM(units[0], activation="relu", name="encoder")(inputs)
    past = layers.RepeatVector(timesteps, name="repeat_past")(encoding)
    past = layers.LSTM(units[2], activation="relu", return_sequences=True, name="past_decoder")(past)
    past = layers.TimeDistributed(layers.Dense(features), name="reconstruction")(past)
    future = layers.RepeatVector(look_ahead, name="repeat_future")(encoding)
    future = layers.LSTM(units[2], activation="relu", return_sequences=True, name="future_decoder")(future)
    future = layers.TimeDistributed(layers.Dense(features), name="prediction")(future)
    model = keras.Model(inputs, {"reconstruction": past, "prediction": future}, name="lstm_predictor")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss={"reconstruction": "mse", "prediction": "mse"},
    )
    return model


class EpochLogger:
    """Keras callback factory that logs each epoch's losses (for task logs)."""

    @staticmethod
    def create(total_epochs: int):
        import keras

        class _Logger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                values = " ".join(f"{k}={v:.6g}" for k, v in sorted(logs.items()))
                log.info("epoch %d/%d %s", epoch + 1, total_epochs, values)

        return _Logger()


def fit_model(
    model, x: np.ndarray, y: Any, *, epochs: int, batch_size: int, validation_split: float, seed: int,
    callbacks: list | None = None, engine: str = "auto",
) -> dict:
    """Fit ``model`` and return its history as ``{metric: [value per epoch]}``.

    Training stops with ``ValueError`` as soon as a loss is not finite, so a
    diverging run can never publish a model.

    Args:
        callbacks: extra Keras callbacks (progress reports, benchmarks), run
            after the epoch logger and the non-finite loss check.
        engine: ``"auto"`` (default) trains the reference autoencoder on
            :mod:`lstmae.fused`'s graph, 1.5 to 2.2 times as fast as
            ``model.fit`` on a 2-core CPU (``bench/bench_training.py``),
            and any other model with ``model.fit``. ``"keras"`` always
            uses ``model.fit``.
    """
    import keras

    from lstmae import fused

    if engine not in ("auto", "keras"):
        raise ValueError(f"engine={engine!r} is not a training engine. Use 'auto' or 'keras'.")

    class _StopOnNaN(keras.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(loss):
                self.model.stop_training = True

    keras.utils.set_random_seed(seed)
    every_callback = [EpochLogger.create(epochs), _StopOnNaN(), *(callbacks or [])]
    split = validation_split if validation_split > 0 else 0.0
    if engine == "auto" and fused.trainable(model, x, y):
        log.debug("Training %s on the fused graph", model.name)
        history = fused.fit(model, x, epochs=epochs, batch_size=batch_size, validation_split=split, seed=seed,
                            callbacks=every_callback)
    else:
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_split=split, shuffle=True,
                            verbose=0, callbacks=every_callback).history
    result = {key: [float(v) for v in values] for key, values in history.items()}
    bad = [key for key, values in result.items() if not values or not np.isfinite(values).all()]
    if bad:
        raise ValueError(
            f"Training diverged: loss {bad[0]} is not finite ({result[bad[0]][-3:]}). "
            "Lower the learning rate, check the input for extreme values, or use more data."
        )
    return result


def predict(
    model, windows: np.ndarray, batch_size: int = 1024, jit_compile: bool | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Run batched inference on ``(windows, timesteps, features)``.

    The model runs as one traced TensorFlow graph per model and window shape
    (a ``tf.function`` with a fixed input signature, traced on the first call
    and reused after), over batches of ``batch_size`` windows. This avoids
    both the prototype's ``model.predict`` call per window and the per-call
    setup of ``model.predict`` and of eager execution. Inputs are converted to
    contiguous float32 once.

    Args:
        model: a Keras model whose input is ``(batch, timesteps, features)``.
        windows: ``(windows, timesteps, features)`` scaled windows.
        batch_size: windows per graph call; default 1024. Larger batches give
            larger matrix products per LSTM step, and memory grows linearly
            with them; on a 2-core CPU, batches above 1024 gained little in
            ``bench/bench_scoring.py``.
        jit_compile: compile the graph with XLA. ``None`` (default) reads
            ``$LSTMAE_JIT``: ``1`` always, ``0`` never, unset or ``auto``
            once this model has been given at least ``JIT_MIN_WINDOWS``
            windows in this process, this call included. With XLA
            the last batch is zero-padded to ``batch_size`` so that one
            compiled shape serves every call. Compiling takes about 11 s for
            the reference model on a 2-core machine, once per model and
            window shape in a process, and then scoring runs 1.15 to 1.7
            times as fast (``bench/bench_scoring.py``, ``bench/bench_fleet.py``).

    Returns:
        ``(windows, timesteps, features)`` float32 for the autoencoder, or a
        dict of such arrays (keyed by output name) for a multi-output model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of windows. Received: batch_size={batch_size}.")
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if windows.ndim != 3:
        raise ValueError(f"windows must be (windows, timesteps, features). Received shape {windows.shape}.")
    if len(windows) == 0:
        return _empty_output(model, windows)
    if jit_compile is None:
        seen = _PREDICTED_WINDOWS.get(model, 0) + len(windows)
        _PREDICTED_WINDOWS[model] = seen
        jit_compile = _jit_setting(seen)
    function = _inference_function(model, windows.shape[1:], batch_size if jit_compile else None)
    outputs = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        rows = len(batch)
        if jit_compile and rows < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - rows,) + batch.shape[1:], dtype=np.float32)])
        output = function(batch)
        if isinstance(output, dict):
            outputs.append({key: value.numpy()[:rows] for key, value in output.items()})
        else:
            outputs.append(output.numpy()[:rows])
    if isinstance(outputs[0], dict):
        return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
    return np.concatenate(outputs)


# With $LSTMAE_JIT unset or "auto", a model switches to XLA once it has been
# given this many windows in the process. XLA's compile time is then repaid
# by jobs that go on to score at least as many again. A day of 1-minute rows
# is about 1,500 windows per series, so the switch comes after about 130
# series, and small deployments and tests never compile.
JIT_MIN_WINDOWS = 200_000

# Windows given to each model's predict calls in this process (weak keys).
_PREDICTED_WINDOWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jit_setting(windows: int) -> bool:
    """Return whether to use XLA for a model given ``windows`` windows so far, from ``$LSTMAE_JIT``."""
    value = os.environ.get("LSTMAE_JIT", "auto").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("", "auto"):
        return windows >= JIT_MIN_WINDOWS
    raise ValueError(f"LSTMAE_JIT={value!r} is not a valid setting. Use 1 (always XLA), 0 (never) or auto.")


# Traced inference graphs per model, keyed by (timesteps, features, fixed batch
# or None); weak keys so that a model and its graphs are freed together.
_INFERENCE_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_function(model, window_shape: tuple[int, int], fixed_batch: int | None):
    """Return the cached ``tf.function`` that runs ``model`` in inference mode."""
    import tensorflow as tf

    functions = _INFERENCE_FUNCTIONS.setdefault(model, {})
    key = (*window_shape, fixed_batch)
    if key not in functions:
        # The graph refers to the model weakly: a strong reference from the
        # cached value would keep its weak key, the model, alive forever.
        model_ref = weakref.ref(model)
        forward = autoencoder_function(model, window_shape)
        fused = forward is not None
        if not fused:

            def forward(batch):
                return model_ref()(batch, training=False)

        functions[key] = tf.function(
            forward,
            input_signature=[tf.TensorSpec((fixed_batch, *window_shape), tf.float32)],
            jit_compile=fixed_batch is not None,
            autograph=False,
        )
        log.debug("Created the inference graph of %s for windows %s (XLA: %s, fused: %s)", model.name, window_shape,
                  fixed_batch is not None, fused)
    return functions[key]


def _empty_output(model, windows):
    output = model(np.zeros((1,) + windows.shape[1:], dtype=np.float32), training=False)
    if isinstance(output, dict):
        return {key: np.zeros((0,) + tuple(value.shape[1:]), dtype=np.float32) for key, value in output.items()}
    return np.zeros((0,) + tuple(output.shape[1:]), dtype=np.float32)


def save_model(model, path: str) -> None:
    model.save(path)


def load_model(path: str):
    """Load a ``.keras`` file with ``safe_mode=True``: no code from storage runs."""
    import keras

    return keras.models.load_model(path, safe_mode=True, compile=False)
