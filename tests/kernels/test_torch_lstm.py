"""keras_sequencer.kernels.torch_lstm: the in-place recurrence over an image's rows and
columns and its hand-written backward equal autograd over a textbook LSTM laid
out with permute/flip, and numerical gradients."""

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keras_sequencer.kernels.torch_lstm import (  # noqa: E402
    BiLSTM2DRecurrence,
    _forward,
    stepping_plan,
    stepping_weights,
)

ALL_FOUR = ((1, False), (1, True), (2, False), (2, True))  # v fwd, v bwd, h fwd, h bwd


def reference(projections, recurrent, shape, directions):
    """The textbook LSTM (gates i, f, o, g), each direction's sequences taken
    with permute/flip, differentiated by autograd: rows ``(token * R + r, U)``."""
    batch, height, width = shape
    rnns, units = recurrent.shape[0], recurrent.shape[1]
    z_all = projections.view(batch, height, width, rnns, 4 * units)
    outputs = []
    for r, (axis, backward) in enumerate(directions):
        z = z_all[..., r, :].permute(axis, 0, 3 - axis, 3)  # (T, B, T', 4U)
        z = z.flip(0) if backward else z
        h = z.new_zeros(z.shape[1:-1] + (units,))
        c = h
        hs = []
        for z_k in z:
            i, f, o, g = (z_k + h @ recurrent[r]).split(units, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        y = torch.stack(hs)
        y = y.flip(0) if backward else y
        y = y.permute(1, 0, 2, 3) if axis == 1 else y.permute(1, 2, 0, 3)  # (B, H, W, U)
        outputs.append(y)
    return torch.stack(outputs, dim=3).reshape(-1, units)


def _inputs(shape, directions, units, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = shape[0] * shape[1] * shape[2] * len(directions)
    projections = torch.randn(rows, 4 * units, dtype=dtype, generator=generator)
    recurrent = torch.randn(len(directions), units, 4 * units, dtype=dtype, generator=generator)
    plan = stepping_plan(*shape, directions, torch.device("cpu"))
    return projections.requires_grad_(), (recurrent * 0.5).requires_grad_(), plan


def test_stepping_plan_groups_and_inverse():
    groups, inverse = stepping_plan(2, 3, 5, ALL_FOUR, torch.device("cpu"))
    # columns (length 3, batch 2*5) and rows (length 5, batch 2*3) step apart
    assert [(members, steps, n) for members, steps, n, _ in groups] == [
        ((0, 1), 3, 10),
        ((2, 3), 5, 6),
    ]
    order = torch.cat([index for *_, index in groups])
    assert sorted(order.tolist()) == list(range(2 * 3 * 5 * 4))
    assert torch.equal(order[inverse], torch.arange(order.numel()))
    # square: all four step together; the backward column LSTM starts at the last row
    ((members, steps, n, index),) = stepping_plan(1, 2, 2, ALL_FOUR, torch.device("cpu"))[0]
    assert (members, steps, n) == ((0, 1, 2, 3), 2, 2)
    first_step = index.view(2, 4, 2)[0]
    # rows are token * 4 + r, tokens (h, w) -> 2h + w
    assert first_step.tolist() == [[0, 4], [9, 13], [2, 10], [7, 15]]


def test_gradcheck_against_finite_differences():
    projections, recurrent, plan = _inputs((1, 2, 3), ALL_FOUR, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda p, r: BiLSTM2DRecurrence.apply(p, r, plan), (projections, recurrent))


@pytest.mark.parametrize(
    "shape, directions, units",
    [
        ((1, 1, 1), ALL_FOUR, 3),
        ((2, 4, 4), ALL_FOUR, 3),
        ((3, 5, 2), ALL_FOUR, 4),
        ((2, 3, 6), ((1, False), (1, True)), 2),  # vertical only
        ((2, 3, 4), ((1, False), (2, False)), 5),  # unidirectional, add union
    ],
)
def test_outputs_and_gradients_equal_autograd(shape, directions, units):
    projections, recurrent, plan = _inputs(shape, directions, units, torch.float32, seed=sum(shape))
    # a loss that weighs every output differently and skips some
    weights = torch.randn(projections.shape[0], units, generator=torch.Generator().manual_seed(9))
    weights[::3] = 0.0
    results = []
    for fn in (
        lambda p, r: BiLSTM2DRecurrence.apply(p, r, plan),
        lambda p, r: reference(p, r, shape, directions),
    ):
        y = fn(projections, recurrent)
        results.append((y.detach(), *torch.autograd.grad((y * weights).sum(), (projections, recurrent))))
    for got, expected, name in zip(*results, ("outputs", "d projections", "d recurrent")):
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5, msg=name)
    if min(shape[1:]) > 1:  # (with one step the recurrent kernel is never used)
        assert results[0][2].abs().max() > 0  # the recurrent gradient is really there
    # without autograd (inference) the same numbers, the projections left as they were
    before = projections.detach().clone()
    with torch.no_grad():
        hidden, _ = _forward(projections.detach(), recurrent.detach(), plan, keep=False)
    torch.testing.assert_close(hidden, results[1][0], atol=2e-6, rtol=1e-5)
    assert torch.equal(projections.detach(), before)


def test_gradient_of_projections_only():
    """With a frozen recurrent kernel only the projections get a gradient."""
    projections, recurrent, plan = _inputs((2, 3, 3), ALL_FOUR, 2, torch.float32)
    recurrent = recurrent.detach()
    (got,) = torch.autograd.grad(BiLSTM2DRecurrence.apply(projections, recurrent, plan).sum(), (projections,))
    (expected,) = torch.autograd.grad(reference(projections, recurrent, (2, 3, 3), ALL_FOUR).sum(), (projections,))
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_follows_float32(dtype, atol):
    """Under mixed precision the recurrence runs in the compute dtype."""
    projections, recurrent, plan = _inputs((2, 4, 3), ALL_FOUR, 4, torch.float32)
    results = []
    for dt in (torch.float32, dtype):
        p, r = (t.detach().to(dt).requires_grad_() for t in (projections, recurrent))
        y = BiLSTM2DRecurrence.apply(p, r, plan)
        assert y.dtype == dt
        results.append([y, *torch.autograd.grad(y.sum(), (p, r))])
    for expected, got in zip(*results):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, atol=atol, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="Keras variables are torch tensors")
def test_stepping_weights_are_cached_for_inference_only_while_unchanged():
    cells = [keras.layers.LSTMCell(3) for _ in range(2)]
    for cell in cells:
        cell.build((None, 5))
    ifog = [0, 1, 2, 3, 4, 5, 9, 10, 11, 6, 7, 8]  # i, f, o, g columns of one cell
    with torch.no_grad():
        first = stepping_weights(cells, torch.float32)
        assert all(a is b for a, b in zip(first, stepping_weights(cells, torch.float32)))
    kernel, bias, recurrent = first
    assert torch.equal(kernel[:, 12:], cells[1].kernel.value[:, ifog])
    assert torch.equal(bias[:12], cells[0].bias.value[ifog])
    assert torch.equal(recurrent[1], cells[1].recurrent_kernel.value[:, ifog])
    # an in-place write (assign, load_weights, an optimizer step) is seen
    cells[1].recurrent_kernel.assign(np.arange(36, dtype="float32").reshape(3, 12))
    with torch.no_grad():
        changed = stepping_weights(cells, torch.float32)
        half = stepping_weights(cells, torch.float16)
    assert torch.equal(changed[2][1], cells[1].recurrent_kernel.value[:, ifog])
    assert not torch.equal(changed[2][1], recurrent[1])
    assert half[0].dtype == torch.float16
    # with autograd on trainable variables: built anew each call, differentiable
    trained = stepping_weights(cells, torch.float32)
    assert trained[0].grad_fn is not None and trained[0] is not stepping_weights(cells, torch.float32)[0]
