"""keras_sequencer.training.optim: the recipe's AdamW (no decay on biases and norms,
timm's epsilon)."""

import keras
import numpy as np
import pytest

from keras_sequencer import training
from tests.helpers import tiny_config


def test_weight_decay_skips_biases_and_norms():
    config = tiny_config("unused", lr=0.1, weight_decay=0.5, warmup_epochs=0, clip_grad=1.0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, keras.layers.LSTM(2)(keras.layers.Reshape((16, 3))(x)))
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    # Zero gradients: Adam's step is 0, so only the decoupled decay changes weights.
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    decayed = kept = 0
    for old, variable in zip(before, model.trainable_variables):
        new = keras.ops.convert_to_numpy(variable)
        if old.ndim <= 1:  # biases, LayerNorm scales/offsets
            np.testing.assert_array_equal(new, old, err_msg=variable.path)
            kept += 1
        else:
            np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-6, err_msg=variable.path)
            decayed += 1
    assert (decayed, kept) == (3, 4)  # Dense/LSTM kernels; Dense/LSTM bias, LN gamma/beta


def test_adamw_uses_the_epsilon_of_timms_adamw():
    """timm's ``create_optimizer_v2("adamw")`` is ``torch.optim.AdamW`` with its default eps."""
    import inspect

    torch = pytest.importorskip("torch")
    config = tiny_config("unused")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    assert optimizer.epsilon == inspect.signature(torch.optim.AdamW).parameters["eps"].default
    assert (optimizer.beta_1, optimizer.beta_2) == inspect.signature(torch.optim.AdamW).parameters["betas"].default


def _lstm_pair(units=3, features=2, seed=0):
    """A Keras LSTM model and a torch ``nn.LSTM`` with the same weights
    (``kernel = W_ih.T``, ``recurrent_kernel = W_hh.T``, ``bias = b_ih + b_hh``)."""
    import torch

    torch.manual_seed(seed)
    reference = torch.nn.LSTM(features, units, batch_first=True)
    model = keras.Sequential([keras.Input((5, features)), keras.layers.LSTM(units)])
    weights = {name: p.detach().numpy() for name, p in reference.named_parameters()}
    model.layers[0].set_weights(
        [weights["weight_ih_l0"].T, weights["weight_hh_l0"].T, weights["bias_ih_l0"] + weights["bias_hh_l0"]]
    )
    return model, reference


@pytest.mark.parametrize("rnn_bias_step", ["torch", "keras"])
def test_the_lstm_bias_moves_as_pytorchs_two_biases(rnn_bias_step, monkeypatch):
    """Three AdamW steps on one LSTM, Keras against PyTorch (timm's optimizer:
    decay on the matrices only): with ``rnn_bias_step="torch"`` the Keras
    weights follow PyTorch's and the bias ``b_ih + b_hh``; with ``"keras"``
    the bias's first step is half the pair's (then the trajectories part).
    Epsilon is tiny on both sides: Keras adds it before the bias correction,
    PyTorch after, which shows on entries with tiny gradients."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(training.optim, "ADAMW_EPSILON", 1e-12)
    config = tiny_config("unused", lr=0.05, weight_decay=0.1, warmup_epochs=0, rnn_bias_step=rnn_bias_step)
    model, reference = _lstm_pair()
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    (bias,) = training.optim.two_bias_variables(model)
    assert optimizer.torch_rnn_biases == (rnn_bias_step == "torch")
    assert bias.path.endswith("lstm_cell/bias") and len(bias.shape) == 1
    model.compile(optimizer=optimizer, loss="mse")
    matrices = [p for p in reference.parameters() if p.ndim > 1]
    vectors = [p for p in reference.parameters() if p.ndim <= 1]
    torch_optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}], lr=0.05, eps=1e-12
    )
    rng = np.random.default_rng(0)
    start = reference.bias_ih_l0.detach().numpy() + reference.bias_hh_l0.detach().numpy()
    for _ in range(3 if rnn_bias_step == "torch" else 1):
        x, y = rng.normal(size=(4, 5, 2)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
        model.train_on_batch(x, y)
        torch_optimizer.zero_grad()
        out, _ = reference(torch.from_numpy(x))
        torch.nn.functional.mse_loss(out[:, -1], torch.from_numpy(y)).backward()
        torch_optimizer.step()
    kernel, recurrent, ours = model.layers[0].get_weights()
    np.testing.assert_allclose(kernel, reference.weight_ih_l0.detach().numpy().T, atol=2e-5)
    np.testing.assert_allclose(recurrent, reference.weight_hh_l0.detach().numpy().T, atol=2e-5)
    theirs = reference.bias_ih_l0.detach().numpy() + reference.bias_hh_l0.detach().numpy()
    if rnn_bias_step == "torch":
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    else:  # one bias, one step: half of the pair's movement
        np.testing.assert_allclose(ours - start, (theirs - start) / 2, atol=2e-5)


@pytest.mark.parametrize("rnn_bias_step", ["torch", "keras"])
def test_the_recipe_optimizer_saves_its_rnn_bias_step(rnn_bias_step):
    config = tiny_config("unused", rnn_bias_step=rnn_bias_step)
    model, _ = _lstm_pair()
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is training.optim.RecipeAdamW
    assert restored.torch_rnn_biases == (rnn_bias_step == "torch")


def test_the_two_biases_of_a_sequencer_are_its_lstm_biases():
    from keras_sequencer.models import Sequencer2D
    from tests.helpers import MICRO_ARCH

    model = Sequencer2D(**MICRO_ARCH, input_shape=(16, 16, 3), classes=2)
    biases = training.optim.two_bias_variables(model)
    # one per LSTM direction: 2 axes x 2 directions per block
    assert len(biases) == 4 * sum(MICRO_ARCH["layers"])
    assert all(len(v.shape) == 1 and v.path.endswith("lstm_cell/bias") for v in biases)


@pytest.mark.parametrize("adam_eps", ["torch", "keras"])
def test_adam_eps_torch_steps_as_pytorchs_adamw(adam_eps):
    """Where gradients are as small as epsilon, ``adam_eps="torch"`` takes
    PyTorch's AdamW steps (epsilon after the bias correction) and ``"keras"``
    Keras's (before it: smaller steps at first); the optimizer saves the choice."""
    torch = pytest.importorskip("torch")
    config = tiny_config("unused", lr=0.01, weight_decay=0.05, warmup_epochs=0, adam_eps=adam_eps)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    reference = torch.nn.Linear(3, 2)
    kernel, bias = model.layers[0].get_weights()
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(kernel.T.copy()))
        reference.bias.copy_(torch.from_numpy(bias))
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    assert optimizer.torch_epsilon == (adam_eps == "torch")
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.torch_epsilon == optimizer.torch_epsilon
    model.compile(optimizer=optimizer, loss="mse")
    torch_optimizer = torch.optim.AdamW(
        [{"params": [reference.weight], "weight_decay": 0.05}, {"params": [reference.bias], "weight_decay": 0.0}],
        lr=0.01,
        eps=training.optim.ADAMW_EPSILON,
    )
    rng = np.random.default_rng(0)
    start = kernel.copy()
    for _ in range(3):
        # inputs and targets ~1e-7: gradients of the order of epsilon
        x, y = (1e-7 * rng.normal(size=shape).astype("float32") for shape in ((8, 3), (8, 2)))
        model.train_on_batch(x, y)
        torch_optimizer.zero_grad()
        torch.nn.functional.mse_loss(reference(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        torch_optimizer.step()
    ours = model.layers[0].get_weights()[0] - start
    theirs = reference.weight.detach().numpy().T - start
    if adam_eps == "torch":
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-7)
    else:  # Keras's larger effective epsilon: smaller Adam steps, the same decay
        assert np.abs(ours - theirs).max() > 1e-4
