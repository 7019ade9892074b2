"""The LSTM autoencoder and its predictor variant, in Keras 3.

TensorFlow is imported inside the functions, never at module import: Airflow
parses DAG files and forks task processes, and TensorFlow must not be
initialised in a process that forks afterwards.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

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


def fit_model(model, x: np.ndarray, y: Any, *, epochs: int, batch_size: int, validation_split: float, seed: int) -> dict:
    """Fit ``model`` and return its history as ``{metric: [value per epoch]}``.

    Training stops with ``ValueError`` as soon as a loss is not finite, so a
    diverging run can never publish a model.
    """
    import keras

    class _StopOnNaN(keras.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(loss):
                self.model.stop_training = True

    keras.utils.set_random_seed(seed)
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split if validation_split > 0 else 0.0,
        shuffle=True,
        verbose=0,
        callbacks=[EpochLogger.create(epochs), _StopOnNaN()],
    )
    result = {key: [float(v) for v in values] for key, values in history.history.items()}
    bad = [key for key, values in result.items() if not values or not np.isfinite(values).all()]
    if bad:
        raise ValueError(
            f"Training diverged: loss {bad[0]} is not finite ({result[bad[0]][-3:]}). "
            "Lower the learning rate, check the input for extreme values, or use more data."
        )
    return result


def predict(model, windows: np.ndarray, batch_size: int = 1024) -> np.ndarray | dict[str, np.ndarray]:
    """Run batched inference on ``(windows, timesteps, features)``.

    Calls the model directly on large batches instead of ``model.predict`` per
    window, which the prototype did.
    """
    if len(windows) == 0:
        return _empty_output(model, windows)
    outputs = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        outputs.append(model(batch, training=False))
    if isinstance(outputs[0], dict):
        return {key: np.concatenate([np.asarray(o[key]) for o in outputs]) for key in outputs[0]}
    return np.concatenate([np.asarray(o) for o in outputs])


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
