"""keras_sequencer.kernels.jax: the hand-written backward of the recurrence against
autodiff, and the LayerNorm fences of a training call."""

import functools

import keras
import numpy as np
import pytest

from keras_sequencer import layers
from keras_sequencer.kernels import backend_kernels, generic
from keras_sequencer.layers import BiLSTM2D
from keras_sequencer.rnn import rnn_cells
from tests.helpers import (
    random_images,
)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the custom VJPs are JAX's")
@pytest.mark.parametrize("reverse, num_seq", [(True, 2), (False, 1), (True, 1), (False, 3)])
def test_jax_hand_written_backwards_equal_autodiff(reverse, num_seq):
    """On JAX both recurrences differentiate with a hand-written backward (the
    unrolled loop's, and the reverse scan of the scanned one); their outputs
    and gradients (w.r.t. the inputs and every LSTM variable) equal those of
    JAX's own derivative of the plain unrolled loop."""
    import jax

    layer = BiLSTM2D(5, bidirectional=reverse, implementation="fused")
    layer.build((2, 4, 3, 6))
    cells = [rnn_cells(layer.rnn_v), rnn_cells(layer.rnn_h), rnn_cells(layer.rnn_v)][:num_seq]
    variables = list({id(v): v for seq_cells in cells for cell in seq_cells for v in cell.trainable_variables}.values())
    values = [v.value for v in variables]
    x = keras.ops.convert_to_tensor(random_images(1, 4, 3, 6)[0])  # (T, N, C)
    weights = keras.ops.convert_to_tensor(random_images(4, 3, 10 if reverse else 5, 1, seed=4)[..., 0])

    def loss(x, values, fused_lstm, unroll):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            sequences = [x * (s + 1.0) for s in range(num_seq)]
            outputs = fused_lstm(sequences, cells, reverse, unroll=unroll)
        return sum(keras.ops.sum(y * weights) for y in outputs)

    def value_and_grads(fused_lstm, unroll):
        fn = functools.partial(loss, fused_lstm=fused_lstm, unroll=unroll)
        value, grads = jax.value_and_grad(fn, argnums=(0, 1))(x, values)
        return [value, *jax.tree_util.tree_leaves(grads)]

    expected = value_and_grads(generic.fused_lstm, True)  # autodiff of the unrolled loop
    assert len(expected) == 2 + len(variables)
    for unroll in (True, False):
        got = value_and_grads(backend_kernels().fused_lstm, unroll)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=1e-5)
            assert np.abs(np.asarray(e)).max() > 0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's LayerNorm fences")
def test_jax_training_fences_each_layer_norm_and_keeps_the_numbers():
    """On JAX a block's training call fences both LayerNorms with
    ``optimization_barrier`` (for XLA's fusion of their backward); the
    inference call has none; both give the same numbers."""
    import jax

    block = layers.Sequencer2DBlock(4)
    x = keras.ops.convert_to_tensor(np.random.RandomState(0).rand(2, 3, 5, 6).astype("float32"))
    block.build(x.shape)

    def jaxpr(training):
        return str(jax.make_jaxpr(lambda t: block(t, training=training))(x))

    assert jaxpr(True).count("optimization_barrier") == 4  # in and out of norm1, norm2
    assert "optimization_barrier" not in jaxpr(False)
    np.testing.assert_allclose(
        np.asarray(block(x, training=True)), np.asarray(block(x, training=False)), atol=1e-6, rtol=0
    )
