"""keras_sequencer.torch_lstm: the hand-written backward of the batched LSTM
recurrence equals autograd over the plain step, and numerical gradients."""

import pytest

torch = pytest.importorskip("torch")

from keras_sequencer.torch_lstm import lstm_recurrence  # noqa: E402


def autograd_recurrence(z, recurrent):
    """The textbook LSTM from zero states, differentiated by autograd."""
    units = recurrent.shape[1]
    h = z.new_zeros(z.shape[1:-1] + (units,))
    c = h
    outputs = []
    for z_k in z:
        i, f, g, o = (z_k + h @ recurrent).split(units, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs)


def _inputs(steps, rnns, n, units, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(steps, rnns, n, 4 * units, dtype=dtype, generator=generator)
    recurrent = torch.randn(rnns, units, 4 * units, dtype=dtype, generator=generator) * 0.5
    return z.requires_grad_(), recurrent.requires_grad_()


def test_gradcheck_against_finite_differences():
    z, recurrent = _inputs(4, 3, 2, 2, torch.float64)
    assert torch.autograd.gradcheck(lstm_recurrence, (z, recurrent))


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (6, 4, 5, 3), (9, 2, 7, 8)])
def test_outputs_and_gradients_equal_autograd(shape):
    z, recurrent = _inputs(*shape, torch.float32, seed=shape[0])
    # a loss that weighs every step differently and skips some outputs
    weights = torch.randn(shape[:3] + (shape[3],), generator=torch.Generator().manual_seed(9))
    weights[..., 0] = 0.0
    results = []
    for fn in (lstm_recurrence, autograd_recurrence):
        y = fn(z, recurrent)
        results.append((y.detach(), *torch.autograd.grad((y * weights).sum(), (z, recurrent))))
    for got, expected, name in zip(*results, ("outputs", "d z", "d recurrent")):
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5, msg=name)
    assert results[0][1].abs().max() > 0  # the gradient is really there


def test_gradient_of_z_only():
    """With a frozen recurrent kernel only ``z`` gets a gradient."""
    z, recurrent = _inputs(3, 2, 4, 2, torch.float32)
    recurrent = recurrent.detach()
    (grad_z,) = torch.autograd.grad(lstm_recurrence(z, recurrent).sum(), (z,))
    (expected,) = torch.autograd.grad(autograd_recurrence(z, recurrent).sum(), (z,))
    torch.testing.assert_close(grad_z, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_follows_float32(dtype, atol):
    """Under mixed precision the recurrence runs in the compute dtype."""
    z, recurrent = _inputs(5, 4, 6, 4, torch.float32)
    results = []
    for dt in (torch.float32, dtype):
        zd, rd = (t.detach().to(dt).requires_grad_() for t in (z, recurrent))
        y = lstm_recurrence(zd, rd)
        assert y.dtype == dt
        results.append([y, *torch.autograd.grad(y.sum(), (zd, rd))])
    for expected, got in zip(*results):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, atol=atol, rtol=0)
