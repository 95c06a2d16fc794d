"""Backend-neutral kernels in ``keras.ops``: the fused LSTM recurrence and the
defaults of every kernel a backend module may specialise.

The fused recurrence (:func:`fused_lstm`) runs the LSTMs of a ``BiLSTM2D``
(every direction of its vertical and horizontal RNNs) as one batched
recurrence over the Keras ``LSTMCell`` variables. Its pieces take the parts a
backend swaps as arguments (:func:`recurrence`): the input projection
(``project``), the gate activation (``gates``), the unrolled and the scanned
loop (``unrolled``, ``scanned``) and which of them runs by default, so
:mod:`.jax`, :mod:`.tensorflow` and :mod:`.torch` reuse it with their own.
Both loops have a hand-written backward here (:func:`unrolled_lstm_backward`,
:func:`scanned_lstm_backward`) for the backends to wrap in their custom
gradients.

Kernel API (the same signatures in every backend module, see
:mod:`keras_sequencer.kernels`): :func:`fused_lstm`, :func:`bilstm2d`,
:func:`fused_block`, :func:`layer_norm`, :func:`dense`,
:func:`residual_dense`, :func:`patch_embedding`.

A Sequencer block reaches the kernels (and the export graph,
:mod:`.export_tf`) as :class:`BlockParts`, and its composition is
:func:`block_forward`, written once for every path.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
from keras import ops

KERNEL_API = (
    "fused_lstm",
    "bilstm2d",
    "fused_block",
    "layer_norm",
    "dense",
    "residual_dense",
    "patch_embedding",
)


def cell_weight(cell, attr, dtype):
    """An LSTM cell's variable (``kernel`` ``(C, 4U)``, ``recurrent_kernel``
    ``(U, 4U)``, ``bias`` ``(4U,)``) in the compute dtype of the sequences
    (e.g. float16 under mixed precision)."""
    return ops.cast(getattr(cell, attr), dtype)


def project(x, kernel, bias):
    """``x @ kernel + bias``: ``(M, C) @ (C, K) + (K,) -> (M, K)``."""
    return ops.matmul(x, kernel) + bias


# ------------------------------------------------------ the fused recurrence --
def lstm_gates(z, units):
    """The activated gates ``(i, f, g, o)``, each ``(..., U)``, of the
    pre-activations ``z`` ``(..., 4U)`` (Keras's gate order i, f, g, o):
    one sigmoid over all of ``z`` and slices of the last axis."""
    gates = ops.sigmoid(z)
    i, f, o = gates[..., :units], gates[..., units : 2 * units], gates[..., 3 * units :]
    g = ops.tanh(z[..., 2 * units : 3 * units])
    return i, f, g, o


def lstm_step(state, z, recurrent, units, gates=lstm_gates):
    """One LSTM step for all directions: ``z`` ``(D, N, 4U)`` input projection,
    ``state`` ``(h, c)`` each ``(D, N, U)``, ``recurrent`` ``(D, U, 4U)``.
    Returns the new ``(h, c)`` and the activations ``(i, f, g, o, tanh(c))``
    (for :func:`unrolled_lstm_backward`)."""
    h, c = state
    z = z + ops.matmul(h, recurrent)
    i, f, g, o = gates(z, units)
    c = f * c + i * g
    tanh_c = ops.tanh(c)
    return (o * tanh_c, c), (i, f, g, o, tanh_c)


def lstm_projections(sequences, cells, project=project):
    """The input projections of every direction and time step, hoisted out of
    the loop: per sequence one ``(T*N, C) @ (C, D*4U)`` (+ bias) reshaped to
    ``(T, N, D, 4U)``; and the recurrent kernels stacked ``(S*D, U, 4U)``."""
    per_seq = len(cells[0])
    dtype = sequences[0].dtype
    t, n, c = ops.shape(sequences[0])[0], ops.shape(sequences[0])[1], sequences[0].shape[-1]
    units = cells[0][0].units
    projections = []
    for seq, seq_cells in zip(sequences, cells):
        kernel = ops.concatenate([cell_weight(cl, "kernel", dtype) for cl in seq_cells], axis=-1)
        bias = ops.concatenate([cell_weight(cl, "bias", dtype) for cl in seq_cells], axis=-1)
        proj = project(ops.reshape(seq, (-1, c)), kernel, bias)
        projections.append(ops.reshape(proj, (t, n, per_seq, 4 * units)))
    recurrent = ops.stack([cell_weight(cl, "recurrent_kernel", dtype) for seq_cells in cells for cl in seq_cells])
    return projections, recurrent


def unrolled_lstm(projections, recurrent, per_seq, reverse, gates=lstm_gates):
    """The recurrence as a Python loop over the input projections (``S``
    tensors ``(T, N, D, 4U)``, static ``T``) with the stacked recurrent
    kernels ``(S*D, U, 4U)``. Returns the ``S`` outputs ``(T, N, D*U)`` and,
    per step, the state before it and the step's activations (what
    :func:`unrolled_lstm_backward` needs)."""
    steps, n = projections[0].shape[0], ops.shape(projections[0])[1]  # N may be unknown
    units = recurrent.shape[1]
    zeros = ops.zeros((recurrent.shape[0], n, units), projections[0].dtype)
    state = (zeros, zeros)
    # Each direction's inputs as T views (N, 4U): unstack/stack keep the
    # backward pass cheap (each slice's backward would zero-fill a gradient
    # of the whole projection; an unstack's is one stack).
    inputs = [ops.unstack(x, axis=0) for p in projections for x in ops.unstack(p, axis=2)]
    hs, saved = [], []
    for k in range(steps):
        z = ops.stack(
            [x[steps - 1 - k if reverse and i % per_seq == 1 else k] for i, x in enumerate(inputs)]
        )  # (S*D, N, 4U): the backward directions at time T-1-k
        new_state, activations = lstm_step(state, z, recurrent, units, gates)
        saved.append((state, activations))
        state = new_state
        hs.append(ops.unstack(state[0], axis=0))
    return outputs_from_steps(hs, len(projections), per_seq, reverse), saved


def unrolled_lstm_backward(recurrent, saved, output_grads, per_seq, reverse):
    """The gradients of :func:`unrolled_lstm` with respect to its projections
    (``S`` tensors ``(T, N, D, 4U)``) and recurrent kernels ``(S*D, U, 4U)``,
    given those of its outputs (``S`` tensors ``(T, N, D*U)``), by hand: per
    step one fused element-wise expression for the gate gradients and one
    matmul that carries the hidden state's gradient back; the recurrent
    kernels' gradient for all steps is one matmul at the end. (The backward
    of :mod:`.torch_lstm` is the same computation in torch's in-place
    kernels.)"""
    steps = len(saved)
    step_grads = ops.unstack(stacked_from_outputs(output_grads, per_seq, reverse), axis=0)  # T of (S*D, N, U)
    recurrent_t = ops.transpose(recurrent, (0, 2, 1))
    z_grads = [None] * steps
    dz = dc = None
    for k in reversed(range(steps)):
        (_, c_prev), (i, f, g, o, tanh_c) = saved[k]
        dh = step_grads[k] if dz is None else step_grads[k] + ops.matmul(dz, recurrent_t)
        dc_h = dh * o * (1.0 - tanh_c * tanh_c)
        dc = dc_h if dc is None else dc + dc_h
        dz = ops.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )
        z_grads[k] = dz
        dc = dc * f
    z_grads = ops.stack(z_grads)  # (T, S*D, N, 4U)
    h_prev = ops.stack([state[0] for state, _ in saved])  # (T, S*D, N, U)
    recurrent_grad = ops.einsum("krnu,krng->rug", h_prev, z_grads)
    return projections_from_stacked(z_grads, len(output_grads), per_seq, reverse), recurrent_grad


def stacked_inputs(projections, per_seq, reverse):
    """The input projections ``S x (T, N, D, 4U)`` as one ``(T, S*D, N, 4U)``
    in stepping order (a backward direction's time axis flipped), the ``xs``
    of a scanned recurrence."""
    if reverse:
        projections = [ops.stack([p[:, :, 0], ops.flip(p[:, :, 1], axis=0)], axis=2) for p in projections]
    return ops.stack([p[:, :, d] for p in projections for d in range(per_seq)], axis=1)


def projections_from_stacked(z_grads, num_seq, per_seq, reverse):
    """The inverse of :func:`stacked_inputs`: ``(T, S*D, N, 4U)`` in stepping
    order -> ``S x (T, N, D, 4U)`` in time order (the projections' gradients)."""
    per_direction = ops.unstack(z_grads, axis=1)
    projection_grads = []
    for s in range(num_seq):
        directions = [per_direction[s * per_seq + d] for d in range(per_seq)]
        if reverse:
            directions[1] = ops.flip(directions[1], axis=0)
        projection_grads.append(ops.stack(directions, axis=2))  # (T, N, D, 4U)
    return projection_grads


def stacked_from_outputs(output_grads, per_seq, reverse):
    """The inverse of :func:`outputs_from_stacked`: ``S x (T, N, D*U)`` in time
    order -> ``(T, S*D, N, U)`` in stepping order (the outputs' gradients as
    the recurrence's steps see them)."""
    step_grads = []  # S*D tensors (T, N, U), stepping order
    for grad in output_grads:
        for d, g in enumerate(ops.split(grad, per_seq, axis=-1)):
            step_grads.append(ops.flip(g, axis=0) if reverse and d == 1 else g)
    return ops.stack(step_grads, axis=1)


def scanned_lstm(projections, recurrent, per_seq, reverse, gates=lstm_gates):
    """The recurrence with ``ops.scan`` (any ``T``, also unknown): the same
    inputs and outputs as :func:`unrolled_lstm` (outputs only)."""
    z = stacked_inputs(projections, per_seq, reverse)
    zeros = ops.zeros((recurrent.shape[0], ops.shape(z)[2], recurrent.shape[1]), z.dtype)

    def step(state, z_k):
        state, _ = lstm_step(state, z_k, recurrent, recurrent.shape[1], gates)
        return state, state  # (ys = (h, c): the TF backend wants ys shaped like the carry)

    _, (stacked, _) = ops.scan(step, (zeros, zeros), z)  # (T, S*D, N, U)
    return outputs_from_stacked(stacked, len(projections), per_seq, reverse)


def scanned_lstm_states(z, recurrent, gates=lstm_gates):
    """:func:`scanned_lstm` over stacked inputs ``z`` ``(T, R, N, 4U)``
    (:func:`stacked_inputs`, ``R = S*D``) keeping what
    :func:`scanned_lstm_backward` needs. Returns the hidden states ``(T, R,
    N, U)`` and, stacked over the steps, each ``(T, R, N, U)``: the cell
    state before the step, its gates ``i, f, g, o`` and ``tanh(c)``."""
    units = recurrent.shape[1]
    zeros = ops.zeros((recurrent.shape[0], ops.shape(z)[2], units), z.dtype)

    def step(carry, z_k):
        state, activations = lstm_step(carry[:2], z_k, recurrent, units, gates)
        # carry and ys of one structure (the TF backend's scan wants it): the
        # carry's activations are unused, the ys' state is the one before the step
        return (*state, *activations), (carry[0], carry[1], *activations)

    _, (h_prev, c_prev, i, f, g, o, tanh_c) = ops.scan(step, (zeros,) * 7, z)
    return o * tanh_c, (h_prev, c_prev, i, f, g, o, tanh_c)


def scanned_lstm_backward(recurrent, saved, h_grads):
    """The gradients of :func:`scanned_lstm_states` with respect to ``z``
    ``(T, R, N, 4U)`` and the recurrent kernels ``(R, U, 4U)`` given those of
    its hidden states ``h_grads`` ``(T, R, N, U)``: :func:`unrolled_lstm_backward`'s
    computation as one reverse ``ops.scan`` (per step the gate gradients and
    one ``(R, N, 4U) @ (R, 4U, U)`` matmul for the hidden state's gradient),
    then the recurrent kernels' gradient as one matmul over every step."""
    h_prev, c_prev, i, f, g, o, tanh_c = saved
    recurrent_t = ops.transpose(recurrent, (0, 2, 1))
    zeros = ops.zeros_like(h_grads[0])

    def step(carry, step_inputs):
        dh_next, dc_next = carry[:2]
        dh_out, c_prev, i, f, g, o, tanh_c = step_inputs
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = (dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o))
        carry = (ops.matmul(ops.concatenate(dz, axis=-1), recurrent_t), dc * f, *dz)
        return carry, carry

    xs = (h_grads, c_prev, i, f, g, o, tanh_c)
    _, (*_, di, df, dg, do) = ops.scan(step, (zeros,) * 6, xs, reverse=True)
    z_grads = ops.concatenate([di, df, dg, do], axis=-1)  # (T, R, N, 4U)
    recurrent_grad = ops.einsum("krnu,krng->rug", h_prev, z_grads)
    return z_grads, recurrent_grad


def outputs_from_steps(hs, num_seq, per_seq, reverse):
    """Per-step states (``T`` lists of ``S*D`` tensors ``(N, U)``) -> ``S``
    tensors ``(T, N, D*U)`` in time order."""
    steps = len(hs)
    outputs = []
    for s in range(num_seq):
        directions = []
        for d in range(per_seq):
            index = s * per_seq + d
            order = reversed(range(steps)) if reverse and d == 1 else range(steps)
            directions.append(ops.stack([hs[k][index] for k in order]))  # (T, N, U)
        outputs.append(directions[0] if per_seq == 1 else ops.concatenate(directions, axis=-1))
    return outputs


def outputs_from_stacked(stacked, num_seq, per_seq, reverse):
    """:func:`outputs_from_steps` for a scanned ``(T, S*D, N, U)`` of unknown ``T``."""
    outputs = []
    for s in range(num_seq):
        directions = [stacked[:, s * per_seq + d] for d in range(per_seq)]
        if reverse:
            directions[1] = ops.flip(directions[1], axis=0)
        outputs.append(directions[0] if per_seq == 1 else ops.concatenate(directions, axis=-1))
    return outputs


def unrolled_outputs(projections, recurrent, per_seq, reverse, gates=lstm_gates):
    """:func:`unrolled_lstm`'s outputs alone (differentiated by the backend's
    autodiff)."""
    return unrolled_lstm(projections, recurrent, per_seq, reverse, gates)[0]


def recurrence(
    sequences,
    cells,
    reverse,
    unroll=None,
    project=project,
    gates=lstm_gates,
    unrolled=None,
    scanned=None,
    unroll_default=True,
):
    """:func:`fused_lstm` with a backend's pieces: ``project`` (the hoisted
    input projection), ``gates`` (the gate activation of each step),
    ``unrolled`` and ``scanned`` (the unrolled and the scanned loop,
    ``(projections, recurrent, per_seq, reverse) -> outputs``; defaults
    :func:`unrolled_outputs` and :func:`scanned_lstm` with ``gates``) and
    ``unroll_default``, which of the two ``unroll=None`` runs when ``T`` is
    static (an unknown ``T`` is always scanned)."""
    projections, recurrent = lstm_projections(sequences, cells, project)
    per_seq = len(cells[0])
    steps = sequences[0].shape[0]
    if unroll is None:
        unroll = unroll_default and steps is not None
    if unroll and steps is None:
        raise ValueError("fused_lstm(unroll=True) needs a static sequence length.")
    if not unroll:
        if scanned is None:
            return scanned_lstm(projections, recurrent, per_seq, reverse, gates)
        return scanned(projections, recurrent, per_seq, reverse)
    if unrolled is None:
        return unrolled_outputs(projections, recurrent, per_seq, reverse, gates)
    return unrolled(projections, recurrent, per_seq, reverse)


def fused_lstm(sequences, cells, reverse, unroll=None):
    """Runs several (bi)directional LSTMs as one batched recurrence.

    Args:
        sequences: ``S`` time-major tensors ``(T, N, C)`` of one shape.
        cells: for each sequence, its ``keras.layers.LSTMCell`` s: ``[forward]``
            or, with ``reverse``, ``[forward, backward]`` (the layers of a
            ``Bidirectional``); all with the same units ``U``.
        reverse: whether the second cell of each sequence runs backwards.
        unroll: run the time loop as a Python loop (``True``; needs a static
            ``T``) or with ``ops.scan`` (``False``). Default (``None``): the
            backend's choice for a static ``T`` (scanned on JAX, unrolled
            elsewhere), scanned for an unknown ``T``.

    Returns:
        ``S`` time-major tensors ``(T, N, D * U)`` (``D`` cells each,
        concatenated as ``Bidirectional(merge_mode="concat")``), equal to the
        Keras layers' outputs.

    Per sequence, the input projections of all its directions and time steps
    are one matmul ``(T*N, C) @ (C, D*4U)`` (+ bias) hoisted out of the loop;
    each step then gathers its slice of every direction (the backward ones at
    time ``T-1-k``; no flipped copies), does one ``(S*D, N, U) @ (S*D, U, 4U)``
    matmul and the gate math. Gate order i, f, g, o and activations
    sigmoid/tanh as ``keras.layers.LSTM`` (and ``torch.nn.LSTM``).
    """
    return recurrence(sequences, cells, reverse, unroll)


# ------------------------------------------------------------- BiLSTM2D ------
def grouped_recurrences(sequences, cells, fused_lstm=fused_lstm):
    """Runs each ``(T, N, C)`` sequence through its cells with ``fused_lstm``;
    sequences of the same static shape share one recurrence. Returns the
    ``(T, N, D * U)`` outputs in the order given."""
    groups = {}
    for index, seq in enumerate(sequences):
        key = tuple(seq.shape[:2]) if None not in seq.shape[:2] else index
        groups.setdefault(key, []).append(index)
    outputs = [None] * len(sequences)
    for members in groups.values():
        results = fused_lstm(
            [sequences[m] for m in members],
            [cells[m] for m in members],
            reverse=len(cells[members[0]]) == 2,
        )
        for m, result in zip(members, results):
            outputs[m] = result
    return outputs


def time_major_bilstm2d(x, rnns, concat, recurrences):
    """:func:`bilstm2d` by a function ``recurrences(sequences, cells) ->
    outputs`` over time-major sequences: columns ``(H, B*W, C)`` (axis 1),
    rows ``(W, B*H, C)`` (axis 2)."""
    batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
    channels = x.shape[-1]
    sequences = []
    for axis, _ in rnns:
        if axis == 1:
            sequences.append(ops.reshape(ops.transpose(x, (1, 0, 2, 3)), (height, -1, channels)))
        else:
            sequences.append(ops.reshape(ops.transpose(x, (2, 0, 1, 3)), (width, -1, channels)))
    results = recurrences(sequences, [cells for _, cells in rnns])
    outputs = []
    for (axis, cells), result in zip(rnns, results):
        size = len(cells) * cells[0].units
        if axis == 1:
            v = ops.reshape(result, (height, batch, width, size))
            outputs.append(ops.transpose(v, (1, 0, 2, 3)))
        else:
            h = ops.reshape(result, (width, batch, height, size))
            outputs.append(ops.transpose(h, (1, 2, 0, 3)))
    if not concat:
        return outputs
    return outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)


def bilstm2d(x, rnns, concat):
    """The LSTMs of a fused ``BiLSTM2D`` over ``x`` ``(B, H, W, C)``.

    Args:
        x: the tokens.
        rnns: per RNN ``(axis, cells)``: ``axis`` 1 runs down the columns
            (sequences of length H), 2 along the rows (length W); ``cells``
            its ``LSTMCell`` s, ``[forward]`` or ``[forward, backward]``, all
            with the same units ``U``.
        concat: return the RNNs' outputs concatenated along the channels
            (the ``cat`` union) rather than a list.

    Returns:
        with ``concat`` one ``(B, H, W, sum D_r)`` tensor, else a list of
        ``(B, H, W, D_r)``, ``D_r = len(cells) * U``, in the order of ``rnns``.
    """
    return time_major_bilstm2d(x, rnns, concat, grouped_recurrences)


# ---------------------------------------------------- Sequencer2DBlock -------
class BlockParts(NamedTuple):
    """A Sequencer block's sub-layers and settings, as the kernels and the
    export graph read them (made by ``Sequencer2DBlock.parts()``).

    ``mixer`` is the token mixer, ``(B, H, W, C) -> (B, H, W, C)``; ``mix`` the
    same mixer before its output projection ``mixer_fc`` (``(B, H, W, C) ->
    (B, H, W, union)``, a ``BiLSTM2D``'s ``mix``), or ``None`` for a mixer
    without one; ``mixer_fc`` ``None`` without ``with_fc``. ``drop_path`` is
    applied to both residual branches, with rate ``drop_path_rate``.
    """

    norm1: Any
    mixer: Any
    mix: Callable | None
    mixer_fc: Any
    norm2: Any
    mlp_fc1: Any
    mlp_fc2: Any
    drop_path: Any
    drop_path_rate: float


def block_forward(x, parts, norm, residual, dense, gelu):
    """The Sequencer block over ``x`` ``(B, H, W, C)``, the one place its
    composition is written: ``x + drop_path(mixer(norm1(x)))``, then
    ``x + drop_path(mlp_fc2(gelu(mlp_fc1(norm2(x)))))``.

    Every path gives its own operations on the :class:`BlockParts` ``parts``:
    ``norm(layer, x)`` a LayerNorm; ``residual(x, layer, y)``, ``x +
    drop_path(layer(y))`` for ``layer`` ``parts.mixer`` or ``parts.mlp_fc2``;
    ``dense(layer, x)`` the MLP's first Dense; ``gelu(x)`` the exact GELU.
    """
    x = residual(x, parts.mixer, norm(parts.norm1, x))
    hidden = gelu(dense(parts.mlp_fc1, norm(parts.norm2, x)))
    return residual(x, parts.mlp_fc2, hidden)


def fused_block(block, x, training):
    """A ``Sequencer2DBlock``'s call with ``implementation="fused"``,
    ``(B, H, W, C) -> (B, H, W, C)``: by default its plain forward pass
    (the fused path is in its ``BiLSTM2D``)."""
    return block.forward_pass(x, training=training)


def layer_norm(layer, x, training):
    """``layer(x)`` for a block's ``LayerNormalization`` over ``(..., C)``."""
    return layer(x)


def dense(layer, x):
    """``layer(x)`` for a ``keras.layers.Dense`` over ``(..., C)`` on the fused path."""
    return layer(x)


def residual_dense(layer, x, y, in_place=False):
    """``x + layer(y)`` for a ``keras.layers.Dense`` (a residual branch's last
    projection); ``in_place`` (``x`` may be overwritten) matters only where a
    backend writes the sum over ``x``."""
    return x + layer(y)


def patch_embedding(layer, x):
    """A ``PatchEmbedding``'s convolution: ``Conv2D.call`` with kernel =
    stride = patch, ``(B, H, W, C) -> (B, H // p, W // p, filters)``."""
    return keras.layers.Conv2D.call(layer, x)


def is_plain_patch_convolution(layer):
    """Whether a ``PatchEmbedding`` is a plain convolution (channels last, no
    groups, dilation or quantization), which :func:`patch_gemm` computes."""
    return (
        layer.data_format == "channels_last"
        and layer.groups == 1
        and tuple(layer.dilation_rate) == (1, 1)
        and getattr(layer, "quantization_mode", None) is None
    )


def patch_gemm(layer, x, project=project):
    """A plain :func:`patch_embedding` (:func:`is_plain_patch_convolution`)
    as what it is, one GEMM: the patches of ``x`` ``(B, H, W, C)`` flattened
    to ``(B * h * w, p * p * C)`` (a transpose only for ``p > 1``) times the
    kernel ``(p * p * C, filters)`` (LoRA included), plus the bias, by
    ``project`` -> ``(B, h, w, filters)``; rows and columns past the last
    whole patch are dropped, as by the convolution."""
    p = layer.patch_size
    batch, height, width, channels = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    rows, cols = height // p, width // p
    if p > 1:  # (B, h, p, w, p, C) -> (B, h, w, p, p, C): the kernel's (kh, kw, C) order
        x = ops.reshape(x[:, : rows * p, : cols * p], (-1, rows, p, cols, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    patches = ops.reshape(x, (-1, p * p * channels))
    kernel = ops.reshape(ops.cast(layer.kernel, x.dtype), (p * p * channels, layer.filters))
    if layer.use_bias:
        y = project(patches, kernel, ops.cast(layer.bias, x.dtype))
    else:
        y = ops.matmul(patches, kernel)
    y = ops.reshape(y, (batch, rows, cols, layer.filters))
    return layer.activation(y) if layer.activation is not None else y
