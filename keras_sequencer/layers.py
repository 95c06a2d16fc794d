"""Sequencer building blocks: BiLSTM2D, the Sequencer2D block, patch embedding.

All tensors are channels-last: ``(batch, height, width, channels)``, as in timm's
``Sequencer2d`` (which permutes to NHWC right after the stem).
"""

import keras
from keras import ops

PACKAGE = "keras_sequencer"

# Recurrent layer classes selectable by name (``rnn_type``). Keras GRU uses
# ``reset_after=True`` by default, which is the PyTorch GRU formulation.
RNN_TYPES = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "rnn": keras.layers.SimpleRNN,
}
UNIONS = ("cat", "add", "vertical", "horizontal")
# How BiLSTM2D runs its recurrences (see BiLSTM2D); both read the same variables.
IMPLEMENTATIONS = ("keras", "fused")


def _register(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


@_register
class BiLSTM2D(keras.layers.Layer):
    """Vertical and horizontal (bi)directional RNNs over an image's columns and rows.

    Input ``(B, H, W, C)``. The vertical RNN runs down each column (sequences of
    length H, batch ``B*W``), the horizontal RNN along each row (length W, batch
    ``B*H``). Their outputs, ``(B, H, W, D)`` each with ``D = hidden_size * (2 if
    bidirectional else 1)``, are joined by ``union``:

    - ``"cat"``: ``concat([vertical, horizontal])`` -> ``2D`` channels (the paper);
    - ``"add"``: ``vertical + horizontal`` -> ``D`` channels;
    - ``"vertical"`` / ``"horizontal"``: only that RNN is built -> ``D`` channels.

    With ``with_fc`` a Dense layer maps the result back to ``C`` channels; without
    it the union must already have ``C`` channels. H and W may be unknown.

    Args:
        hidden_size: units of each RNN direction.
        bidirectional: run each RNN forwards and backwards (``Bidirectional``).
        union: how the two RNN outputs are combined, see above.
        with_fc: project the union back to the input channels.
        rnn_type: ``"lstm"`` (``keras.layers.LSTM``), ``"gru"`` or ``"rnn"``
            (``SimpleRNN``).
        implementation: ``"keras"`` calls the ``keras.layers.LSTM`` (or
            GRU/SimpleRNN) layers; ``"fused"`` (LSTM only) runs every direction
            of both RNNs as one batched recurrence (:func:`fused_lstm`) over the
            *same* LSTM layers' variables, so weights, conversion and saved
            files are identical; it is much faster on CPU (see the README's
            "Speed" section). On torch (:mod:`keras_sequencer.torch_lstm`) the
            recurrence runs in place with a hand-written backward; inference
            on a GPU runs each RNN with ``torch.lstm`` (cuDNN) instead.
    """

    def __init__(
        self,
        hidden_size,
        bidirectional=True,
        union="cat",
        with_fc=True,
        rnn_type="lstm",
        implementation="keras",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"Unrecognized implementation {implementation!r}; expected one of {IMPLEMENTATIONS}."
            )
        if implementation == "fused" and rnn_type != "lstm":
            raise ValueError(
                f"implementation='fused' supports only rnn_type='lstm', got rnn_type={rnn_type!r}; "
                "use implementation='keras' for other RNN types."
            )
        if union not in UNIONS:
            raise ValueError(f"Unrecognized union {union!r}; expected one of {UNIONS}.")
        if rnn_type not in RNN_TYPES:
            raise ValueError(
                f"Unrecognized rnn_type {rnn_type!r}; expected one of {tuple(RNN_TYPES)}."
            )
        self.hidden_size = int(hidden_size)
        self.bidirectional = bool(bidirectional)
        self.union = union
        self.with_fc = bool(with_fc)
        self.rnn_type = rnn_type
        self.implementation = implementation
        self.with_vertical = union != "horizontal"
        self.with_horizontal = union != "vertical"
        self.rnn_v = self._make_rnn("rnn_v") if self.with_vertical else None
        self.rnn_h = self._make_rnn("rnn_h") if self.with_horizontal else None
        self.fc = None

    @property
    def rnn_output_size(self):
        """Channels of one RNN's output (both directions)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def union_size(self):
        """Channels after the union, before ``fc``."""
        return self.rnn_output_size * (2 if self.union == "cat" else 1)

    def _make_rnn(self, name):
        return make_rnn(self.rnn_type, self.hidden_size, self.bidirectional, name)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("BiLSTM2D needs a known channel dimension.")
        for rnn in (self.rnn_v, self.rnn_h):
            if rnn is not None:
                rnn.build((None, None, channels))
        if self.with_fc:
            self.fc = keras.layers.Dense(channels, name="fc")
            self.fc.build((None, self.union_size))
        elif self.union_size != channels:
            raise ValueError(
                f"BiLSTM2D with with_fc=False and union={self.union!r} outputs "
                f"{self.union_size} channels, but its input has {channels}; "
                "the residual connection needs them equal."
            )

    def _cells(self, rnn):
        """LSTM cells of one RNN: ``[forward]`` or ``[forward, backward]``."""
        if isinstance(rnn, keras.layers.Bidirectional):
            return [rnn.forward_layer.cell, rnn.backward_layer.cell]
        return [rnn.cell]

    def _run_fused(self, sequences):
        """Runs time-major ``{name: (T, N, C)}`` through the named RNNs with
        :func:`fused_lstm`; returns ``{name: (T, N, D)}``.

        RNNs whose sequences have the same static shape share one recurrence.
        On torch (reached only for inference on a GPU) each RNN runs torch's
        own LSTM kernel, cuDNN, instead (:func:`torch_lstm.torch_native_lstm`).
        """
        if keras.backend.backend() == "torch":
            from keras_sequencer.torch_lstm import torch_native_lstm

            return {
                name: torch_native_lstm(seq, self._cells(getattr(self, name)))
                for name, seq in sequences.items()
            }
        groups = {}
        for name, seq in sequences.items():
            key = tuple(seq.shape[:2]) if None not in seq.shape[:2] else name
            groups.setdefault(key, []).append(name)
        outputs = {}
        for names in groups.values():
            results = fused_lstm(
                [sequences[n] for n in names],
                [self._cells(getattr(self, n)) for n in names],
                reverse=self.bidirectional,
            )
            outputs.update(zip(names, results))
        return outputs

    def call(self, x):
        y = self.mix(x)
        if self.fc is not None:
            y = _dense(self.fc, y, fused=self.implementation == "fused")
        return y

    def mix(self, x):
        """The RNNs' union before ``fc``: ``(B, H, W, C) -> (B, H, W, union_size)``."""
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        channels = x.shape[-1]
        size = self.rnn_output_size
        if self.implementation == "fused":
            outputs = self._call_fused(x, batch, height, width, channels, size)
        else:
            outputs = []
            if self.with_vertical:  # columns: (B*W, H, C) sequences
                columns = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, height, channels))
                v = ops.reshape(self.rnn_v(columns), (batch, width, height, size))
                outputs.append(ops.transpose(v, (0, 2, 1, 3)))
            if self.with_horizontal:  # rows: (B*H, W, C) sequences
                rows = ops.reshape(x, (-1, width, channels))
                outputs.append(ops.reshape(self.rnn_h(rows), (batch, height, width, size)))
        if len(outputs) == 1:
            return outputs[0]
        if self.union == "cat":
            return ops.concatenate(outputs, axis=-1)
        return outputs[0] + outputs[1]

    def _call_fused(self, x, batch, height, width, channels, size):
        """The RNN outputs ``[(B, H, W, D)]`` via :func:`fused_lstm`, on
        time-major sequences: columns ``(H, B*W, C)``, rows ``(W, B*H, C)``."""
        if keras.backend.backend() == "torch" and not _torch_gpu_inference(x):
            return self._torch_fused(x)
        sequences = {}
        if self.with_vertical:
            sequences["rnn_v"] = ops.reshape(ops.transpose(x, (1, 0, 2, 3)), (height, -1, channels))
        if self.with_horizontal:
            sequences["rnn_h"] = ops.reshape(ops.transpose(x, (2, 0, 1, 3)), (width, -1, channels))
        results = self._run_fused(sequences)
        outputs = []
        if self.with_vertical:
            v = ops.reshape(results["rnn_v"], (height, batch, width, size))
            outputs.append(ops.transpose(v, (1, 0, 2, 3)))
        if self.with_horizontal:
            h = ops.reshape(results["rnn_h"], (width, batch, height, size))
            outputs.append(ops.transpose(h, (1, 2, 0, 3)))
        return outputs

    def _torch_fused(self, x):
        """:meth:`_call_fused` on torch (CPU inference, and training anywhere):
        every direction of both RNNs in one projection GEMM and one batched
        recurrence, read and written where the tokens lie
        (:func:`torch_lstm.bilstm2d_lstms`)."""
        from keras_sequencer.torch_lstm import bilstm2d_lstms

        rnns = [(n, a) for n, a in (("rnn_v", 1), ("rnn_h", 2)) if getattr(self, n) is not None]
        cells, directions = [], []
        for name, axis in rnns:  # axis of x the sequences run along
            rnn_cells = self._cells(getattr(self, name))
            cells += rnn_cells
            directions += [(axis, d == 1) for d in range(len(rnn_cells))]  # [fwd, bwd]
        y = bilstm2d_lstms(x, cells, directions)  # (B, H, W, R*U): [v fwd, v bwd, h fwd, h bwd]
        if self.union == "cat" or len(rnns) == 1:
            return [y]
        return list(y.split(self.rnn_output_size, dim=-1))

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self.with_fc else self.union_size
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "bidirectional": self.bidirectional,
            "union": self.union,
            "with_fc": self.with_fc,
            "rnn_type": self.rnn_type,
            "implementation": self.implementation,
        }


def _torch_gpu_inference(x):
    """Whether the torch backend runs ``x`` on a GPU without autograd
    (inference), where BiLSTM2D's fused path calls cuDNN's LSTM."""
    if keras.backend.backend() != "torch" or x.device.type != "cuda":
        return False
    return _no_grad()


def _cell_weight(cell, attr, dtype):
    """An LSTM cell's variable (``kernel``, ``recurrent_kernel``, ``bias``) in the
    compute dtype of the sequences (e.g. float16 under mixed precision)."""
    return ops.cast(getattr(cell, attr), dtype)


def _scan_step(state, z, recurrent, units):
    state, _ = _lstm_step(state, z, recurrent, units)
    return state, state  # (ys = (h, c): the TF backend wants ys shaped like the carry)


def _lstm_step(state, z, recurrent, units):
    """One LSTM step for all directions: ``z`` ``(D, N, 4U)`` input projection,
    ``state`` ``(h, c)`` each ``(D, N, U)``, ``recurrent`` ``(D, U, 4U)``.
    Returns the new ``(h, c)`` and the activations ``(i, f, g, o, tanh(c))``
    (for :func:`_unrolled_lstm_backward`)."""
    h, c = state
    z = z + ops.matmul(h, recurrent)
    if keras.backend.backend() == "tensorflow":
        # One Split into the four gates: TensorFlow runs each slice of the last
        # axis as its own StridedSlice copy. S training step, batch 8, 2 CPU
        # cores: 2.44 -> ~3.1 images/s, first call 62 -> 49 s. (On JAX the
        # split made the first training call 52 -> 83 s, so JAX keeps slices.)
        i, f, g, o = ops.split(z, 4, axis=-1)
        i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
    else:
        gates = ops.sigmoid(z)
        i, f, o = gates[..., :units], gates[..., units : 2 * units], gates[..., 3 * units :]
        g = ops.tanh(z[..., 2 * units : 3 * units])
    c = f * c + i * g
    tanh_c = ops.tanh(c)
    return (o * tanh_c, c), (i, f, g, o, tanh_c)


def _plain_dense(layer):
    """Whether a Dense is linear with a bias and not quantized (LoRA is inside
    ``layer.kernel``): ``y @ kernel + bias`` exactly."""
    return (
        layer.activation is keras.activations.linear
        and layer.bias is not None
        and layer.quantization_mode is None
    )


def _dense(layer, x, fused):
    """``layer(x)`` for a ``keras.layers.Dense`` over ``(..., C)``. On the
    fused path (``fused``) on torch, a plain Dense (linear, with a bias, not
    quantized; LoRA is inside ``layer.kernel``) runs as one ``addmm`` over the
    flattened tokens instead, the bias fused into the GEMM, where Keras's call
    adds it in a second pass over the output."""
    if not fused or keras.backend.backend() != "torch" or not _plain_dense(layer):
        return layer(x)
    kernel, bias = (ops.cast(v, x.dtype) for v in (layer.kernel, layer.bias))
    y = _project(x.reshape(-1, x.shape[-1]), kernel, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _gelu(x, fused):
    """Exact GELU of the MLP's hidden activations, ``(B, H, W, mlp_ratio * C)``,
    the block's largest tensor. On the fused path on torch without autograd
    (inference) in place on the fresh GEMM output (``gelu_``): no second
    buffer of that size to write."""
    if fused and keras.backend.backend() == "torch" and _no_grad():
        import torch

        return torch.ops.aten.gelu_(x)
    return ops.gelu(x, approximate=False)


def _residual_dense(layer, x, y, in_place=False):
    """``x + layer(y)`` for a plain ``keras.layers.Dense`` (see :func:`_dense`)
    on torch: the output starts as ``x + bias`` (one pass) and the GEMM
    accumulates into it in place (``addmm_``), where ``x + (y @ kernel + bias)``
    costs a bias copy, the GEMM and a separate add over ``(B, H, W, C)``.
    With ``in_place`` (a contiguous ``x`` that nothing else reads, no autograd)
    the result is written over ``x`` itself: no new buffer (~0.2 ms a block)."""
    if keras.backend.backend() != "torch" or not _plain_dense(layer):
        return x + layer(y)
    import torch

    kernel, bias = (ops.cast(v, y.dtype) for v in (layer.kernel, layer.bias))
    if in_place and x.is_contiguous() and x.dtype == bias.dtype:
        out = x.view(-1, x.shape[-1]).add_(bias)
    else:
        out = torch.add(x, bias).reshape(-1, x.shape[-1])  # (tokens, C), contiguous
    out.addmm_(y.reshape(-1, y.shape[-1]), kernel)
    return out.view(x.shape)


def _no_grad():
    """Whether torch runs without autograd (inference)."""
    import torch

    return not torch.is_grad_enabled()


def _project(x, kernel, bias):
    """``x @ kernel + bias`` (one fused kernel on torch)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.addmm(bias, x, kernel)
    return ops.matmul(x, kernel) + bias


def fused_lstm(sequences, cells, reverse, unroll=None):
    """Runs several (bi)directional LSTMs as one batched recurrence.

    Args:
        sequences: ``S`` time-major tensors ``(T, N, C)`` of one shape.
        cells: for each sequence, its ``keras.layers.LSTMCell`` s: ``[forward]``
            or, with ``reverse``, ``[forward, backward]`` (the layers of a
            ``Bidirectional``); all with the same units ``U``.
        reverse: whether the second cell of each sequence runs backwards.
        unroll: run the time loop as a Python loop (``True``; needs a static
            ``T``) or with ``ops.scan`` (``False``). Default: unrolled when
            ``T`` is static.

    Returns:
        ``S`` time-major tensors ``(T, N, D * U)`` (``D`` cells each,
        concatenated as ``Bidirectional(merge_mode="concat")``), equal to the
        Keras layers' outputs.

    Per sequence, the input projections of all its directions and time steps
    are one matmul ``(T*N, C) @ (C, D*4U)`` (+ bias) hoisted out of the loop;
    each step then gathers its slice of every direction (the backward ones at
    time ``T-1-k``; no flipped copies), does one ``(S*D, N, U) @ (S*D, U, 4U)``
    matmul and the gate math. Gate order i, f, c, o and activations
    sigmoid/tanh as ``keras.layers.LSTM`` (and ``torch.nn.LSTM``). BiLSTM2D
    runs it on JAX and TensorFlow; on torch it runs
    :func:`torch_lstm.bilstm2d_lstms` or, for inference on a GPU,
    :func:`torch_lstm.torch_native_lstm`.
    """
    per_seq = len(cells[0])
    dtype = sequences[0].dtype
    t, n, c = ops.shape(sequences[0])[0], ops.shape(sequences[0])[1], sequences[0].shape[-1]
    units = cells[0][0].units

    projections = []  # per sequence (T, N, D, 4U)
    for seq, seq_cells in zip(sequences, cells):
        kernel = ops.concatenate([_cell_weight(cl, "kernel", dtype) for cl in seq_cells], axis=-1)
        bias = ops.concatenate([_cell_weight(cl, "bias", dtype) for cl in seq_cells], axis=-1)
        proj = _project(ops.reshape(seq, (-1, c)), kernel, bias)
        projections.append(ops.reshape(proj, (t, n, per_seq, 4 * units)))
    recurrent = ops.stack(
        [_cell_weight(cl, "recurrent_kernel", dtype) for seq_cells in cells for cl in seq_cells]
    )  # (S*D, U, 4U)

    steps = sequences[0].shape[0]
    if unroll is None:
        unroll = steps is not None
    if unroll and steps is None:
        raise ValueError("fused_lstm(unroll=True) needs a static sequence length.")
    if unroll and keras.backend.backend() == "jax":
        return _jax_unrolled_lstm(projections, recurrent, per_seq, reverse)
    if unroll:
        return _unrolled_lstm(projections, recurrent, per_seq, reverse)[0]
    if reverse:  # scan walks one time axis: flip the backward directions' inputs
        projections = [
            ops.stack([p[:, :, 0], ops.flip(p[:, :, 1], axis=0)], axis=2) for p in projections
        ]
    z = ops.stack([p[:, :, d] for p in projections for d in range(per_seq)], axis=1)
    zeros = ops.zeros((len(sequences) * per_seq, n, units), dtype)
    scan_step = lambda st, zk: _scan_step(st, zk, recurrent, units)  # noqa: E731
    _, (stacked, _) = ops.scan(scan_step, (zeros, zeros), z)  # (T, S*D, N, U)
    return _outputs_from_stacked(stacked, len(sequences), per_seq, reverse)


def _unrolled_lstm(projections, recurrent, per_seq, reverse):
    """:func:`fused_lstm`'s Python-unrolled loop over its input projections
    (``S`` tensors ``(T, N, D, 4U)``, static ``T``) and stacked recurrent
    kernels ``(S*D, U, 4U)``. Returns the ``S`` outputs ``(T, N, D*U)`` and, per
    step, the state before it and the step's activations (what
    :func:`_unrolled_lstm_backward` needs)."""
    steps, n = projections[0].shape[:2]
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
        new_state, activations = _lstm_step(state, z, recurrent, units)
        saved.append((state, activations))
        state = new_state
        hs.append(ops.unstack(state[0], axis=0))
    return _outputs_from_steps(hs, len(projections), per_seq, reverse), saved


def _unrolled_lstm_backward(recurrent, saved, output_grads, per_seq, reverse):
    """The gradients of :func:`_unrolled_lstm` with respect to its projections
    and recurrent kernels, given those of its outputs, by hand: per step one
    fused element-wise expression for the gate gradients and one matmul that
    carries the hidden state's gradient back; the recurrent kernels' gradient
    for all steps is one matmul at the end. (``torch_lstm._steps_backward`` is
    the same computation in torch's in-place kernels.)"""
    steps = len(saved)
    step_grads = []  # S*D tensors (T, N, U), stepping order
    for grad in output_grads:
        for d, g in enumerate(ops.split(grad, per_seq, axis=-1)):
            step_grads.append(ops.flip(g, axis=0) if reverse and d == 1 else g)
    step_grads = ops.unstack(ops.stack(step_grads, axis=1), axis=0)  # T of (S*D, N, U)
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
    per_direction = ops.unstack(z_grads, axis=1)
    projection_grads = []
    for s in range(len(output_grads)):
        directions = [per_direction[s * per_seq + d] for d in range(per_seq)]
        if reverse:
            directions[1] = ops.flip(directions[1], axis=0)
        projection_grads.append(ops.stack(directions, axis=2))  # (T, N, D, 4U)
    return projection_grads, recurrent_grad


def _jax_unrolled_lstm(projections, recurrent, per_seq, reverse):
    """:func:`_unrolled_lstm` as a ``jax.custom_vjp`` with
    :func:`_unrolled_lstm_backward`; the forward is unchanged, so inference
    compiles as before. XLA's own derivative of the unrolled loop trained
    slower: S training step, batch 8, 2 CPU cores, ~6.1 -> ~4.4 s. (On
    TensorFlow's graph executor the hand-written backward was slower, 2.67 ->
    2.90 s, so TensorFlow keeps its autodiff.)"""
    import jax

    @jax.custom_vjp
    def run(projections, recurrent):
        return _unrolled_lstm(projections, recurrent, per_seq, reverse)[0]

    def forward(projections, recurrent):
        outputs, saved = _unrolled_lstm(projections, recurrent, per_seq, reverse)
        return outputs, (recurrent, saved)

    def backward(residuals, output_grads):
        recurrent, saved = residuals
        return _unrolled_lstm_backward(recurrent, saved, output_grads, per_seq, reverse)

    run.defvjp(forward, backward)
    return run(projections, recurrent)


def _outputs_from_steps(hs, num_seq, per_seq, reverse):
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


def _outputs_from_stacked(stacked, num_seq, per_seq, reverse):
    """:func:`_outputs_from_steps` for a scanned ``(T, S*D, N, U)`` of unknown ``T``."""
    outputs = []
    for s in range(num_seq):
        directions = [stacked[:, s * per_seq + d] for d in range(per_seq)]
        if reverse:
            directions[1] = ops.flip(directions[1], axis=0)
        outputs.append(directions[0] if per_seq == 1 else ops.concatenate(directions, axis=-1))
    return outputs


@_register
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch per sample while training.

    Kept samples are scaled by ``1 / (1 - rate)`` (timm's ``DropPath``).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@_register
class Sequencer2DBlock(keras.layers.Layer):
    """One Sequencer2D block, ``(B, H, W, C) -> (B, H, W, C)``.

    ``x + drop_path(BiLSTM2D(LayerNorm(x)))`` then
    ``x + drop_path(MLP(LayerNorm(x)))`` with LayerNorm eps 1e-6 and an MLP of
    ``Dense(mlp_ratio * C) -> exact GELU -> Dense(C)``.
    Sublayers are named as timm's: ``norm1``, ``rnn_tokens``, ``norm2``,
    ``mlp_fc1``, ``mlp_fc2``.

    With ``implementation="fused"`` the block also runs its Dense layers the
    fused way (:func:`_dense`) and, on TensorFlow, an inference call (``training``
    false) as one XLA cluster (:func:`_tensorflow_xla_inference`).
    """

    def __init__(
        self,
        hidden_size,
        mlp_ratio=3.0,
        bidirectional=True,
        union="cat",
        with_fc=True,
        rnn_type="lstm",
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        implementation="keras",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.mlp_ratio = float(mlp_ratio)
        self.bidirectional = bool(bidirectional)
        self.union = union
        self.with_fc = bool(with_fc)
        self.rnn_type = rnn_type
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.implementation = implementation
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm1")
        self.rnn_tokens = self._make_token_mixer("rnn_tokens")
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm2")
        self.drop_path = DropPath(drop_path_rate, name="drop_path")
        self.mlp_fc1 = None
        self.mlp_fc2 = None

    def _make_token_mixer(self, name):
        """The token-mixing layer: BiLSTM2D here; :class:`VanillaSequencerBlock` swaps it."""
        return BiLSTM2D(
            self.hidden_size,
            bidirectional=self.bidirectional,
            union=self.union,
            with_fc=self.with_fc,
            rnn_type=self.rnn_type,
            implementation=self.implementation,
            name=name,
        )

    def build(self, input_shape):
        dim = input_shape[-1]
        self.norm1.build(input_shape)
        self.rnn_tokens.build(input_shape)
        self.norm2.build(input_shape)
        self.drop_path.build(input_shape)
        self.mlp_fc1 = keras.layers.Dense(int(self.mlp_ratio * dim), name="mlp_fc1")
        self.mlp_fc1.build(input_shape)
        self.mlp_fc2 = keras.layers.Dense(dim, name="mlp_fc2")
        self.mlp_fc2.build(tuple(input_shape[:-1]) + (int(self.mlp_ratio * dim),))

    def call(self, x, training=None):
        if not training and self.implementation == "fused" and keras.backend.backend() == "tensorflow":
            return _tensorflow_xla_inference(self, x)
        return self._forward(x, training=training)

    def _forward(self, x, training=None):
        fused = self.implementation == "fused"
        # the residual adds fused into the branches' last GEMMs (torch)
        fuse_residual = (
            fused
            and keras.backend.backend() == "torch"
            and not (training and self.drop_path_rate > 0)  # DropPath is the identity
        )
        tokens = _norm(self.norm1, x, training, fused)
        mixer = self.rnn_tokens
        if fuse_residual and isinstance(mixer, BiLSTM2D) and mixer.fc is not None:
            x = _residual_dense(mixer.fc, x, mixer.mix(tokens))
        else:
            tokens = _sublayer(mixer, fused, tokens)
            x = x + _sublayer(self.drop_path, fused, tokens, training=training)
        hidden = _dense(self.mlp_fc1, _norm(self.norm2, x, training, fused), fused)
        hidden = _gelu(hidden, fused)
        if fuse_residual:  # x is this block's own tensor now: without autograd, reuse it
            return _residual_dense(self.mlp_fc2, x, hidden, in_place=_no_grad())
        y = _dense(self.mlp_fc2, hidden, fused)
        return x + _sublayer(self.drop_path, fused, y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "mlp_ratio": self.mlp_ratio,
            "bidirectional": self.bidirectional,
            "union": self.union,
            "with_fc": self.with_fc,
            "rnn_type": self.rnn_type,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "implementation": self.implementation,
        }


def _sublayer(layer, fused, *args, **kwargs):
    """``layer(*args, **kwargs)`` for a block's built sub-layer. On the fused
    path on torch it runs ``layer.call`` directly: eager torch pays Keras's
    ``Layer.__call__`` (input conversion, autocast and call-context scopes,
    loss tracking) on every call, ~0.3 ms each on 2 CPU cores, five calls a
    block. The block's own ``__call__`` has already done that work for its
    input. (``_dense`` does the same for the Dense layers, with one ``addmm``.)"""
    if fused and layer.built and keras.backend.backend() == "torch":
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def _norm(layer, x, training, fused=False):
    """``layer(x)`` (via :func:`_sublayer`) for a block's LayerNormalization.
    On JAX in training, fenced by ``jax.lax.optimization_barrier`` on both sides
    (an identity, also in the backward pass): XLA's CPU compiler otherwise fuses
    LayerNorm's backward with its neighbours into fusions that ran the S
    training step (batch 8, 224, 2 cores) in ~4.35 s instead of ~3.3 s.
    Inference compiles without fences."""
    if not training or keras.backend.backend() != "jax":
        return _sublayer(layer, fused, x)
    import jax

    return jax.lax.optimization_barrier(layer(jax.lax.optimization_barrier(x)))


def _tensorflow_xla_inference(block, x):
    """``block._forward(x, training=False)`` as one XLA cluster (a
    ``tf.function(jit_compile=True)`` made once per block and kept off Keras's
    tracking).

    The fused path's unrolled recurrence is hundreds of small ops per block,
    which TensorFlow's graph executor runs slowly on CPU and Keras's
    ``jit_compile="auto"`` does not put under XLA there. Per block, so
    ``fit`` (which is slower under XLA here) keeps the graph path. S, batch 8,
    224x224, 2 CPU cores: ~920 -> ~715 ms per forward pass; the first call
    compiles each block (~30 s for S).
    """
    import tensorflow as tf

    fn = block.__dict__.get("_xla_inference_fn")
    if fn is None:
        fn = tf.function(
            lambda t: block._forward(t, training=False), jit_compile=True, autograph=False
        )
        object.__setattr__(block, "_xla_inference_fn", fn)
    return fn(x)


@_register
class PatchEmbedding(keras.layers.Conv2D):
    """Non-overlapping patch embedding / downsampling: Conv2D with kernel = stride = patch.

    ``(B, H, W, C) -> (B, H // patch, W // patch, filters)``. Also used with
    ``patch_size=1`` (the 1x1 "downsample" convs of stages 3 and 4). Raises a
    ``ValueError`` when the input is smaller than one patch.
    """

    def __init__(self, filters, patch_size, **kwargs):
        for key in ("kernel_size", "strides", "padding"):
            kwargs.pop(key, None)
        super().__init__(
            filters, kernel_size=patch_size, strides=patch_size, padding="valid", **kwargs
        )
        self.patch_size = int(patch_size)

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        for size in (height, width):
            if size is not None and size < self.patch_size:
                raise ValueError(
                    f"{self.name}: input of spatial size {height}x{width} is smaller "
                    f"than the patch size {self.patch_size}."
                )
        if keras.backend.backend() == "torch" and self._is_plain_patchify():
            return self._patch_gemm(x)
        return super().call(x)

    def _is_plain_patchify(self):
        return (
            self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.dilation_rate) == (1, 1)
            and getattr(self, "quantization_mode", None) is None
        )

    def _patch_gemm(self, x):
        """The convolution on torch as what it is, one GEMM: the patches
        flattened to ``(B * h * w, p * p * C)`` (a copy only for ``p > 1``) times
        the kernel ``(p * p * C, filters)`` (LoRA included), bias fused, the
        output channels-last as it lies. Keras's torch ``Conv2D`` transposes to
        channels-first and back around oneDNN's convolution: S's stem and three
        downsamplings took 20.9 ms of a batch-8 224 forward pass that way, 13.0
        as GEMMs (2 CPU cores)."""
        p = self.patch_size
        batch, height, width, channels = x.shape
        rows, cols = height // p, width // p
        if p > 1:  # (B, h, p, w, p, C) -> (B, h, w, p, p, C): the kernel's (kh, kw, C) order
            x = x[:, : rows * p, : cols * p].reshape(batch, rows, p, cols, p, channels)
            x = x.permute(0, 1, 3, 2, 4, 5)
        patches = x.reshape(-1, p * p * channels)
        kernel = ops.cast(self.kernel, x.dtype).reshape(p * p * channels, self.filters)
        if self.use_bias:
            y = _project(patches, kernel, ops.cast(self.bias, x.dtype))
        else:
            y = patches @ kernel
        y = y.view(batch, rows, cols, self.filters)
        return self.activation(y) if self.activation is not None else y

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key, None)
        return {**config, "patch_size": self.patch_size}


@_register
class ImageInputCheck(keras.layers.Layer):
    """Identity that rejects inputs the network cannot handle, with a clear message.

    Checks rank 4 ``(batch, height, width, channels)``, the channel count and
    that height and width are at least ``min_size`` (the model's total stride),
    whenever those dimensions are known (always on eager calls and in
    ``predict``/``fit``).
    """

    def __init__(self, channels, min_size, model_name="model", **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.min_size = int(min_size)
        self.model_name = model_name

    def call(self, x):
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(
                f"{self.model_name} expects a batch of images of shape "
                f"(batch, height, width, {self.channels}); got an input of shape {shape}."
            )
        if shape[-1] is not None and shape[-1] != self.channels:
            raise ValueError(
                f"{self.model_name} expects images with {self.channels} channels "
                f"(channels last); got an input of shape {shape}."
            )
        height, width = shape[1], shape[2]
        if any(s is not None and s < self.min_size for s in (height, width)):
            raise ValueError(
                f"{self.model_name} needs images of at least {self.min_size}x{self.min_size} "
                f"pixels (its total stride); got {height}x{width}."
            )
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "min_size": self.min_size,
            "model_name": self.model_name,
        }


# ------------------------------------------------- the 1-D (vanilla) Sequencer --
@_register
class BiLSTM1D(keras.layers.Layer):
    """A (bi)directional RNN over the flattened token sequence of an image.

    ``(B, H, W, C)`` is read row by row as one sequence of ``H*W`` tokens, run
    through the RNN and reshaped back to ``(B, H, W, D)``, ``D = hidden_size * (2
    if bidirectional else 1)``. With ``with_fc`` a Dense maps ``D`` back to ``C``;
    without it (the paper's VanillaSequencer) ``D`` must equal ``C``.

    Args:
        hidden_size: units of each RNN direction.
        bidirectional: run the RNN forwards and backwards.
        with_fc: project the RNN output back to the input channels.
        rnn_type: ``"lstm"``, ``"gru"`` or ``"rnn"``, as in :class:`BiLSTM2D`.
    """

    def __init__(self, hidden_size, bidirectional=True, with_fc=False, rnn_type="lstm", **kwargs):
        super().__init__(**kwargs)
        if rnn_type not in RNN_TYPES:
            raise ValueError(
                f"Unrecognized rnn_type {rnn_type!r}; expected one of {tuple(RNN_TYPES)}."
            )
        self.hidden_size = int(hidden_size)
        self.bidirectional = bool(bidirectional)
        self.with_fc = bool(with_fc)
        self.rnn_type = rnn_type
        self.rnn = make_rnn(rnn_type, self.hidden_size, self.bidirectional, "rnn")
        self.fc = None

    @property
    def rnn_output_size(self):
        return self.hidden_size * (2 if self.bidirectional else 1)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("BiLSTM1D needs a known channel dimension.")
        self.rnn.build((None, None, channels))
        if self.with_fc:
            self.fc = keras.layers.Dense(channels, name="fc")
            self.fc.build((None, self.rnn_output_size))
        elif self.rnn_output_size != channels:
            raise ValueError(
                f"BiLSTM1D with with_fc=False outputs {self.rnn_output_size} channels "
                f"(hidden_size {self.hidden_size}, bidirectional={self.bidirectional}), but "
                f"its input has {channels}; the residual connection needs them equal."
            )

    def call(self, x):
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        y = self.rnn(ops.reshape(x, (batch, -1, x.shape[-1])))
        y = ops.reshape(y, (batch, height, width, self.rnn_output_size))
        return self.fc(y) if self.fc is not None else y

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self.with_fc else self.rnn_output_size
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "bidirectional": self.bidirectional,
            "with_fc": self.with_fc,
            "rnn_type": self.rnn_type,
        }


@_register
class VanillaSequencerBlock(Sequencer2DBlock):
    """The VanillaSequencer block: :class:`Sequencer2DBlock` with :class:`BiLSTM1D`
    (one RNN over all ``H*W`` tokens) as the token mixer. ``(B, H, W, C) -> same``.

    ``with_fc`` defaults to ``False`` as in the paper (then ``2 * hidden_size``
    must equal ``C``); there is no ``union``.
    """

    def __init__(
        self,
        hidden_size,
        mlp_ratio=3.0,
        bidirectional=True,
        with_fc=False,
        rnn_type="lstm",
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        kwargs.pop("union", None)
        super().__init__(
            hidden_size,
            mlp_ratio=mlp_ratio,
            bidirectional=bidirectional,
            with_fc=with_fc,
            rnn_type=rnn_type,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            **kwargs,
        )

    def _make_token_mixer(self, name):
        return BiLSTM1D(
            self.hidden_size,
            bidirectional=self.bidirectional,
            with_fc=self.with_fc,
            rnn_type=self.rnn_type,
            name=name,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("union")
        return config


@_register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned absolute position embedding: ``x + pos``, ``pos`` of shape
    ``(1, H, W, C)`` (truncated normal, std 0.02, as the paper's ``absolute_pos_embed``).

    H and W are fixed when the layer is built, so a model using it takes one
    input size only; another size raises a ``ValueError``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.grid = None

    def build(self, input_shape):
        grid = tuple(input_shape[1:])
        if len(grid) != 3 or any(s is None for s in grid):
            raise ValueError(
                f"{self.name}: a position embedding needs a fixed (height, width, channels) "
                f"grid; got input shape {tuple(input_shape)} (give the model a fixed input_shape)."
            )
        self.grid = grid
        self.embedding = self.add_weight(
            shape=(1,) + grid,
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, x):
        if tuple(x.shape[1:]) != self.grid and None not in x.shape[1:]:
            raise ValueError(
                f"{self.name}: the position embedding is for a {self.grid[0]}x{self.grid[1]} "
                f"grid of {self.grid[2]} channels; got features of shape {tuple(x.shape)}."
            )
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def make_rnn(rnn_type, units, bidirectional, name):
    """A sequence-returning ``rnn_type`` RNN named ``name``, wrapped in
    ``Bidirectional(merge_mode="concat")`` when ``bidirectional``.

    ``Bidirectional`` copies the layer it is given through
    ``serialize``/``deserialize``. Inside ``keras.saving.load_model`` that runs in
    an object-sharing scope keyed by ``id()``: once a throwaway layer is freed, a
    later one may get its ``id`` and be "deserialized" as an earlier block's
    layer (load then fails with "Forward layer and backward layer should have
    different go_backwards value", or silently shares a layer). So the backward
    layer is passed explicitly and the forward template is kept alive.
    """
    rnn_class = RNN_TYPES[rnn_type]
    if not bidirectional:
        return rnn_class(units, return_sequences=True, name=name)
    forward = rnn_class(units, return_sequences=True)
    backward = rnn_class(units, return_sequences=True, go_backwards=True)
    rnn = keras.layers.Bidirectional(
        forward, backward_layer=backward, merge_mode="concat", name=name
    )
    object.__setattr__(rnn, "_forward_template", forward)  # untracked, keeps its id unique
    return rnn
