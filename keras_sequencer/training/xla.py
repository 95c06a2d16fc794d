"""XLA compilation of the input pipeline's per-image and per-batch arithmetic.

A TensorFlow kernel per op makes one pass over an image's values (150,528 at
224 px) for each element-wise step, gather or copy of an augmentation; XLA's
CPU compiler fuses a chain of them into one or two loops. The operations are
the same, but XLA may fuse a multiply and an add or divide by a reciprocal, so
a float32 result can differ in its last bit. RandAugment's ops truncate to
whole pixel levels, and give exactly the pixels of the uncompiled ops on the
tests' images; the normalisation and MixUp differ by at most float32's last
bit (tests/training/test_xla.py, test_mix.py, test_randaugment.py).
"""

import functools


def compiled(fn, jit=True):
    """``fn`` as a ``tf.function`` without autograph, compiled by XLA when
    ``jit``. Called inside a ``tf.data`` function it is traced with that
    function and compiled once per input shape, on first use."""
    import tensorflow as tf

    return tf.function(fn, jit_compile=jit, autograph=False)


def cached(builder):
    """``builder(*key)`` -> a :func:`compiled` function, built once per key
    (``functools.cache``): every pipeline of the process then calls the same
    function, and XLA compiles it once per input shape rather than once per
    pipeline."""
    return functools.cache(builder)
