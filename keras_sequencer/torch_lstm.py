"""The LSTM recurrence on the torch backend, for BiLSTM2D's ``"fused"`` path.

- :func:`torch_native_lstm`: inference (autograd off), one ``torch.lstm`` call
  (oneDNN on CPU, cuDNN on GPU) per RNN.
- :func:`lstm_recurrence`: training (autograd on), every direction of every
  RNN stepped together, with a hand-written backward (:class:`LSTMRecurrence`).

Both read the Keras ``LSTMCell`` variables; gate order i, f, g, o as
``keras.layers.LSTM`` and ``torch.nn.LSTM``.
"""

import torch

from keras_sequencer.layers import _cell_weight


def torch_native_lstm(sequence, cells):
    """A (bi)directional LSTM over time-major ``(T, N, C)`` by ``torch.lstm``,
    the kernel behind ``torch.nn.LSTM`` (oneDNN on CPU, cuDNN on GPU), with
    the Keras cells' variables: ``(T, N, D * U)`` for ``D`` cells
    ``[forward]`` or ``[forward, backward]``, like ``layers.fused_lstm``.

    Used for inference on torch: there one oneDNN call per RNN beats the
    batched Python recurrence (S, batch 8, 224, 2 CPU cores: ~790 -> ~740 ms);
    with autograd :func:`lstm_recurrence` trains faster than oneDNN's backward.
    torch's layout is the transpose of Keras's (``W_ih = kernel.T``), the gate
    order i, f, g, o is the same and Keras's one bias goes in ``b_ih``.
    """
    weights = []
    for cell in cells:
        bias = _cell_weight(cell, "bias", sequence.dtype)
        weights += [
            _cell_weight(cell, "kernel", sequence.dtype).T,
            _cell_weight(cell, "recurrent_kernel", sequence.dtype).T,
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


def lstm_recurrence(z, recurrent):
    """Steps ``R`` LSTMs together from zero states.

    Args:
        z: ``(K, R, N, 4U)``, the input projections (bias included) of each
            LSTM in the order it steps through them (a backward direction's
            inputs already reversed in time).
        recurrent: ``(R, U, 4U)``, each LSTM's ``recurrent_kernel``.

    Returns:
        ``(K, R, N, U)``: the hidden state after each step.

    Same numbers as stepping ``h, c`` with ``z[k] + h @ recurrent`` and the
    usual gates, with autograd; :class:`LSTMRecurrence` writes the backward
    by hand (see there).
    """
    return LSTMRecurrence.apply(z, recurrent)


class LSTMRecurrence(torch.autograd.Function):
    """:func:`lstm_recurrence` with a hand-written backward.

    Autograd over the per-step ops records ~12 nodes a step, and its backward
    runs ~20 small kernels a step plus one recurrent weight-gradient GEMM per
    step. Here the forward runs without autograd and keeps the activated gates
    and cell states; the backward walks the steps with 11 kernels each (one
    ``baddbmm`` carries the hidden-state gradient to the previous step and adds
    the output's gradient) and computes the recurrent kernel's gradient for all
    steps as one GEMM at the end, as cuDNN and oneDNN do.
    """

    @staticmethod
    def forward(ctx, z, recurrent):
        steps, rnns, n, four_units = z.shape
        units = four_units // 4
        gates = torch.empty_like(z)  # activated: sigmoid(i, f, o), tanh(g)
        cells = z.new_empty((steps + 1, rnns, n, units))  # cells[k]: state before step k
        hidden = z.new_empty((steps + 1, rnns, n, units))
        cells[0].zero_()
        hidden[0].zero_()
        tanh_cells = z.new_empty((steps, rnns, n, units))
        for k in range(steps):
            torch.baddbmm(z[k], hidden[k], recurrent, out=gates[k])
            a = gates[k].view(rnns, n, 4, units)
            a[:, :, 2].tanh_()
            a[:, :, :2].sigmoid_()
            a[:, :, 3].sigmoid_()
            i, f, g, o = a.unbind(2)
            torch.mul(f, cells[k], out=cells[k + 1])
            cells[k + 1].addcmul_(i, g)
            torch.tanh(cells[k + 1], out=tanh_cells[k])
            torch.mul(o, tanh_cells[k], out=hidden[k + 1])
        ctx.save_for_backward(recurrent, gates, cells, tanh_cells, hidden)
        return hidden[1:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hidden):
        recurrent, gates, cells, tanh_cells, hidden = ctx.saved_tensors
        steps, rnns, n, units = tanh_cells.shape
        grad_z = torch.empty_like(gates)
        recurrent_t = recurrent.transpose(1, 2)
        grad_gates = gates.new_empty((rnns, n, 4, units))  # d loss / d activated gates
        dh_o = gates.new_empty((rnns, n, units))
        dc = gates.new_zeros((rnns, n, units))
        da_i, da_f, da_g, da_o = grad_gates.unbind(2)
        dh = grad_hidden[steps - 1]
        for k in reversed(range(steps)):
            activated = gates[k].view(rnns, n, 4, units)
            i, f, g, o = activated.unbind(2)
            tc = tanh_cells[k]
            # h = o * tanh(c): c's gradient from h, plus the one from step k + 1
            torch.mul(dh, o, out=dh_o)
            dc.add_(torch.ops.aten.tanh_backward(dh_o, tc))
            torch.mul(dc, g, out=da_i)
            torch.mul(dc, cells[k], out=da_f)
            torch.mul(dc, i, out=da_g)
            torch.mul(dh, tc, out=da_o)
            dz = grad_z[k].view(rnns, n, 4, units)
            torch.ops.aten.sigmoid_backward.grad_input(grad_gates, activated, grad_input=dz)
            torch.ops.aten.tanh_backward.grad_input(da_g, g, grad_input=dz[:, :, 2])
            dc.mul_(f)  # c = f * c_prev + ...: the gradient carried to step k - 1
            if k > 0:
                dh = torch.baddbmm(grad_hidden[k - 1], grad_z[k], recurrent_t)
        grad_recurrent = None
        if ctx.needs_input_grad[1]:
            grad_recurrent = torch.einsum("krnu,krng->rug", hidden[:-1], grad_z)
        return grad_z, grad_recurrent
