"""The Sequencer layers as plain TensorFlow functions over their weights: the
graph :mod:`keras_sequencer.export` writes to ONNX, SavedModel and LiteRT
from any Keras backend.

Only ops every target runtime runs natively are used: ``Conv2D``,
``MatMul``/``BatchMatMul``, element-wise math, ``Softmax``, reductions,
reshapes and transposes. At a fixed image size the recurrences run as a
Python loop over a static number of time steps (no ``while`` loop, no
reverse scan, no cuDNN kernel); with a free image size (``None`` height and
width) they run as one ``tf.scan`` (ONNX ``Loop``), after an ``Assert`` on the
minimum size (:func:`input_check`). A backward direction
reads its inputs from the last step to the first. GELU is the exact form
with ``erf``.

Weights are taken from the Keras layers as numpy arrays and become
``tf.Variable`` s tracked by a :class:`WeightStore` (a ``tf.Module``), so a
SavedModel holds them as variables and the converters fold them.
All tensors are channels-last ``(B, H, W, C)``.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_sequencer.kernels.generic import block_forward
from keras_sequencer.rnn import rnn_cells


def to_numpy(value):
    """A Keras variable or tensor of any backend as a float32 numpy array."""
    return np.asarray(keras.ops.convert_to_numpy(value), dtype="float32")


class WeightStore(tf.Module):
    """The ``tf.Variable`` s of an exported graph, in creation order."""

    def __init__(self):
        super().__init__(name="sequencer_weights")
        self.weights = []

    def add(self, array):
        """A float32 ``tf.Variable`` holding ``array`` (numpy or a Keras variable)."""
        variable = tf.Variable(to_numpy(array), trainable=False)
        self.weights.append(variable)
        return variable


def dense(store, kernel, bias):
    """``x @ kernel + bias`` over the last axis of ``(..., C)``."""
    kernel = store.add(kernel)
    bias = None if bias is None else store.add(bias)

    def run(x):
        shape = tf.shape(x)
        flat = tf.reshape(x, (-1, kernel.shape[0]))
        y = tf.matmul(flat, kernel)
        if bias is not None:
            y = y + bias
        return tf.reshape(y, tf.concat([shape[:-1], [kernel.shape[1]]], axis=0))

    return run


def dense_layer(store, layer):
    """A ``keras.layers.Dense`` without its activation, float or
    int8-quantized (``layer.quantize("int8")``): then, as Keras computes
    it, the inputs are quantized per row to ``[-127, 127]`` by their
    absolute maximum, multiplied by the int8 kernel (held as float, exact
    integers) and divided by both scales."""
    mode = getattr(layer, "quantization_mode", None)
    bias = layer.bias if layer.use_bias else None
    if mode is None:
        return dense(store, layer.kernel, bias)
    if mode != "int8":
        raise ValueError(f"export supports float and int8 Dense layers; {layer.name!r} is {mode}.")
    kernel = store.add(layer.kernel)
    kernel_scale = store.add(layer.kernel_scale)
    bias = None if bias is None else store.add(bias)
    quantizer = layer.inputs_quantizer
    low, high = quantizer.value_range if quantizer is not None else (None, None)
    epsilon = quantizer.epsilon if quantizer is not None else None

    def run(x):
        shape = tf.shape(x)
        flat = tf.reshape(x, (-1, kernel.shape[0]))
        scale = kernel_scale
        if quantizer is not None:
            row_scale = high / (tf.reduce_max(tf.abs(flat), axis=-1, keepdims=True) + epsilon)
            flat = tf.clip_by_value(tf.round(flat * row_scale), low, high)
            scale = scale * row_scale
        y = tf.matmul(flat, kernel) / scale
        if bias is not None:
            y = y + bias
        return tf.reshape(y, tf.concat([shape[:-1], [kernel.shape[1]]], axis=0))

    return run


def layer_norm(store, gamma, beta, epsilon):
    """LayerNormalization over the channels: ``(x - mean) / sqrt(var + eps) * gamma + beta``."""
    gamma = store.add(gamma)
    beta = store.add(beta)

    def run(x):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centred = x - mean
        variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
        return centred * tf.math.rsqrt(variance + epsilon) * gamma + beta

    return run


def patch_embedding(store, kernel, bias, patch):
    """Conv2D with kernel = stride = ``patch``, ``(B, H, W, C) -> (B, H/p, W/p, F)``."""
    kernel = store.add(kernel)
    bias = store.add(bias)

    def run(x):
        return tf.nn.conv2d(x, kernel, strides=patch, padding="VALID") + bias

    return run


def gelu(x):
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (``Erf``, which ONNX
    has; ``tf.nn.gelu`` writes ``Erfc``, which it has not)."""
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


# ---------------------------------------------------------------- recurrences --
def cell_step(kind, units):
    """One step of ``D`` stacked cells of ``kind`` (``"lstm"``, ``"gru"``,
    ``"rnn"``; Keras's gate orders and activations): ``(z, state, recurrent,
    recurrent_bias) -> state``; ``z`` ``(D, N, G*U)`` the input projection,
    ``state`` a tuple of ``(D, N, U)``, ``recurrent`` ``(D, U, G*U)``."""

    def lstm(z, state, recurrent, recurrent_bias):
        h, c = state
        z = z + tf.matmul(h, recurrent)
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    def gru(z, state, recurrent, recurrent_bias):  # reset_after=True (torch's GRU)
        (h,) = state
        r_all = tf.matmul(h, recurrent) + recurrent_bias
        x_z, x_r, x_h = tf.split(z, 3, axis=-1)
        h_z, h_r, h_h = tf.split(r_all, 3, axis=-1)
        update = tf.sigmoid(x_z + h_z)
        reset = tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_h + reset * h_h)
        return (update * h + (1.0 - update) * candidate,)

    def rnn(z, state, recurrent, recurrent_bias):
        (h,) = state
        return (tf.tanh(z + tf.matmul(h, recurrent)),)

    return {"lstm": lstm, "gru": gru, "rnn": rnn}[kind]


def cell_weights(cell):
    """``(kind, kernel (C, G*U), input bias (G*U,), recurrent (U, G*U),
    recurrent bias (G*U,) or None)`` of a Keras LSTM/GRU/SimpleRNN cell as numpy."""
    name = type(cell).__name__
    if getattr(cell, "quantization_mode", None) or "int" in str(cell.kernel.dtype):
        raise ValueError(f"export supports float recurrent cells; {cell.name!r} is quantized.")
    kernel = to_numpy(cell.kernel)
    recurrent = to_numpy(cell.recurrent_kernel)
    width = kernel.shape[1]
    bias = to_numpy(cell.bias) if cell.use_bias else np.zeros(width, "float32")
    if name == "LSTMCell":
        return "lstm", kernel, bias, recurrent, None
    if name == "GRUCell":
        if not cell.reset_after:
            raise ValueError("export supports GRU cells with reset_after=True only.")
        if bias.ndim == 2:
            return "gru", kernel, bias[0], recurrent, bias[1]
        return "gru", kernel, bias, recurrent, np.zeros(width, "float32")
    if name == "SimpleRNNCell":
        return "rnn", kernel, bias, recurrent, None
    raise ValueError(f"export does not support the recurrent cell {name}.")


def recurrence(store, groups):
    """Runs several (bi)directional RNNs of one cell kind as one batched loop.

    ``groups``: per sequence its cells (``[forward]`` or ``[forward,
    backward]``, the same for every sequence). Returns ``run(sequences)``:
    ``S`` time-major ``(T, N, C)`` tensors of one ``T`` (static, or unknown) and one
    ``N`` -> ``S`` tensors ``(T, N, D*U)`` (directions concatenated, each in
    time order), as Keras's RNN / ``Bidirectional(merge_mode="concat")``.
    """
    per_seq = len(groups[0])
    weights = [[cell_weights(cell) for cell in cells] for cells in groups]
    kind = weights[0][0][0]
    units = weights[0][0][3].shape[0]
    kernels = [
        (
            store.add(np.concatenate([w[1] for w in seq], axis=1)),
            store.add(np.concatenate([w[2] for w in seq])),
        )
        for seq in weights
    ]
    recurrent = store.add(np.stack([w[3] for seq in weights for w in seq]))
    recurrent_bias = None
    if kind == "gru":
        recurrent_bias = store.add(np.stack([w[4] for seq in weights for w in seq])[:, None, :])
    step = cell_step(kind, units)
    num_state = 2 if kind == "lstm" else 1

    def run(sequences):
        steps = sequences[0].shape[0]
        if steps is None:
            return run_dynamic(sequences)
        n = tf.shape(sequences[0])[1]
        inputs = []  # per direction: T tensors (N, G*U)
        for seq, (kernel, bias) in zip(sequences, kernels):
            channels = seq.shape[-1]
            proj = tf.matmul(tf.reshape(seq, (-1, channels)), kernel) + bias
            proj = tf.reshape(proj, tf.stack([steps, n, per_seq, kernel.shape[1] // per_seq]))
            for d, direction in enumerate(tf.unstack(proj, axis=2)):
                frames = tf.unstack(direction, num=steps, axis=0)
                inputs.append(frames[::-1] if d == 1 else frames)
        zeros = tf.zeros(tf.stack([len(inputs), n, units]), dtype=sequences[0].dtype)
        state = (zeros,) * num_state
        hs = []
        for k in range(steps):
            z = tf.stack([frames[k] for frames in inputs])  # (S*D, N, G*U)
            state = step(z, state, recurrent, recurrent_bias)
            hs.append(tf.unstack(state[0], num=len(inputs), axis=0))
        outputs = []
        for s in range(len(sequences)):
            directions = []
            for d in range(per_seq):
                index = s * per_seq + d
                order = range(steps - 1, -1, -1) if d == 1 else range(steps)
                directions.append(tf.stack([hs[k][index] for k in order]))  # (T, N, U)
            outputs.append(directions[0] if per_seq == 1 else tf.concat(directions, axis=-1))
        return outputs

    def run_dynamic(sequences):
        # The length is only known at run time: one ``tf.scan`` (a while
        # loop; ONNX ``Loop``) over the steps of every direction at once, a
        # backward direction fed its projections reversed in time.
        n = tf.shape(sequences[0])[1]
        inputs = []  # per direction: (T, N, G*U)
        for seq, (kernel, bias) in zip(sequences, kernels):
            shape = tf.shape(seq)
            proj = tf.matmul(tf.reshape(seq, tf.stack([-1, shape[-1]])), kernel) + bias
            proj = tf.reshape(proj, tf.stack([shape[0], n, per_seq, kernel.shape[1] // per_seq]))
            for d in range(per_seq):
                direction = proj[:, :, d]
                inputs.append(tf.reverse(direction, axis=[0]) if d == 1 else direction)
        zeros = tf.zeros(tf.stack([len(inputs), n, units]), dtype=sequences[0].dtype)
        states = tf.scan(
            lambda state, z: step(z, state, recurrent, recurrent_bias),
            tf.stack(inputs, axis=1),  # (T, S*D, N, G*U)
            initializer=(zeros,) * num_state,
        )
        hs = states[0]  # (T, S*D, N, U)
        outputs = []
        for s in range(len(sequences)):
            directions = [hs[:, s * per_seq + d] for d in range(per_seq)]
            if per_seq == 2:
                directions[1] = tf.reverse(directions[1], axis=[0])
            outputs.append(directions[0] if per_seq == 1 else tf.concat(directions, axis=-1))
        return outputs

    return run


def static_or_dynamic(x, axis):
    """The size of ``x`` along ``axis``: a Python int when the graph knows
    it, else a scalar tensor (an export with a free image size)."""
    size = x.shape[axis]
    return int(size) if size is not None else tf.shape(x)[axis]


def bilstm2d(store, layer):
    """A ``BiLSTM2D`` (any ``union``, ``with_fc``, cell kind) over ``(B, H, W, C)``.

    The vertical RNN runs over the columns ``(H, B*W, C)``, the horizontal
    one over the rows ``(W, B*H, C)``; on a square grid both are one batched
    loop."""
    rnns = layer.axis_rnns()
    joint = recurrence(store, [rnn_cells(rnn) for _, rnn in rnns])
    single = [recurrence(store, [rnn_cells(rnn)]) for _, rnn in rnns]
    fc = dense_layer(store, layer.fc) if layer.fc is not None else None
    union = layer.union

    def run(x):
        batch, height, width = tf.shape(x)[0], static_or_dynamic(x, 1), static_or_dynamic(x, 2)
        channels = x.shape[-1]
        sequences = []
        for axis, _ in rnns:
            if axis == 1:
                sequences.append(tf.reshape(tf.transpose(x, (1, 0, 2, 3)), (height, -1, channels)))
            else:
                sequences.append(tf.reshape(tf.transpose(x, (2, 0, 1, 3)), (width, -1, channels)))
        if len(rnns) == 2 and isinstance(height, int) and height == width:
            results = joint(sequences)
        else:
            results = [run_one([seq])[0] for run_one, seq in zip(single, sequences)]
        outputs = []
        for (axis, _), result in zip(rnns, results):
            size = result.shape[-1]
            if axis == 1:
                v = tf.reshape(result, tf.stack([height, batch, width, size]))
                outputs.append(tf.transpose(v, (1, 0, 2, 3)))
            else:
                h = tf.reshape(result, tf.stack([width, batch, height, size]))
                outputs.append(tf.transpose(h, (1, 2, 0, 3)))
        if len(outputs) == 1:
            y = outputs[0]
        elif union == "cat":
            y = tf.concat(outputs, axis=-1)
        else:
            y = outputs[0] + outputs[1]
        return fc(y) if fc is not None else y

    return run


def bilstm1d(store, layer):
    """A ``BiLSTM1D``: one RNN over the ``H*W`` tokens of ``(B, H, W, C)``, row by row."""
    run_rnn = recurrence(store, [rnn_cells(layer.rnn)])
    fc = dense_layer(store, layer.fc) if layer.fc is not None else None

    def run(x):
        batch, height, width = tf.shape(x)[0], static_or_dynamic(x, 1), static_or_dynamic(x, 2)
        channels = x.shape[3]
        tokens = tf.transpose(tf.reshape(x, tf.stack([batch, height * width, channels])), (1, 0, 2))
        (y,) = run_rnn([tokens])
        y = tf.reshape(tf.transpose(y, (1, 0, 2)), tf.stack([batch, height, width, y.shape[-1]]))
        return fc(y) if fc is not None else y

    return run


# The graph of each token mixer, by its class name.
TOKEN_MIXERS = {"BiLSTM2D": bilstm2d, "BiLSTM1D": bilstm1d}


def sequencer_block(store, block):
    """A ``Sequencer2DBlock`` (either token mixer) at inference:
    :func:`~keras_sequencer.kernels.generic.block_forward` over the graphs of
    its parts (``block.parts()``; DropPath is the identity)."""
    parts = block.parts()
    mixer_kind = type(parts.mixer).__name__
    if mixer_kind not in TOKEN_MIXERS:
        raise ValueError(f"export does not support the token mixer {mixer_kind} of {block.name!r}.")
    graphs = {  # by the layer's id, made in the block's weight order
        id(parts.norm1): layer_norm(store, parts.norm1.gamma, parts.norm1.beta, parts.norm1.epsilon),
        id(parts.mixer): TOKEN_MIXERS[mixer_kind](store, parts.mixer),
        id(parts.norm2): layer_norm(store, parts.norm2.gamma, parts.norm2.beta, parts.norm2.epsilon),
        id(parts.mlp_fc1): dense_layer(store, parts.mlp_fc1),
        id(parts.mlp_fc2): dense_layer(store, parts.mlp_fc2),
    }

    def apply(layer, x):
        return graphs[id(layer)](x)

    def run(x):
        return block_forward(
            x, parts, norm=apply, residual=lambda x, layer, y: x + apply(layer, y), dense=apply, gelu=gelu
        )

    return run


ACTIVATIONS = {
    "linear": lambda x: x,
    "softmax": lambda x: tf.nn.softmax(x, axis=-1),
    "sigmoid": tf.sigmoid,
    "relu": tf.nn.relu,
    "tanh": tf.tanh,
}


def activation(name):
    """The TensorFlow function of a Keras activation name (the head's)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"export supports the classifier activations {', '.join(ACTIVATIONS)}; got {name!r}.")
    return ACTIVATIONS[name]


def normalization(store, mean, variance):
    """Keras ``Normalization``: ``(x - mean) / max(sqrt(variance), 1e-7)``."""
    mean = store.add(mean)
    scale = store.add(1.0 / np.maximum(np.sqrt(to_numpy(variance).astype("float64")), 1e-7))
    return lambda x: (x - mean) * scale


def input_check(min_size, model_name):
    """The graph's :class:`~keras_sequencer.layers.ImageInputCheck`: where the height or
    width is free (``None`` when traced), an ``Assert`` that both are at least
    ``min_size`` (the total stride). Below it the feature map is empty, and what the
    runtime then returns depends on the CPU's kernels (an error on some, zeros on
    others); the assertion makes it one error with the sizes everywhere. At a fixed
    size the export has already checked it: the graph gets nothing."""

    def check(x):
        if None not in tuple(x.shape[1:3]):
            return x
        size = tf.shape(x)[1:3]
        assertion = tf.debugging.Assert(
            tf.reduce_all(size >= min_size),
            [f"{model_name} needs images of at least {min_size}x{min_size} pixels (its total stride); got", size],
        )
        with tf.control_dependencies([assertion]):
            return tf.identity(x)

    return check
