"""Kernels for the TensorFlow backend: the fused recurrence with its gates
split by one ``Split`` op, and a fused block's inference call compiled as one
XLA cluster. The other kernels are :mod:`.generic`'s."""

import functools

import tensorflow as tf
from keras import ops

from keras_sequencer.kernels import generic
from keras_sequencer.kernels.generic import (  # noqa: F401  (the kernel API)
    dense,
    layer_norm,
    patch_embedding,
    residual_dense,
)


def split_gates(z, units):
    """:func:`generic.lstm_gates` by one ``Split`` into the four gates
    ``(..., 4U) -> 4 x (..., U)``: TensorFlow runs each slice of the last
    axis as its own StridedSlice copy, which made training steps slower and
    their first call longer. (On JAX the split lengthened the first training
    call, so JAX keeps slices.)"""
    i, f, g, o = ops.split(z, 4, axis=-1)
    return ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)


def fused_lstm(sequences, cells, reverse, unroll=None):
    """:func:`generic.fused_lstm` with :func:`split_gates`; TensorFlow's
    autodiff differentiates it."""
    return generic.recurrence(sequences, cells, reverse, unroll, gates=split_gates)


def bilstm2d(x, rnns, concat):
    """:func:`generic.bilstm2d` with this module's :func:`fused_lstm`."""
    recurrences = functools.partial(generic.grouped_recurrences, fused_lstm=fused_lstm)
    return generic.time_major_bilstm2d(x, rnns, concat, recurrences)


def fused_block(block, x, training):
    """A fused ``Sequencer2DBlock``'s call, ``(B, H, W, C) -> (B, H, W, C)``;
    for inference (``training`` false) ``block.forward_pass(x,
    training=False)`` as one XLA cluster: a ``tf.function(jit_compile=True)``
    made once per block and kept off Keras's tracking (in
    ``block.__dict__["_xla_inference_fn"]``).

    The fused path's unrolled recurrence is hundreds of small ops per block,
    which TensorFlow's graph executor runs slowly on CPU and Keras's
    ``jit_compile="auto"`` does not put under XLA there. Per block, so
    ``fit`` (slower under XLA on CPU) keeps the graph path; the first call
    compiles each block.
    """
    if training:
        return block.forward_pass(x, training=training)
    fn = block.__dict__.get("_xla_inference_fn")
    if fn is None:
        fn = tf.function(
            lambda t: block.forward_pass(t, training=False), jit_compile=True, autograph=False
        )
        object.__setattr__(block, "_xla_inference_fn", fn)
    return fn(x)
