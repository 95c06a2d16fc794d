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
