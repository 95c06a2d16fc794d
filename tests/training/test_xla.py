"""keras_sequencer.training.xla: the input pipeline's compiled arithmetic gives
the numbers of the same ops run by TensorFlow's kernels, up to float32's last
bit (RandAugment's whole-level pixels: tests/training/test_randaugment.py)."""

import numpy as np
import tensorflow as tf

from keras_sequencer.preprocessing import normalize
from keras_sequencer.training import xla


def test_compiled_normalisation_equals_tensorflows_kernels():
    pixels = np.random.RandomState(0).uniform(-20, 280, (2, 224, 224, 3)).round().astype("float32")

    def clipped_and_normalized(image):
        return normalize(tf.clip_by_value(image, 0.0, 255.0))

    eager = clipped_and_normalized(tf.constant(pixels)).numpy()
    fused = xla.compiled(clipped_and_normalized)(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(fused, eager, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(clipped_and_normalized(tf.constant(pixels + 1)).numpy(), eager)
    assert fused.dtype == np.float32 and np.isfinite(fused).all()


def test_compiled_without_jit_is_a_plain_function():
    twice = xla.compiled(lambda x: 2 * x, jit=False)
    assert twice.experimental_get_compiler_ir is not None  # a tf.function
    assert float(twice(tf.constant(3.0))) == 6.0
