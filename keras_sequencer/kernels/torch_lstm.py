"""BiLSTM2D's ``"fused"`` path on the torch backend.

- :func:`bilstm2d_lstms`: every direction of both RNNs stepped together over
  the image's rows and columns (CPU inference, and training on any device).
  One GEMM projects all directions, each step gathers its rows of the
  projections and runs in place on them, one gather puts the hidden states
  back where the tokens lie. With autograd the backward is written by
  hand (:class:`BiLSTM2DRecurrence`).
- :func:`torch_native_lstm`: one ``torch.lstm`` call (cuDNN) per RNN, for
  inference on a GPU.

Both read the Keras ``LSTMCell`` variables (gate order i, f, g, o, as
``keras.layers.LSTM`` and ``torch.nn.LSTM``).
"""

import functools

import torch

from keras_sequencer.kernels import torch_gemm
from keras_sequencer.kernels.generic import cell_weight

# Gate order inside the recurrence: the three sigmoid gates, then the tanh one,
# so that each step activates two contiguous slices. Keras stores i, f, g, o.
IFOG = (0, 1, 3, 2)


def torch_native_lstm(sequence, cells):
    """A (bi)directional LSTM over time-major ``(T, N, C)`` by ``torch.lstm``,
    the kernel behind ``torch.nn.LSTM`` (cuDNN on GPU, oneDNN on CPU), with
    the Keras cells' variables: ``(T, N, D * U)`` for ``D`` cells
    ``[forward]`` or ``[forward, backward]``, like :func:`generic.fused_lstm`.

    BiLSTM2D uses it for inference on a GPU. torch's layout is the transpose
    of Keras's (``W_ih = kernel.T``), the gate order is the same and Keras's
    one bias goes in ``b_ih``.
    """
    weights = []
    for cell in cells:
        bias = cell_weight(cell, "bias", sequence.dtype)
        weights += [
            cell_weight(cell, "kernel", sequence.dtype).T,
            cell_weight(cell, "recurrent_kernel", sequence.dtype).T,
            bias,
            torch.zeros_like(bias),
        ]
    zeros = sequence.new_zeros((len(cells), sequence.shape[1], cells[0].units))
    outputs, _, _ = torch.lstm(
        sequence,
        (zeros, zeros),
        weights,
        True,  # has_biases
        1,  # num_layers
        0.0,  # dropout
        False,  # train
        len(cells) == 2,  # bidirectional
        False,  # batch_first
    )
    return outputs


def bilstm2d_lstms(x, cells, directions):
    """Runs LSTMs along the rows and columns of ``x`` ``(B, H, W, C)``.

    Args:
        x: the tokens.
        cells: ``R`` ``keras.layers.LSTMCell`` s with the same units ``U``.
        directions: for each cell ``(axis, backward)``: ``axis`` 1 runs down
            the columns (sequences of length H), 2 along the rows (length W);
            ``backward`` runs the sequence from its end.

    Returns:
        ``(B, H, W, R * U)``: each cell's hidden state at each token, the cells
        in the given order (``[v fwd, v bwd, h fwd, h bwd]`` is BiLSTM2D's
        ``cat`` union).
    """
    batch, height, width, channels = x.shape
    units = cells[0].units
    kernel, bias, recurrent = stepping_weights(cells, x.dtype)
    projections = torch_gemm.linear(x.reshape(-1, channels), kernel, bias).view(-1, 4 * units)
    plan = stepping_plan(batch, height, width, tuple(directions), x.device)
    if torch.is_grad_enabled() and (projections.requires_grad or recurrent.requires_grad):
        hidden = BiLSTM2DRecurrence.apply(projections, recurrent, plan)
    else:
        hidden = _forward(projections, recurrent, plan, keep=False)[0]
    return hidden.view(batch, height, width, len(cells) * units)


def stepping_weights(cells, dtype):
    """The cells' variables as :func:`bilstm2d_lstms` steps them, gates i, f, o,
    g: ``kernel`` ``(C, R * 4U)``, ``bias`` ``(R * 4U,)`` and ``recurrent``
    ``(R, U, 4U)``, in ``dtype``.

    Without autograd (inference) the result is cached on the first cell and
    rebuilt only when a variable changed (a new tensor, or an in-place write
    such as ``assign``, ``load_weights`` or an optimizer step, which bumps the
    tensor's version counter) or ``dtype`` differs: the reorder is three
    copies of every LSTM weight, a visible share of a forward pass. The cache
    holds one such copy per BiLSTM2D.
    """
    sources = [cell_var.value for c in cells for cell_var in (c.kernel, c.bias, c.recurrent_kernel)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
        return _reordered_weights(cells, dtype)  # in the autograd graph: never cached
    key = (dtype, tuple((t.data_ptr(), t._version) for t in sources))
    cached = cells[0].__dict__.get("_stepping_weights")
    if cached is not None and cached[0] == key and all(a is b for a, b in zip(cached[1], sources)):
        return cached[2]
    weights = _reordered_weights(cells, dtype)
    # the source tensors themselves are kept, so their ids stay theirs
    cells[0].__dict__["_stepping_weights"] = (key, sources, weights)
    return weights


def _reordered_weights(cells, dtype):
    units = cells[0].units
    kernel = _gate_major([cell_weight(c, "kernel", dtype) for c in cells], units)
    bias = _gate_major([cell_weight(c, "bias", dtype) for c in cells], units)
    recurrent = (
        _gate_major([cell_weight(c, "recurrent_kernel", dtype) for c in cells], units)
        .view(units, len(cells), 4 * units)
        .transpose(0, 1)
    )  # (R, U, 4U)
    return kernel, bias, recurrent


def _gate_major(tensors, units):
    """Concatenates the cells' ``(..., 4U)`` tensors along the last axis with
    each one's gates reordered to i, f, o, g: ``(..., R * 4U)``, one copy."""
    return torch.cat([t.view(*t.shape[:-1], 4, units)[..., g, :] for t in tensors for g in IFOG], dim=-1)


@functools.lru_cache(maxsize=64)
def stepping_plan(batch, height, width, directions, device):
    """Where each LSTM reads its inputs at each step.

    The projections are rows ``token * R + r`` (tokens in ``(B, H, W)`` order,
    ``R = len(directions)``). LSTMs whose sequences have the same length and
    batch (all of them on a square map) step together as a group. Returns
    ``(groups, inverse)``: per group ``(members, steps, n, index)`` with
    ``index`` ``(steps * len(members) * n,)`` listing the rows in stepping
    order (``(T, G, N)``: a backward LSTM's time reversed); ``inverse`` is the
    inverse permutation of all groups' indices concatenated, taking the
    stepping order back to the rows.
    """
    rnns = len(directions)
    tokens = torch.arange(batch * height * width, device=device).view(batch, height, width)
    groups = {}
    for r, (axis, backward) in enumerate(directions):
        seq = tokens.permute(axis, 0, 3 - axis)  # (T, B, T'): time first
        if backward:
            seq = seq.flip(0)
        rows = seq.reshape(seq.shape[0], -1) * rnns + r  # (T, N)
        groups.setdefault(tuple(rows.shape), []).append((r, rows))
    plan, order = [], []
    for (steps, n), members in groups.items():
        index = torch.stack([rows for _, rows in members], dim=1).reshape(-1)
        plan.append((tuple(r for r, _ in members), steps, n, index))
        order.append(index)
    order = torch.cat(order)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    return tuple(plan), inverse


def _group_weights(recurrent, members):
    if list(members) == list(range(recurrent.shape[0])):
        return recurrent
    return recurrent[list(members)]


def _forward(projections, recurrent, plan, keep):
    """Runs every group; returns the hidden states as rows ``(token * R + r,
    U)`` and, with ``keep``, per group what the backward needs."""
    groups, inverse = plan
    hidden, saved = [], []
    for members, steps, n, index in groups:
        # with keep every step's gates are kept; without, one step's buffer is reused
        z = projections.new_empty((steps if keep else 1, len(members), n, projections.shape[1]))
        states = _steps(projections, index.view(steps, -1), z, _group_weights(recurrent, members), keep)
        hidden.append(states[0][1:])
        saved.append((z, *states))
    return _token_rows(hidden, inverse), saved


def _token_rows(per_group, inverse):
    """The groups' ``(K, G, N, D)`` tensors in stepping order -> rows
    ``(token * R + r, D)``: one gather by the plan's inverse permutation."""
    rows = [t.reshape(-1, t.shape[-1]) for t in per_group]
    return (rows[0] if len(rows) == 1 else torch.cat(rows)).index_select(0, inverse)


@torch.no_grad()  # in place on views; nothing here is differentiated by autograd
def _steps(projections, index, z, recurrent, keep):
    """The recurrence from zero states over the input projections
    ``projections`` ``(token * R + r, 4U)`` (bias included, gates i, f, o, g),
    step ``k`` reading rows ``index[k]`` (``index`` ``(K, R * N)``), with
    ``recurrent`` ``(R, U, 4U)``.

    Each step gathers its rows into ``z`` (``(K, R, N, 4U)`` with ``keep``,
    else ``(1, R, N, 4U)``, reused) just before it needs them and activates
    the gates there in place: they arrive in cache, where a gather of all
    steps up front left each step to read its rows back from memory.
    Returns ``hidden``
    ``(K + 1, R, N, U)`` (``hidden[0]`` the zero state) and, with ``keep``,
    every cell state (``(K + 1, R, N, U)``) and ``tanh`` of it (``(K, R, N,
    U)``); ``z`` then holds every step's activated gates."""
    _, rnns, n, four_units = z.shape
    steps, units = index.shape[0], four_units // 4
    hidden = z.new_empty((steps + 1, rnns, n, units))
    hidden[0].zero_()
    if keep:
        cells = z.new_empty((steps + 1, rnns, n, units))
        tanh_cells = z.new_empty((steps, rnns, n, units))
    else:
        cells = z.new_empty((2, rnns, n, units))  # previous and current, reused
        tanh_cells = z.new_empty((1, rnns, n, units))
    cells[0].zero_()
    # every step's views made up front (one unbind each, not ~10 indexings a step)
    z_k, sigmoid_k, tanh_k = z.unbind(0), z[..., : 3 * units].unbind(0), z[..., 3 * units :].unbind(0)
    rows_k = z.view(z.shape[0], rnns * n, four_units).unbind(0)
    i_k, f_k, o_k, g_k = (t.unbind(0) for t in z.split(units, dim=-1))
    h_k, c_k, tanh_c_k, index_k = hidden.unbind(0), cells.unbind(0), tanh_cells.unbind(0), index.unbind(0)
    for k in range(steps):
        j = k if keep else 0
        torch.index_select(projections, 0, index_k[k], out=rows_k[j])
        if k:
            z_k[j].baddbmm_(h_k[k], recurrent)
        sigmoid_k[j].sigmoid_()
        tanh_k[j].tanh_()
        c_prev, c = (c_k[k], c_k[k + 1]) if keep else (c_k[k % 2], c_k[(k + 1) % 2])
        tanh_c = tanh_c_k[k] if keep else tanh_c_k[0]
        torch.mul(f_k[j], c_prev, out=c)
        c.addcmul_(i_k[j], g_k[j])
        torch.tanh(c, out=tanh_c)
        torch.mul(o_k[j], tanh_c, out=h_k[k + 1])
    return (hidden, cells, tanh_cells) if keep else (hidden,)


def _steps_backward(grad_hidden, gates, recurrent, hidden, cells, tanh_cells, with_recurrent_grad):
    """The gradients of :func:`_steps` with respect to ``z`` and (with
    ``with_recurrent_grad``, else ``None``) ``recurrent``, given
    ``grad_hidden`` ``(K, R, N, U)``: per step 10 kernels, one ``baddbmm``
    carrying the hidden state's gradient back (and adding the output's); the
    recurrent kernel's gradient for all steps is one GEMM."""
    steps, rnns, n, units = tanh_cells.shape
    grad_z = torch.empty_like(gates)
    recurrent_t = recurrent.transpose(1, 2)
    grad_gates = gates.new_empty((rnns, n, 4 * units))  # d loss / d activated gates
    da_i, da_f, da_o, da_g = grad_gates.split(units, dim=-1)
    grad_gates_sigmoid = grad_gates[..., : 3 * units]
    dh_o = gates.new_empty((rnns, n, units))
    dc = gates.new_zeros((rnns, n, units))
    i_k, f_k, o_k, g_k = (t.unbind(0) for t in gates.split(units, dim=-1))
    sigmoid_k, dz_k = gates[..., : 3 * units].unbind(0), grad_z.unbind(0)
    dz_sigmoid_k, dz_tanh_k = grad_z[..., : 3 * units].unbind(0), grad_z[..., 3 * units :].unbind(0)
    grad_h_k, c_k, tanh_c_k = grad_hidden.unbind(0), cells.unbind(0), tanh_cells.unbind(0)
    dh = grad_h_k[steps - 1]
    for k in reversed(range(steps)):
        tc = tanh_c_k[k]
        # h = o * tanh(c): c's gradient from h, plus the one from step k + 1
        torch.mul(dh, o_k[k], out=dh_o)
        dc.add_(torch.ops.aten.tanh_backward(dh_o, tc))
        torch.mul(dc, g_k[k], out=da_i)
        torch.mul(dc, c_k[k], out=da_f)
        torch.mul(dh, tc, out=da_o)
        torch.mul(dc, i_k[k], out=da_g)
        torch.ops.aten.sigmoid_backward.grad_input(grad_gates_sigmoid, sigmoid_k[k], grad_input=dz_sigmoid_k[k])
        torch.ops.aten.tanh_backward.grad_input(da_g, g_k[k], grad_input=dz_tanh_k[k])
        dc.mul_(f_k[k])  # c = f * c_prev + ...: the gradient carried to step k - 1
        if k > 0:
            dh = torch.baddbmm(grad_h_k[k - 1], dz_k[k], recurrent_t)
    if not with_recurrent_grad:
        return grad_z, None
    return grad_z, torch.einsum("krnu,krng->rug", hidden[:-1], grad_z)


class BiLSTM2DRecurrence(torch.autograd.Function):
    """:func:`bilstm2d_lstms`'s recurrence with a hand-written backward:
    ``(projections (token * R + r, 4U), recurrent (R, U, 4U), plan)`` ->
    hidden rows ``(token * R + r, U)``.

    Autograd over the per-step ops would record ~12 nodes a step and run ~20
    small kernels a step plus a recurrent weight-gradient GEMM per step. Here
    the forward keeps the activated gates and cell states; the backward walks
    the steps (:func:`_steps_backward`) and computes the recurrent kernel's
    gradient for all steps as one GEMM at the end, as cuDNN and oneDNN do.
    The layout permutations are gathers by the plan's indices both ways.
    """

    @staticmethod
    def forward(ctx, projections, recurrent, plan):
        hidden, saved = _forward(projections, recurrent, plan, keep=True)
        ctx.plan = plan
        ctx.save_for_backward(recurrent, *[t for group in saved for t in group])
        return hidden

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows):
        recurrent, *saved = ctx.saved_tensors
        groups, inverse = ctx.plan
        grad_recurrent = torch.zeros_like(recurrent) if ctx.needs_input_grad[1] else None
        grad_z = []
        for g, (members, _steps, _n, index) in enumerate(groups):
            gates, hidden, cells, tanh_cells = saved[4 * g : 4 * g + 4]
            grad_hidden = grad_rows.index_select(0, index).view(tanh_cells.shape)
            dz, dr = _steps_backward(
                grad_hidden,
                gates,
                _group_weights(recurrent, members),
                hidden,
                cells,
                tanh_cells,
                with_recurrent_grad=grad_recurrent is not None,
            )
            grad_z.append(dz)
            if grad_recurrent is not None:
                grad_recurrent[list(members)] += dr
        return _token_rows(grad_z, inverse), grad_recurrent, None
