"""keras_sequencer.kernels.tensorflow: inference runs each fused block under XLA, and
alike blocks share one compiled function with their own weights."""

import keras
import numpy as np
import pytest

from keras_sequencer.layers import Sequencer2DBlock
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
