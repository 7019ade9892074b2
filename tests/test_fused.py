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
    copy.compile(optimizer=keras.optimizers.Adam(learning_rate=float(model.optimizer.learning_rate.numpy())), loss="mse")
    return copy


def random_windows(count: int, seed: int = 5, timesteps: int = TIMESTEPS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, timesteps, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("timesteps", [TIMESTEPS, 60])
def test_gradients_equal_keras(timesteps):
    import tensorflow as tf

    from lstmae.fused import autoencoder_function

    model = reference_model(timesteps=timesteps)
    batch = tf.constant(random_windows(7, timesteps=timesteps))
    forward = autoencoder_function(model, (timesteps, FEATURES))
    with tf.GradientTape(persistent=True) as tape:
        fused_loss = tf.reduce_mean(tf.square(forward(batch) - batch))
        keras_loss = tf.reduce_mean(tf.square(model(batch, training=True) - batch))
    assert abs(float(fused_loss) - float(keras_loss)) <= 1e-6 * float(keras_loss)
    fused_gradients = tape.gradient(fused_loss, model.trainable_variables)
    keras_gradients = tape.gradient(keras_loss, model.trainable_variables)
    for variable, mine, theirs in zip(model.trainable_variables, fused_gradients, keras_gradients):
        # float32 rounding over 60 steps reaches about 1e-5 of the largest gradient.
        scale = max(float(tf.reduce_max(tf.abs(theirs))), 1e-3)
        assert float(tf.reduce_max(tf.abs(mine - theirs))) <= 1e-4 * scale, variable.path
        # Every weight takes part: a gradient of zero everywhere would hide a missing path.
        assert float(tf.reduce_max(tf.abs(theirs))) > 0, variable.path


def test_epochs_equal_train_on_batch():
    """Two epochs of fused.fit equal Keras's train_on_batch on the same batches in the same order."""
    from lstmae import fused

    x = random_windows(23)
    model = reference_model()
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


def test_validation_split_leaving_nothing_rejected():
    from lstmae import fused

    with pytest.raises(ValueError, match=r"validation_split=0.5 of 1 windows leaves 0 for training"):
        fused.fit(reference_model(), random_windows(1), epochs=1, batch_size=4, validation_split=0.5, seed=0)
