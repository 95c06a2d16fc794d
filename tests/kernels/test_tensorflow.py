"""keras_sequencer.kernels.tensorflow: inference runs each fused block under XLA, and
alike blocks share one compiled function with their own weights; in training,
alike blocks share one traced function."""

import keras
import numpy as np
import pytest

from keras_sequencer.kernels import backend_kernels, generic
from keras_sequencer.layers import BiLSTM2D, Sequencer2DBlock
from keras_sequencer.rnn import rnn_cells
from tests.helpers import (
    IMPLEMENTATIONS,
    random_images,
    to_numpy,
)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA inference")
def test_tensorflow_inference_runs_each_fused_block_under_xla():
    """On TensorFlow a fused block's inference call is one XLA cluster, with the
    graph path's numbers; a training call is not compiled."""
    import tensorflow as tf

    blocks = [Sequencer2DBlock(4, implementation=impl) for impl in IMPLEMENTATIONS]
    x = random_images(2, 5, 3, 6)
    for block in blocks:
        block.build(x.shape)
    blocks[1].set_weights(blocks[0].get_weights())
    keras_block, fused_block = blocks
    fused_block(x, training=True)
    assert "_xla_inference_fn" not in fused_block.__dict__
    got = to_numpy(fused_block(x, training=False))
    assert "_xla_inference_fn" not in keras_block.__dict__
    fn = fused_block.__dict__["_xla_inference_fn"].fn
    weights = [tf.convert_to_tensor(w) for w in fused_block.weights]
    concrete = fn.get_concrete_function(weights, tf.TensorSpec(x.shape, tf.float32))
    assert concrete.function_def.attr["_XlaMustCompile"].b  # jit_compile=True
    np.testing.assert_allclose(got, to_numpy(keras_block(x)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, to_numpy(fused_block.forward_pass(x)), atol=1e-5, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA inference")
def test_tensorflow_blocks_alike_share_one_compiled_function_with_their_own_weights():
    """Every fused block with the same configuration and weight shapes, in any
    model, runs one compiled function with its own weights as arguments
    (XLA's executables are never freed: one per block would grow with every
    model built); another configuration gets its own."""
    x = random_images(2, 5, 3, 8)
    first, second = (Sequencer2DBlock(4, implementation="fused", name=n) for n in ("a", "b"))
    other = Sequencer2DBlock(6, implementation="fused")
    for block in (first, second, other):
        block.build(x.shape)
    second.set_weights([w * 1.5 for w in first.get_weights()])
    outputs = [to_numpy(block(x, training=False)) for block in (first, second, other)]
    functions = [block.__dict__["_xla_inference_fn"].fn for block in (first, second, other)]
    assert functions[0] is functions[1] and functions[2] is not functions[0]
    for block, got in zip((first, second, other), outputs):
        np.testing.assert_allclose(got, to_numpy(block.forward_pass(x)), atol=1e-5, rtol=0)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-2


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's shared training function")
def test_tensorflow_training_blocks_alike_share_one_traced_function():
    """In training, as ``fit`` runs it, every fused block alike calls one traced,
    not inlined function with its own weights and DropPath seed state: the loss,
    the gradients w.r.t. the input and every weight, and the advanced seed states
    equal each block's own forward pass; another configuration gets its own."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)  # DropPath's seeds: masks that keep a sample of each branch
    x = tf.constant(random_images(4, 5, 3, 8))
    blocks = [Sequencer2DBlock(4, drop_path_rate=0.25, implementation="fused", name=n) for n in "ab"]
    blocks.append(Sequencer2DBlock(6, implementation="fused", name="c"))
    for block in blocks:
        block.build(x.shape)
    blocks[1].set_weights([w * 1.5 for w in blocks[0].get_weights()])
    weights = [w for block in blocks for w in block.trainable_weights]
    seeds = [block.drop_path.seed_generator.state for block in blocks[:2]]
    start = [v.numpy() for v in seeds]
    probe = tf.constant(random_images(4, 5, 3, 8, seed=7))

    def step(call):
        @tf.function(autograph=False)
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = x
                for block in blocks:
                    y = call(block, y)
                loss = tf.reduce_sum(y * probe)
            return [loss, *tape.gradient(loss, [x, *weights])]

        for v, s in zip(seeds, start):
            v.assign(s)
        values = [[g.numpy() for g in run(x)] for _ in range(2)]  # two draws of the DropPath masks
        return values, [v.numpy() for v in seeds]

    expected, expected_seeds = step(lambda block, y: block.forward_pass(y, training=True))
    got, got_seeds = step(lambda block, y: block(y, training=True))
    functions = [block.__dict__["_shared_training_fn"].fn for block in blocks]
    assert functions[0] is functions[1] and functions[2] is not functions[0]
    assert not np.array_equal(got_seeds[0], start[0])
    np.testing.assert_array_equal(np.array(got_seeds), np.array(expected_seeds))
    for got_step, expected_step in zip(got, expected):
        assert len(got_step) == 2 + len(weights)
        for g, e in zip(got_step, expected_step):
            np.testing.assert_allclose(g, e, atol=2e-5, rtol=1e-5)
            assert np.abs(e).max() > 0
    assert abs(got[0][0] - got[1][0]) > 1e-3  # the masks were drawn anew
    concrete = functions[0].get_concrete_function(
        [tf.TensorSpec(v.shape, v.dtype) for v in blocks[0].variables], tf.TensorSpec(x.shape, tf.float32)
    )
    assert concrete.function_def.attr["_noinline"].b


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's custom gradient")
@pytest.mark.parametrize("reverse, num_seq", [(True, 2), (False, 1), (True, 1), (False, 3)])
def test_tensorflow_scanned_backward_equals_autodiff(reverse, num_seq):
    """On TensorFlow the scanned recurrence differentiates with its hand-written
    backward (a reverse loop); in a graph, as ``fit`` runs it, and eagerly, its
    outputs and gradients (w.r.t. the inputs and every LSTM variable) equal
    TensorFlow's own (eager) derivative of the unrolled loop."""
    import tensorflow as tf

    layer = BiLSTM2D(5, bidirectional=reverse, implementation="fused")
    layer.build((2, 4, 3, 6))
    cells = [rnn_cells(layer.rnn_v), rnn_cells(layer.rnn_h), rnn_cells(layer.rnn_v)][:num_seq]
    variables = list({id(v): v for seq_cells in cells for cell in seq_cells for v in cell.trainable_variables}.values())
    x = tf.constant(random_images(1, 4, 3, 6)[0])  # (T, N, C)
    weights = tf.constant(random_images(4, 3, 10 if reverse else 5, 1, seed=4)[..., 0])

    def value_and_grads(fused_lstm, unroll, graph):
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = fused_lstm([x * (s + 1.0) for s in range(num_seq)], cells, reverse, unroll=unroll)
                value = sum(tf.reduce_sum(y * weights) for y in outputs)
            return [value, *tape.gradient(value, [x, *variables])]

        return [g.numpy() for g in (tf.function(run, autograph=False) if graph else run)(x)]

    expected = value_and_grads(generic.fused_lstm, True, graph=False)  # autodiff of the unrolled loop
    assert len(expected) == 2 + len(variables)
    for graph in (True, False):
        got = value_and_grads(backend_kernels().fused_lstm, False, graph)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
            assert np.abs(e).max() > 0
