"""The fused training graph of the reference autoencoder against Keras: gradients, epochs, callbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest

TIMESTEPS, FEATURES, UNITS = 12, 3, (6, 5, 6)


def reference_model(seed: int = 3, timesteps: int = TIMESTEPS):
    import keras

    from lstmae.model import build_autoencoder

    keras.utils.set_random_seed(seed)
    model = build_autoencoder(timesteps, FEATURES, units=UNITS)
    # Larger weights than the initialiser's, so that relu units switch on and off across steps.
    for variable in model.trainable_variables:
        variable.assign(variable.numpy() * 1.5)
    return model


def twin(model):
    """A compiled copy of ``model`` with the same weights and a fresh optimizer of the same kind."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    optimizer = model.optimizer
    copy.compile(optimizer=type(optimizer).from_config(optimizer.get_config()), loss="mse")
    return copy


def random_windows(count: int, seed: int = 5, timesteps: int = TIMESTEPS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, timesteps, FEATURES)).astype(np.float32)


def assert_gradients_match(model, windows: np.ndarray, tolerance: float) -> None:
    """Assert that the fused loss and gradients equal Keras's automatic differentiation of ``model``.

    ``tolerance`` is relative to the largest gradient of each weight.
    """
    import tensorflow as tf

    from lstmae.fused import gradient_function

    batch = tf.constant(windows)
    loss_and_gradients = gradient_function(model, windows.shape[1:])
    assert loss_and_gradients is not None
    fused_loss, fused_gradients = loss_and_gradients(batch)
    with tf.GradientTape() as tape:
        keras_loss = tf.reduce_mean(tf.square(model(batch, training=True) - batch))
    assert abs(float(fused_loss) - float(keras_loss)) <= 1e-6 * float(keras_loss)
    keras_gradients = tape.gradient(keras_loss, model.trainable_variables)
    for variable, mine, theirs in zip(model.trainable_variables, fused_gradients, keras_gradients):
        scale = max(float(tf.reduce_max(tf.abs(theirs))), 1e-3)
        assert float(tf.reduce_max(tf.abs(mine - theirs))) <= tolerance * scale, variable.path
        # Every weight takes part: a gradient of zero everywhere would hide a missing path. With one step,
        # the recurrent kernels multiply the zero initial state and have no gradient.
        if windows.shape[1] > 1 or "recurrent_kernel" not in variable.path:
            assert float(tf.reduce_max(tf.abs(theirs))) > 0, variable.path


@pytest.mark.parametrize("timesteps", [TIMESTEPS, 60])
def test_gradients_equal_keras(timesteps):
    # float32 rounding over 60 steps reaches about 1e-5 of the largest gradient.
    assert_gradients_match(reference_model(timesteps=timesteps), random_windows(7, timesteps=timesteps), 1e-4)


def test_epochs_equal_train_on_batch():
    """Two epochs of fused.fit equal Keras's train_on_batch on the same batches in the same order."""
    from lstmae import fused

    import keras

    x = random_windows(23)
    model = reference_model()
    # Plain SGD with small steps. Adam turns float32 rounding in near-zero gradients into steps of up to its
    # learning rate, and large steps grow rounding differences from batch to batch, past the tolerance below.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    keras_model = twin(model)
    history = fused.fit(model, x, epochs=2, batch_size=4, validation_split=0.2, seed=11)

    split_at = math.floor(23 * 0.8)  # 18 training windows, 5 held out, as model.fit splits
    train, held_out = x[:split_at], x[split_at:]
    generator = np.random.default_rng(11)
    expected_loss = []
    for _ in range(2):
        order = generator.permutation(split_at)
        losses = [(keras_model.train_on_batch(train[order[s : s + 4]], train[order[s : s + 4]]), len(order[s : s + 4]))
                  for s in range(0, split_at, 4)]
        assert [size for _, size in losses] == [4, 4, 4, 4, 2]
        expected_loss.append(sum(float(loss) * size for loss, size in losses) / split_at)
    assert history["loss"] == pytest.approx(expected_loss, rel=1e-5)
    validation = float(np.mean((keras_model.predict(held_out, verbose=0) - held_out) ** 2))
    assert history["val_loss"][-1] == pytest.approx(validation, rel=1e-5)
    for mine, theirs in zip(model.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=2e-5)
    # Training changed the weights: the comparison above is not between two untouched models.
    assert not np.allclose(model.get_weights()[0], reference_model().get_weights()[0])


def test_fused_engine_only_for_reference(monkeypatch):
    import keras

    from lstmae import fused
    from lstmae.model import build_predictor, fit_model

    calls = []
    real_fit = fused.fit
    monkeypatch.setattr(fused, "fit", lambda *args, **kwargs: calls.append(kwargs) or real_fit(*args, **kwargs))
    x = random_windows(10)
    history = fit_model(reference_model(), x, x, epochs=2, batch_size=4, validation_split=0.2, seed=0)
    assert len(calls) == 1
    assert sorted(history) == ["loss", "val_loss"]
    assert len(history["loss"]) == 2

    fit_model(reference_model(), x, x, epochs=1, batch_size=4, validation_split=0.2, seed=0, engine="keras")
    fit_model(reference_model(), x, x.copy(), epochs=1, batch_size=4, validation_split=0.2, seed=0)
    predictor = build_predictor(TIMESTEPS, FEATURES, look_ahead=2, units=(4, 4, 4))
    assert not fused.trainable(predictor, x, x)
    custom_loss = reference_model()
    custom_loss.compile(optimizer=keras.optimizers.Adam(), loss=lambda y, p: keras.ops.mean(keras.ops.abs(p - y)))
    assert not fused.trainable(custom_loss, x, x)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="engine='fast' is not a training engine"):
        fit_model(reference_model(), x, x, epochs=1, batch_size=4, validation_split=0.2, seed=0, engine="fast")


def test_dropout_model_not_fused():
    import keras
    from keras import layers

    from lstmae import fused

    inputs = keras.Input(shape=(TIMESTEPS, FEATURES))
    h = layers.LSTM(4, activation="relu", return_sequences=True, dropout=0.2, name="encoder")(inputs)
    h = layers.Bidirectional(layers.LSTM(4), name="encoding")(h)
    h = layers.RepeatVector(TIMESTEPS, name="repeat")(h)
    h = layers.LSTM(4, activation="relu", return_sequences=True, name="decoder")(h)
    outputs = layers.TimeDistributed(layers.Dense(FEATURES), name="reconstruction")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = random_windows(4)
    assert fused.reference_layers(model, (TIMESTEPS, FEATURES)) is None
    assert not fused.trainable(model, x, x)


def test_non_finite_batch_stops_training():
    import keras

    from lstmae.model import fit_model

    class Batches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1

    x = random_windows(12)
    x[:] = np.nan
    counter = Batches()
    with pytest.raises(ValueError, match=r"Training diverged: loss loss is not finite"):
        fit_model(reference_model(), x, x, epochs=3, batch_size=4, validation_split=0.0, seed=0, callbacks=[counter])
    assert counter.seen == 1


def test_callbacks_can_stop_training():
    import keras

    from lstmae import fused

    class StopAfterTwoEpochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append((epoch, sorted(logs)))
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.calls.append("end")

    callback = StopAfterTwoEpochs()
    history = fused.fit(reference_model(), random_windows(9), epochs=5, batch_size=4, validation_split=0.0, seed=0,
                        callbacks=[callback])
    assert callback.calls == ["begin", (0, ["loss"]), (1, ["loss"]), "end"]
    assert sorted(history) == ["loss"]
    assert len(history["loss"]) == 2


def test_empty_training_split_rejected():
    from lstmae import fused

    with pytest.raises(ValueError, match=r"validation_split=0.5 of 1 windows leaves 0 for training"):
        fused.fit(reference_model(), random_windows(1), epochs=1, batch_size=4, validation_split=0.5, seed=0)


def custom_autoencoder(timesteps: int, units: tuple[int, int, int], activations: tuple[str, str, str], seed: int = 3,
                       optimizer=None, encoder_options: dict | None = None, dense_bias: bool = True, **compile_options):
    """Build the reference architecture with chosen sizes, activations and compile options, weights scaled by 1.5."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(timesteps, FEATURES), name="window")
    hidden = layers.LSTM(units[0], activation=activations[0], return_sequences=True, name="encoder",
                         **(encoder_options or {}))(inputs)
    hidden = layers.Bidirectional(layers.LSTM(units[1], activation=activations[1]), name="encoding")(hidden)
    hidden = layers.RepeatVector(timesteps, name="repeat")(hidden)
    hidden = layers.LSTM(units[2], activation=activations[2], return_sequences=True, name="decoder")(hidden)
    outputs = layers.TimeDistributed(layers.Dense(FEATURES, use_bias=dense_bias), name="reconstruction")(hidden)
    model = keras.Model(inputs, outputs)
    for variable in model.trainable_variables:
        variable.assign(variable.numpy() * 1.5)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(), loss=compile_options.pop("loss", "mse"),
                  **compile_options)
    return model


@pytest.mark.parametrize(
    "timesteps, units, activations, batch",
    [
        (1, (3, 4, 2), ("tanh", "sigmoid", "tanh"), 1),
        (5, (3, 7, 2), ("sigmoid", "relu", "sigmoid"), 2),
        (2, (8, 2, 5), ("tanh", "tanh", "relu"), 5),
    ],
)
def test_gradients_other_activations(timesteps, units, activations, batch):
    """Tanh and sigmoid cell activations, one-step windows, a batch of one and a different size per layer."""
    assert_gradients_match(custom_autoencoder(timesteps, units, activations),
                           random_windows(batch, timesteps=timesteps), 1e-5)


def compile_options_by_case():
    import keras

    return {
        "loss_scale_factor": {"optimizer": keras.optimizers.SGD(0.1, loss_scale_factor=1024.0)},
        "loss_weights": {"optimizer": keras.optimizers.SGD(0.1), "loss_weights": 3.0},
        "sum_reduction": {"optimizer": keras.optimizers.SGD(0.01),
                          "loss": keras.losses.MeanSquaredError(reduction="sum")},
        "activity_regularizer": {"optimizer": keras.optimizers.SGD(0.1),
                                 "encoder_options": {"activity_regularizer": keras.regularizers.L2(10.0)}},
    }


@pytest.mark.parametrize("option", ["loss_scale_factor", "loss_weights", "sum_reduction", "activity_regularizer"])
def test_compile_options_honoured(option):
    """fit_model updates as train_on_batch does. With every window in one batch, the shuffle order does not matter."""
    from lstmae.model import fit_model

    x = random_windows(8)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), **compile_options_by_case()[option])
    expected = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), **compile_options_by_case()[option])
    before = model.get_weights()
    fit_model(model, x, x, epochs=1, batch_size=len(x), validation_split=0.0, seed=0)
    expected.train_on_batch(x, x)
    # The update is large enough that a missing scale factor or loss term shows at the tolerance below.
    changes = [np.abs(after - start).max() for after, start in zip(expected.get_weights(), before)]
    assert max(changes) > 1e-3
    for mine, theirs in zip(model.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)


def test_compiled_metrics_reported():
    import keras

    from lstmae.model import fit_model

    x = random_windows(8)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), optimizer=keras.optimizers.Adam(),
                               metrics=["mae"])
    history = fit_model(model, x, x, epochs=1, batch_size=4, validation_split=0.25, seed=0)
    assert sorted(history) == ["loss", "mae", "val_loss", "val_mae"]


def test_callback_logs_follow_keras():
    """Batch logs carry the epoch's running mean, and a stop after batch 1 of 3 reports the mean of batches 0-1.

    A learning rate of zero keeps the weights fixed, so every loss is a fixed
    function of the windows in its batch.
    """
    import keras

    from lstmae import fused

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batch_losses, self.epoch_logs, self.end_logs = [], [], None

        def on_train_batch_end(self, batch, logs=None):
            self.batch_losses.append(float(logs["loss"]))
            if batch == 1:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append(dict(logs))

        def on_train_end(self, logs=None):
            self.end_logs = logs

    x = random_windows(10)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), optimizer=keras.optimizers.SGD(0.0))
    window_losses = np.mean((model.predict(x, verbose=0) - x) ** 2, axis=(1, 2))
    recorder = Recorder()
    history = fused.fit(model, x, epochs=2, batch_size=4, validation_split=0.0, seed=0, callbacks=[recorder])

    order = np.random.default_rng(0).permutation(10)
    first, second = window_losses[order[:4]].mean(), window_losses[order[4:8]].mean()
    assert recorder.batch_losses == pytest.approx([first, (first + second) / 2], rel=1e-5)
    assert history["loss"] == pytest.approx([(first + second) / 2], rel=1e-5)
    assert recorder.end_logs == recorder.epoch_logs[-1]


def test_dense_without_bias():
    from lstmae.model import fit_model, predict

    x = random_windows(6)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), dense_bias=False)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict(model, x), expected, rtol=0, atol=1e-5)
    history = fit_model(model, x, x, epochs=1, batch_size=3, validation_split=0.0, seed=0)
    assert len(history["loss"]) == 1


def test_zero_epochs_give_empty_history():
    from lstmae.model import fit_model

    x = random_windows(6)
    assert fit_model(reference_model(), x, x, epochs=0, batch_size=4, validation_split=0.0, seed=0) == {}


def test_zero_batch_size_rejected():
    from lstmae import fused

    with pytest.raises(ValueError, match=r"batch_size must be a positive number of windows. Received: batch_size=0"):
        fused.fit(reference_model(), random_windows(6), epochs=1, batch_size=0, validation_split=0.0, seed=0)


def test_callback_log_keys_in_history():
    """A key that a callback adds to the epoch logs, as learning-rate schedules do, lands in the history."""
    import keras

    from lstmae import fused

    class AddRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["learning_rate"] = 0.5 * (epoch + 1)

    history = fused.fit(reference_model(), random_windows(6), epochs=2, batch_size=4, validation_split=0.0, seed=0,
                        callbacks=[AddRate()])
    assert history["learning_rate"] == [0.5, 1.0]
    assert len(history["loss"]) == 2


def hook_recorder(stop_evaluating_at: int | None = None):
    """Return a Keras callback that records each epoch and test hook call with its index and its logs' loss."""
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def _record(self, hook, index=None, logs=None):
            self.calls.append((hook, index, None if not logs or "loss" not in logs else float(logs["loss"])))

        def on_epoch_begin(self, epoch, logs=None):
            self._record("epoch_begin", epoch)

        def on_epoch_end(self, epoch, logs=None):
            self._record("epoch_end", epoch)

        def on_test_begin(self, logs=None):
            self._record("test_begin")

        def on_test_batch_begin(self, batch, logs=None):
            self._record("test_batch_begin", batch)

        def on_test_batch_end(self, batch, logs=None):
            self._record("test_batch_end", batch, logs)
            if batch == stop_evaluating_at:
                self.model.stop_evaluating = True

        def on_test_end(self, logs=None):
            self._record("test_end", None, logs)

    return Recorder()


def test_validation_hooks_follow_fit():
    """Validation calls the ``on_test_*`` hooks in ``fit``'s order, with its batches and running mean losses.

    12 windows with a split of 0.25 hold out 3, so batches of 2 give two
    test batches per epoch. A learning rate of zero keeps the weights equal
    in both engines.
    """
    import keras

    from lstmae import fused

    x = random_windows(12)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), optimizer=keras.optimizers.SGD(0.0))
    keras_model = twin(model)
    mine, theirs = hook_recorder(), hook_recorder()
    history = fused.fit(model, x, epochs=2, batch_size=2, validation_split=0.25, seed=0, callbacks=[mine])
    keras_model.fit(x, x, epochs=2, batch_size=2, validation_split=0.25, verbose=0, callbacks=[theirs])

    assert [call[:2] for call in mine.calls] == [call[:2] for call in theirs.calls]
    assert [call[:2] for call in mine.calls[1:6]] == [("test_begin", None), ("test_batch_begin", 0),
                                                       ("test_batch_end", 0), ("test_batch_begin", 1),
                                                       ("test_batch_end", 1)]
    my_losses = [call[2] for call in mine.calls if call[2] is not None]
    their_losses = [call[2] for call in theirs.calls if call[2] is not None]
    assert my_losses == pytest.approx(their_losses, rel=1e-5)
    held_out = x[9:]
    mean_error = float(np.mean((model.predict(held_out, verbose=0) - held_out) ** 2))
    assert history["val_loss"] == pytest.approx([mean_error, mean_error], rel=1e-5)
    assert mine.calls[6] == ("test_end", None, pytest.approx(mean_error, rel=1e-5))


def test_stop_evaluating_ends_validation():
    """A callback that sets ``stop_evaluating`` after test batch 0 makes ``val_loss`` the mean of that batch."""
    import keras

    from lstmae import fused

    x = random_windows(12)
    model = custom_autoencoder(TIMESTEPS, UNITS, ("relu", "tanh", "relu"), optimizer=keras.optimizers.SGD(0.0))
    recorder = hook_recorder(stop_evaluating_at=0)
    history = fused.fit(model, x, epochs=1, batch_size=2, validation_split=0.25, seed=0, callbacks=[recorder])

    first_batch = x[9:11]
    first_error = float(np.mean((model.predict(first_batch, verbose=0) - first_batch) ** 2))
    test_hooks = [call[0] for call in recorder.calls if call[0].startswith("test")]
    assert test_hooks == ["test_begin", "test_batch_begin", "test_batch_end", "test_end"]
    assert history["val_loss"] == pytest.approx([first_error], rel=1e-5)
