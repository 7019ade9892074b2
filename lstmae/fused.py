"""Fused TensorFlow graphs of the reference autoencoder, for inference and for training.

Keras's LSTM on a CPU multiplies the input and the previous state by the
weights at every step inside a ``tf.while_loop``, and its gradient runs the
loop backwards with many small operations per step. At the reference sizes
(batch 32, 100 units) each of those operations takes a few microseconds of
arithmetic, so the fixed cost per operation dominates. This module builds
the same network from fewer and larger operations:

- the input product of every timestep of a layer is one matrix product,
  and the decoder's input, the same encoding at every step, is multiplied
  once;
- the recurrence is unrolled in time-major order, with one
  ``(batch, units) x (units, 4 units)`` product per step;
- its gradient is written by hand (:func:`_recurrence`): per step, one
  product and a few element-wise operations, and the gradients of the
  recurrent kernels are one matrix product over all steps.

The arithmetic is the same as Keras's up to float32 rounding;
``tests/test_fused.py`` checks outputs, gradients and whole training epochs
against Keras. Everything here applies only to the architecture of
:func:`lstmae.model.build_autoencoder`; :func:`reference_layers` returns
None for any other model, which then runs through Keras.

TensorFlow is imported inside the functions, never at module import.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The fused graph is unrolled, so it grows with the window. Longer windows use Keras's loop.
FUSED_MAX_TIMESTEPS = 256
_ACTIVATIONS = ("relu", "tanh", "sigmoid")
_MSE_NAMES = ("mse", "mean_squared_error", "MeanSquaredError")


def reference_layers(model, window_shape: tuple[int, int]) -> dict | None:
    """Return the layers of a reference autoencoder by role, or None for any other model.

    The reference autoencoder is :func:`lstmae.model.build_autoencoder`'s
    architecture: its layer names and types, plain LSTM cells with bias,
    sigmoid gates, relu, tanh or sigmoid activations, no dropout, and windows
    of ``window_shape = (timesteps, features)`` with at most
    ``FUSED_MAX_TIMESTEPS`` steps.

    Returns:
        ``{"encoder", "forward", "backward", "decoder": LSTM cell,
        "output": Dense}`` or None.
    """
    from keras import layers

    timesteps, features = window_shape
    found = {layer.name: layer for layer in getattr(model, "layers", [])}
    try:
        encoder, encoding, repeat = found["encoder"], found["encoding"], found["repeat"]
        decoder, output = found["decoder"], found["reconstruction"]
    except KeyError:
        return None
    recurrent = [encoder, getattr(encoding, "forward_layer", None), getattr(encoding, "backward_layer", None), decoder]
    if (
        not isinstance(encoding, layers.Bidirectional)
        or not isinstance(repeat, layers.RepeatVector)
        or not isinstance(output, layers.TimeDistributed)
        or not isinstance(getattr(output, "layer", None), layers.Dense)
        or not all(isinstance(layer, layers.LSTM) for layer in recurrent)
        or timesteps > FUSED_MAX_TIMESTEPS
        or repeat.n != timesteps
        or len(model.layers) != 6
        or encoding.merge_mode != "concat"
    ):
        return None
    expected = [(recurrent[0], True, False), (recurrent[1], False, False), (recurrent[2], False, True),
                (recurrent[3], True, False)]
    for layer, sequences, backwards in expected:
        cell = layer.cell
        if (
            layer.return_sequences != sequences
            or layer.go_backwards != backwards
            or layer.stateful
            or not cell.use_bias
            or cell.dropout
            or cell.recurrent_dropout
            or getattr(cell.recurrent_activation, "__name__", "") != "sigmoid"
            or getattr(cell.activation, "__name__", "") not in _ACTIVATIONS
        ):
            return None
    if encoder.cell.kernel.shape[0] != features or output.layer.activation.__name__ != "linear":
        return None
    return {"encoder": encoder.cell, "forward": recurrent[1].cell, "backward": recurrent[2].cell,
            "decoder": decoder.cell, "output": output.layer}


def _activation(name: str):
    """Return ``(activation, derivative)``; the derivative takes the input ``z`` and the output ``a``."""
    import tensorflow as tf

    if name == "relu":
        return tf.nn.relu, lambda z, a: tf.cast(z > 0, z.dtype)
    if name == "tanh":
        return tf.tanh, lambda z, a: 1.0 - a * a
    return tf.sigmoid, lambda z, a: a * (1.0 - a)


def _recurrence(activation: str, timesteps: int, sequences: bool, repeated: bool):
    """Return an LSTM recurrence over precomputed input products, with a hand-written gradient.

    The returned function takes ``projected``, the input products with bias,
    and ``kernel``, the ``(units, 4 units)`` recurrent kernel. ``projected``
    is ``(timesteps, batch, 4 units)`` in time-major order, or, when
    ``repeated``, one ``(batch, 4 units)`` product used at every step. The
    gates are in Keras's order (input, forget, cell, output); the state
    starts at zero. It returns every state as ``(timesteps, batch, units)``
    when ``sequences``, else the last state ``(batch, units)``.

    The gradient runs the steps backwards. Per step it computes the gate
    gradients ``dz`` and ``dz @ kernel.T``. The kernel gradient is one
    product of the stacked previous states with the stacked ``dz``.
    """
    import tensorflow as tf

    act, derivative = _activation(activation)

    @tf.custom_gradient
    def recurrence(projected, kernel):
        units = kernel.shape[0]
        steps = [projected] * timesteps if repeated else tf.unstack(projected, num=timesteps, axis=0)
        state = tf.zeros_like(steps[0][:, :units])
        carry = state
        states, carries, saved = [state], [carry], []
        for step in steps:
            z = step + tf.matmul(state, kernel)
            zi, zf, zg, zo = tf.split(z, 4, axis=1)
            i, f, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.sigmoid(zo)
            g = act(zg)
            carry = f * carry + i * g
            activated = act(carry)
            state = o * activated
            saved.append((i, f, g, o, zg, activated))
            states.append(state)
            carries.append(carry)
        result = tf.stack(states[1:], axis=0) if sequences else state

        def gradient(upstream):
            transposed = tf.transpose(kernel)
            upstream_steps = tf.unstack(upstream, num=timesteps, axis=0) if sequences else None
            d_state = tf.zeros_like(states[0])
            d_carry = d_state
            d_gates = [None] * timesteps
            for t in range(timesteps - 1, -1, -1):
                i, f, g, o, zg, activated = saved[t]
                if sequences:
                    d_state = d_state + upstream_steps[t]
                elif t == timesteps - 1:
                    d_state = d_state + upstream
                d_carry = d_carry + d_state * o * derivative(carries[t + 1], activated)
                d_gates[t] = tf.concat(
                    [d_carry * g * i * (1.0 - i), d_carry * carries[t] * f * (1.0 - f),
                     d_carry * i * derivative(zg, g), d_state * activated * o * (1.0 - o)],
                    axis=1,
                )
                d_carry = d_carry * f
                d_state = tf.matmul(d_gates[t], transposed)
            stacked = tf.stack(d_gates, axis=0)
            d_kernel = tf.matmul(tf.reshape(tf.stack(states[:-1], axis=0), (-1, units)),
                                 tf.reshape(stacked, (-1, 4 * units)), transpose_a=True)
            d_projected = tf.reduce_sum(stacked, axis=0) if repeated else stacked
            return d_projected, d_kernel

        return result, gradient

    return recurrence


def autoencoder_function(model, window_shape: tuple[int, int]):
    """Return the fused forward pass of a reference autoencoder, or None for any other model.

    The function maps ``(batch, timesteps, features)`` float32 windows to
    their reconstructions, reading the model's current weights. TensorFlow
    can differentiate it with respect to ``model.trainable_variables``, so
    it serves both :func:`lstmae.model.predict` and :func:`fit`.
    """
    import tensorflow as tf

    cells = reference_layers(model, window_shape)
    if cells is None:
        return None
    timesteps = window_shape[0]

    def recurrence(cell, sequences, repeated=False):
        return _recurrence(cell.activation.__name__, timesteps, sequences, repeated)

    run_encoder = recurrence(cells["encoder"], True)
    run_forward = recurrence(cells["forward"], False)
    run_backward = recurrence(cells["backward"], False)
    run_decoder = recurrence(cells["decoder"], True, repeated=True)

    def over_time(time_major, cell):
        """Input products of every timestep of ``(timesteps, batch, inputs)`` in one matrix product."""
        product = tf.matmul(tf.reshape(time_major, (-1, time_major.shape[-1])), cell.kernel) + cell.bias
        return tf.reshape(product, (timesteps, -1, 4 * cell.units))

    def forward(batch):
        def recurrent_kernel(name):
            return tf.convert_to_tensor(cells[name].recurrent_kernel)

        hidden = run_encoder(over_time(tf.transpose(batch, (1, 0, 2)), cells["encoder"]), recurrent_kernel("encoder"))
        ahead = run_forward(over_time(hidden, cells["forward"]), recurrent_kernel("forward"))
        behind = run_backward(tf.reverse(over_time(hidden, cells["backward"]), axis=[0]), recurrent_kernel("backward"))
        encoded = tf.concat([ahead, behind], axis=1)
        decoder = cells["decoder"]
        decoded = run_decoder(tf.matmul(encoded, decoder.kernel) + decoder.bias, recurrent_kernel("decoder"))
        dense = cells["output"]
        values = tf.matmul(tf.reshape(decoded, (-1, decoder.units)), dense.kernel) + dense.bias
        return tf.transpose(tf.reshape(values, (timesteps, -1, dense.units)), (1, 0, 2))

    return forward


def trainable(model, x: np.ndarray, y: Any) -> bool:
    """Return whether :func:`fit` can train ``model`` on ``x`` to reconstruct ``y``.

    True for a compiled reference autoencoder (see :func:`reference_layers`)
    with a mean squared error loss, no weight penalties, and ``y`` the same
    array as ``x``.
    """
    return (
        y is x
        and getattr(x, "ndim", 0) == 3
        and getattr(model, "optimizer", None) is not None
        and _loss_name(getattr(model, "loss", None)) in _MSE_NAMES
        and not model.losses
        and reference_layers(model, x.shape[1:]) is not None
    )


def _loss_name(loss) -> str | None:
    if isinstance(loss, str):
        return loss
    return type(loss).__name__ if loss is not None else None


def fit(model, x: np.ndarray, *, epochs: int, batch_size: int, validation_split: float, seed: int,
        callbacks: list | None = None) -> dict[str, list[float]]:
    """Train a reference autoencoder to reconstruct ``x``, as ``model.fit(x, x, ...)`` does, on the fused graph.

    It keeps ``fit``'s semantics: the last ``validation_split`` of the
    windows (before shuffling, rounded as Keras does) are held out, the training windows are
    shuffled every epoch, each batch's loss is the mean squared error over
    its windows, and the model's optimizer applies the gradients. The epoch
    loss is the batch losses' mean weighted by batch size. Keras callbacks
    get the same calls as under ``fit``, and training stops after a batch
    once a callback sets ``model.stop_training``.

    Args:
        model: a compiled model for which :func:`trainable` is true.
        x: ``(windows, timesteps, features)`` float32 scaled windows.
        epochs, batch_size, validation_split: as for ``model.fit``.
        seed: seed of the shuffling order.
        callbacks: Keras callbacks.

    Returns:
        ``{"loss": [...], "val_loss": [...]}`` (``val_loss`` only with a
        validation split), one value per epoch run.
    """
    import keras
    import tensorflow as tf

    x = np.ascontiguousarray(x, dtype=np.float32)
    split_at = int(math.floor(len(x) * (1.0 - validation_split))) if validation_split > 0 else len(x)
    if not 0 < split_at <= len(x) or (validation_split > 0 and split_at == len(x)):
        raise ValueError(
            f"validation_split={validation_split} of {len(x)} windows leaves {split_at} for training and "
            f"{len(x) - split_at} for validation. Train on more windows, or change validation_split."
        )
    train, held_out = x[:split_at], x[split_at:]
    forward = autoencoder_function(model, x.shape[1:])
    variables = model.trainable_variables
    optimizer = model.optimizer
    optimizer.build(variables)
    signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]

    @tf.function(input_signature=signature, autograph=False)
    def train_step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(forward(batch) - batch))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function(input_signature=signature, autograph=False)
    def squared_error(batch):
        return tf.reduce_sum(tf.square(forward(batch) - batch))

    steps = math.ceil(len(train) / batch_size)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)
    history: dict[str, list[float]] = {"loss": []}
    if len(held_out):
        history["val_loss"] = []
    generator = np.random.default_rng(seed)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        order = generator.permutation(len(train))
        total = 0.0
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            batch = train[order[step * batch_size : (step + 1) * batch_size]]
            loss = float(train_step(batch))
            total += loss * len(batch)
            callback_list.on_train_batch_end(step, {"loss": loss})
            if model.stop_training:
                break
        logs = {"loss": total / len(train) if not model.stop_training else loss}
        if len(held_out):
            error = sum(float(squared_error(held_out[start : start + 1024])) for start in range(0, len(held_out), 1024))
            logs["val_loss"] = error / held_out.size
        for key, value in logs.items():
            history[key].append(value)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history
