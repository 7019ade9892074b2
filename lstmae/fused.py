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
- the backward pass is written out (:class:`_Recurrence`,
  :meth:`_Autoencoder.loss_and_gradients`), with no automatic
  differentiation: per step, one product and a few element-wise
  operations, and the gradient of each recurrent kernel is one matrix
  product over all steps.

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
import weakref
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
    sigmoid gates, relu, tanh or sigmoid activations, no dropout, float32
    weights and computation, and windows
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
    weights = [weight for layer in recurrent for weight in layer.cell.weights] + list(output.layer.weights)
    if model.dtype_policy.compute_dtype != "float32" or any(weight.dtype != "float32" for weight in weights):
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


class _Recurrence:
    """One LSTM layer's recurrence over precomputed input products, with its backward pass written out.

    ``projected`` is the input products with bias, ``(timesteps, batch, 4
    units)`` in time-major order, or, when ``repeated``, one ``(batch, 4
    units)`` product used at every step. ``kernel`` is the ``(units, 4
    units)`` recurrent kernel. The gates are in Keras's order (input,
    forget, cell, output), and the state starts at zero. The output is every
    state, ``(timesteps, batch, units)``, when ``sequences``, else the last
    state ``(batch, units)``.

    The backward pass runs the steps in reverse. Per step it computes the
    gate gradients ``dz`` and ``dz @ kernel.T``. The kernel gradient is one
    product of the stacked previous states with the stacked ``dz``, in place
    of one small product per step and their sum.
    """

    def __init__(self, activation: str, timesteps: int, sequences: bool, repeated: bool):
        self.activation, self.derivative = _activation(activation)
        self.timesteps, self.sequences, self.repeated = timesteps, sequences, repeated

    def forward(self, projected, kernel, keep: bool = False):
        """Return the output, and with ``keep`` also the tensors that :meth:`backward` needs (else None)."""
        import tensorflow as tf

        units = kernel.shape[0]
        steps = [projected] * self.timesteps if self.repeated else tf.unstack(projected, num=self.timesteps, axis=0)
        state = tf.zeros_like(steps[0][:, :units])
        carry = state
        states, carries, gates = [state], [carry], []
        for step in steps:
            z = step + tf.matmul(state, kernel)
            zi, zf, zg, zo = tf.split(z, 4, axis=1)
            i, f, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.sigmoid(zo)
            g = self.activation(zg)
            carry = f * carry + i * g
            activated = self.activation(carry)
            state = o * activated
            states.append(state)
            if keep:
                gates.append((i, f, g, o, zg, activated))
                carries.append(carry)
        output = tf.stack(states[1:], axis=0) if self.sequences else state
        return output, ((states, carries, gates) if keep else None)

    def backward(self, saved, kernel, upstream):
        """Return the gradients ``(d_projected, d_kernel)`` given the output's gradient ``upstream``."""
        import tensorflow as tf

        states, carries, gates = saved
        units = kernel.shape[0]
        transposed = tf.transpose(kernel)
        upstream_steps = tf.unstack(upstream, num=self.timesteps, axis=0) if self.sequences else None
        d_state = upstream if not self.sequences else tf.zeros_like(states[0])
        d_carry = tf.zeros_like(states[0])
        d_gates = [None] * self.timesteps
        for t in range(self.timesteps - 1, -1, -1):
            i, f, g, o, zg, activated = gates[t]
            if self.sequences:
                d_state = d_state + upstream_steps[t]
            d_carry = d_carry + d_state * o * self.derivative(carries[t + 1], activated)
            d_gates[t] = tf.concat(
                [d_carry * g * i * (1.0 - i), d_carry * carries[t] * f * (1.0 - f),
                 d_carry * i * self.derivative(zg, g), d_state * activated * o * (1.0 - o)],
                axis=1,
            )
            d_carry = d_carry * f
            d_state = tf.matmul(d_gates[t], transposed)
        stacked = tf.stack(d_gates, axis=0)
        d_kernel = tf.matmul(tf.reshape(tf.stack(states[:-1], axis=0), (-1, units)),
                             tf.reshape(stacked, (-1, 4 * units)), transpose_a=True)
        d_projected = tf.reduce_sum(stacked, axis=0) if self.repeated else stacked
        return d_projected, d_kernel


class _Autoencoder:
    """The fused forward and backward passes of one reference autoencoder and window shape."""

    def __init__(self, cells: dict, timesteps: int):
        self.cells, self.timesteps = cells, timesteps

        def recurrence(cell, sequences, repeated=False):
            return _Recurrence(cell.activation.__name__, timesteps, sequences, repeated)

        self.recurrences = {"encoder": recurrence(cells["encoder"], True),
                            "forward": recurrence(cells["forward"], False),
                            "backward": recurrence(cells["backward"], False),
                            "decoder": recurrence(cells["decoder"], True, repeated=True)}

    def _over_time(self, time_major, cell):
        """Input products of every timestep of ``(timesteps, batch, inputs)`` in one matrix product."""
        import tensorflow as tf

        product = tf.matmul(tf.reshape(time_major, (-1, time_major.shape[-1])), cell.kernel) + cell.bias
        return tf.reshape(product, (self.timesteps, -1, 4 * cell.units))

    def _recur(self, name, projected, keep, saved):
        import tensorflow as tf

        output, tensors = self.recurrences[name].forward(projected, tf.convert_to_tensor(self.cells[name].recurrent_kernel),
                                                         keep)
        saved[name] = tensors
        return output

    def forward(self, batch, keep: bool = False):
        """Return the reconstruction ``(batch, timesteps, features)`` and, with ``keep``, the tensors of the backward pass."""
        import tensorflow as tf

        cells, saved = self.cells, {}
        inputs = tf.transpose(batch, (1, 0, 2))
        hidden = self._recur("encoder", self._over_time(inputs, cells["encoder"]), keep, saved)
        ahead = self._recur("forward", self._over_time(hidden, cells["forward"]), keep, saved)
        behind = self._recur("backward", tf.reverse(self._over_time(hidden, cells["backward"]), axis=[0]), keep, saved)
        encoded = tf.concat([ahead, behind], axis=1)
        decoder = cells["decoder"]
        decoded = self._recur("decoder", tf.matmul(encoded, decoder.kernel) + decoder.bias, keep, saved)
        dense = cells["output"]
        values = tf.matmul(tf.reshape(decoded, (-1, decoder.units)), dense.kernel)
        if dense.use_bias:
            values = values + dense.bias
        output = tf.transpose(tf.reshape(values, (self.timesteps, -1, dense.units)), (1, 0, 2))
        saved.update(inputs=inputs, hidden=hidden, encoded=encoded, decoded=decoded)
        return output, (saved if keep else None)

    def loss_and_gradients(self, batch):
        """Return the mean squared reconstruction error of ``batch`` and its gradient per weight.

        The gradients are a dict keyed by ``id`` of each Keras variable:
        the kernel, recurrent kernel and bias of the four LSTM cells, and the
        output layer's kernel and bias.
        """
        import tensorflow as tf

        cells = self.cells
        output, saved = self.forward(batch, keep=True)
        difference = output - batch
        loss = tf.reduce_mean(tf.square(difference))
        gradients = {}

        def kernel_and_bias(cell, inputs, d_product):
            """Add the gradients of ``inputs @ cell.kernel + cell.bias``; return the gradient of ``inputs``."""
            flat_inputs = tf.reshape(inputs, (-1, inputs.shape[-1]))
            flat_product = tf.reshape(d_product, (-1, d_product.shape[-1]))
            gradients[id(cell.kernel)] = tf.matmul(flat_inputs, flat_product, transpose_a=True)
            if getattr(cell, "use_bias", True):
                gradients[id(cell.bias)] = tf.reduce_sum(flat_product, axis=0)
            return tf.reshape(tf.matmul(flat_product, cell.kernel, transpose_b=True), tf.shape(inputs))

        def recurrence(name, upstream):
            cell = cells[name]
            d_projected, gradients[id(cell.recurrent_kernel)] = self.recurrences[name].backward(
                saved[name], tf.convert_to_tensor(cell.recurrent_kernel), upstream)
            return d_projected

        # Output layer, in time-major order like the decoder's states.
        d_values = tf.transpose(difference * (2.0 / tf.cast(tf.size(difference), difference.dtype)), (1, 0, 2))
        d_decoded = kernel_and_bias(cells["output"], saved["decoded"], d_values)
        # Decoder: its input product is the same at every step.
        d_encoded = kernel_and_bias(cells["decoder"], saved["encoded"], recurrence("decoder", d_decoded))
        units = cells["forward"].units
        d_ahead, d_behind = d_encoded[:, :units], d_encoded[:, units:]
        hidden = saved["hidden"]
        d_hidden = kernel_and_bias(cells["forward"], hidden, recurrence("forward", d_ahead))
        d_hidden += kernel_and_bias(cells["backward"], hidden, tf.reverse(recurrence("backward", d_behind), axis=[0]))
        # No output needs the gradient of the input windows, so TensorFlow prunes its product from the traced step.
        kernel_and_bias(cells["encoder"], saved["inputs"], recurrence("encoder", d_hidden))
        return loss, gradients


def autoencoder_function(model, window_shape: tuple[int, int]):
    """Return the fused forward pass of a reference autoencoder, or None for any other model.

    The function maps ``(batch, timesteps, features)`` float32 windows to
    their reconstructions, reading the model's current weights. It keeps no
    tensors for a backward pass: :func:`gradient_function` trains.
    """
    cells = reference_layers(model, window_shape)
    if cells is None:
        return None
    graph = _Autoencoder(cells, window_shape[0])
    return lambda batch: graph.forward(batch)[0]


def gradient_function(model, window_shape: tuple[int, int]):
    """Return a function of a batch that gives its loss and the gradients of ``model.trainable_variables``.

    The loss is the mean squared reconstruction error of the batch, and the
    gradients are a list in the order of ``model.trainable_variables``.
    Returns None for any model but a reference autoencoder.
    """
    cells = reference_layers(model, window_shape)
    if cells is None:
        return None
    graph = _Autoencoder(cells, window_shape[0])
    variables = model.trainable_variables

    def loss_and_gradients(batch):
        loss, gradients = graph.loss_and_gradients(batch)
        return loss, [gradients[id(variable)] for variable in variables]

    return loss_and_gradients


def trainable(model, x: np.ndarray, y: Any) -> bool:
    """Return whether :func:`fit` trains ``model`` on ``x`` exactly as ``model.fit(x, y)`` would.

    True for a reference autoencoder (see :func:`reference_layers`) with
    ``y`` the same array as ``x``, compiled as
    :func:`lstmae.model.build_autoencoder` compiles it: a mean squared
    error loss averaged over the batch, no loss weights, no metrics, no
    regularizers, and an optimizer without loss scaling, moving averages of
    the weights or gradient accumulation. Any other setting trains with
    ``model.fit``.
    """
    if y is not x or getattr(x, "ndim", 0) != 3 or not getattr(model, "compiled", False):
        return False
    optimizer = getattr(model, "optimizer", None)
    config = getattr(getattr(model, "_compile_config", None), "config", {})
    if (
        optimizer is None
        or type(optimizer).__name__ == "LossScaleOptimizer"
        or getattr(optimizer, "loss_scale_factor", None) is not None
        or getattr(optimizer, "use_ema", False)
        or getattr(optimizer, "gradient_accumulation_steps", None)
        or not _is_mean_squared_error(getattr(model, "loss", None))
        or any(config.get(key) is not None for key in ("loss_weights", "metrics", "weighted_metrics"))
        or getattr(model, "_compile_metrics", None) is not None
        or model.losses
    ):
        return False
    for layer in model._flatten_layers():
        if getattr(layer, "activity_regularizer", None) is not None or any(
            getattr(layer, name, None) is not None
            for name in ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer")
        ):
            return False
    return reference_layers(model, x.shape[1:]) is not None


def _is_mean_squared_error(loss) -> bool:
    if isinstance(loss, str):
        return loss in _MSE_NAMES
    return type(loss).__name__ == "MeanSquaredError" and getattr(loss, "reduction", None) == "sum_over_batch_size"


# Traced training steps per model, so that fitting the same model again does not trace again (weak keys).
_TRAIN_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _train_step(model, window_shape: tuple[int, int]):
    """Return the cached ``tf.function`` that trains ``model`` on one batch and returns the batch's loss."""
    import tensorflow as tf

    cached = _TRAIN_STEPS.get(model)
    if cached is not None and cached[0] is model.optimizer and cached[1] == window_shape:
        return cached[2]
    loss_and_gradients = gradient_function(model, window_shape)
    optimizer, variables = model.optimizer, model.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)

    @tf.function(input_signature=[tf.TensorSpec((None, *window_shape), tf.float32)], autograph=False)
    def step(batch):
        loss, gradients = loss_and_gradients(batch)
        optimizer.apply(gradients, variables)
        return loss

    _TRAIN_STEPS[model] = (optimizer, window_shape, step)
    return step


def _evaluate(squared_error, held_out: np.ndarray, batch_size: int, model, callback_list) -> float:
    """Return the mean squared error over ``held_out``, with the ``on_test_*`` calls of Keras's ``evaluate``.

    Test batch logs carry the running mean so far, as under ``evaluate``.
    """
    model.stop_evaluating = False
    callback_list.on_test_begin()
    error, elements = 0.0, 0
    for step, start in enumerate(range(0, len(held_out), batch_size)):
        callback_list.on_test_batch_begin(step)
        batch = held_out[start : start + batch_size]
        error += float(squared_error(batch))
        elements += batch.size
        mean = error / elements
        callback_list.on_test_batch_end(step, {"loss": mean})
        if model.stop_evaluating:
            break
    callback_list.on_test_end({"loss": mean})
    return mean


def fit(model, x: np.ndarray, *, epochs: int, batch_size: int, validation_split: float, seed: int,
        callbacks: list | None = None) -> dict[str, list[float]]:
    """Train a reference autoencoder to reconstruct ``x``, as ``model.fit(x, x, ...)`` does, on the fused graph.

    It keeps ``fit``'s semantics. The last ``validation_split`` of the
    windows (before shuffling, rounded down as Keras does) are held out.
    The training windows are shuffled every epoch. Each batch's loss is the
    mean squared error over its windows, and the model's optimizer applies
    the gradients. Batch and epoch logs carry the mean of the epoch's batch
    losses so far, weighted by batch size, and ``val_loss``. The held-out
    windows are evaluated in batches of ``batch_size``, as ``fit`` does by
    default. Callbacks get ``fit``'s training and test calls, may change the
    logs (as learning-rate schedules do), may stop training after any batch
    with ``model.stop_training`` or a validation pass with
    ``model.stop_evaluating``, and may set the first epoch as
    ``BackupAndRestore`` does.

    Args:
        model: a compiled model for which :func:`trainable` is true.
        x: ``(windows, timesteps, features)`` scaled windows.
        epochs, batch_size, validation_split: as for ``model.fit``.
        seed: seed of the shuffling order.
        callbacks: Keras callbacks.

    Returns:
        The history, ``{"loss": [...], "val_loss": [...], ...}``: one value
        per epoch run for every key of the epoch logs. ``val_loss`` is
        present only with a validation split, and the history is ``{}``
        when no epoch ran.

    Raises:
        ValueError: ``batch_size`` below 1, or a split that leaves no
            training or no validation windows.
    """
    import keras
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of windows. Received: batch_size={batch_size}.")
    x = np.ascontiguousarray(x, dtype=np.float32)
    split_at = int(math.floor(len(x) * (1.0 - validation_split))) if validation_split > 0 else len(x)
    if not 0 < split_at <= len(x) or (validation_split > 0 and split_at == len(x)):
        raise ValueError(
            f"validation_split={validation_split} of {len(x)} windows leaves {split_at} for training and "
            f"{len(x) - split_at} for validation. Train on more windows, or change validation_split."
        )
    train, held_out = x[:split_at], x[split_at:]
    train_step = _train_step(model, x.shape[1:])
    forward = autoencoder_function(model, x.shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)], autograph=False)
    def squared_error(batch):
        return tf.reduce_sum(tf.square(forward(batch) - batch))

    steps = math.ceil(len(train) / batch_size)
    # As under fit, a History callback runs last, so it records what the other callbacks add to the logs.
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, model=model, epochs=epochs, steps=steps,
                                                 verbose=0)
    generator = np.random.default_rng(seed)
    model.stop_training = False
    model._initial_epoch = None
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(model._initial_epoch or 0, epochs):
        callback_list.on_epoch_begin(epoch)
        order = generator.permutation(len(train))
        total, seen = 0.0, 0
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            batch = train[order[step * batch_size : (step + 1) * batch_size]]
            total += float(train_step(batch)) * len(batch)
            seen += len(batch)
            logs = {"loss": total / seen}
            callback_list.on_train_batch_end(step, dict(logs))
            if model.stop_training:
                break
        if len(held_out):
            logs["val_loss"] = _evaluate(squared_error, held_out, batch_size, model, callback_list)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_variables)
    callback_list.on_train_end(logs)
    return {key: [float(value) for value in values] for key, values in model.history.history.items()}
