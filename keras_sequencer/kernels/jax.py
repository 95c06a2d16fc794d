"""Kernels for the JAX backend: the fused recurrence with a hand-written
backward (``jax.custom_vjp``) and LayerNorms fenced from XLA's fusion in
training. The other kernels are :mod:`.generic`'s."""

import functools

import jax

from keras_sequencer.kernels import generic
from keras_sequencer.kernels.generic import (  # noqa: F401  (the kernel API)
    dense,
    fused_block,
    residual_dense,
)


def unrolled_lstm_with_vjp(projections, recurrent, per_seq, reverse):
    """:func:`generic.unrolled_lstm` as a ``jax.custom_vjp`` with
    :func:`generic.unrolled_lstm_backward`: projections ``S x (T, N, D, 4U)``
    and recurrent kernels ``(S*D, U, 4U)`` -> outputs ``S x (T, N, D*U)``.

    The forward is unchanged, so inference compiles as without it; in
    training XLA's own derivative of the unrolled loop ran slower than this
    backward (one matmul a step and the recurrent kernels' gradient as one
    matmul at the end). TensorFlow's graph executor runs the hand-written
    backward slower than its autodiff, so only JAX uses it."""

    @jax.custom_vjp
    def run(projections, recurrent):
        return generic.unrolled_lstm(projections, recurrent, per_seq, reverse)[0]

    def forward(projections, recurrent):
        outputs, saved = generic.unrolled_lstm(projections, recurrent, per_seq, reverse)
        return outputs, (recurrent, saved)

    def backward(residuals, output_grads):
        recurrent, saved = residuals
        return generic.unrolled_lstm_backward(recurrent, saved, output_grads, per_seq, reverse)

    run.defvjp(forward, backward)
    return run(projections, recurrent)


def scanned_lstm_with_vjp(projections, recurrent, per_seq, reverse):
    """:func:`generic.scanned_lstm` as a ``jax.custom_vjp``: projections
    ``S x (T, N, D, 4U)`` and recurrent kernels ``(S*D, U, 4U)`` -> outputs
    ``S x (T, N, D*U)``. The forward is one ``lax.scan`` that keeps the
    steps' activations (:func:`generic.scanned_lstm_states`), the backward one
    reverse ``lax.scan`` (:func:`generic.scanned_lstm_backward`)."""
    num_seq = len(projections)

    @jax.custom_vjp
    def run(projections, recurrent):
        return generic.scanned_lstm(projections, recurrent, per_seq, reverse)

    def forward(projections, recurrent):
        z = generic.stacked_inputs(projections, per_seq, reverse)
        states, saved = generic.scanned_lstm_states(z, recurrent)
        return generic.outputs_from_stacked(states, num_seq, per_seq, reverse), (recurrent, saved)

    def backward(residuals, output_grads):
        recurrent, saved = residuals
        h_grads = generic.stacked_from_outputs(output_grads, per_seq, reverse)
        z_grads, recurrent_grad = generic.scanned_lstm_backward(recurrent, saved, h_grads)
        return generic.projections_from_stacked(z_grads, num_seq, per_seq, reverse), recurrent_grad

    run.defvjp(forward, backward)
    return run(projections, recurrent)


def fused_lstm(sequences, cells, reverse, unroll=None):
    """:func:`generic.fused_lstm`, each loop differentiated by hand:
    unrolled by :func:`unrolled_lstm_with_vjp`, scanned by
    :func:`scanned_lstm_with_vjp`. Default: scanned."""
    return generic.recurrence(
        sequences,
        cells,
        reverse,
        unroll,
        unrolled=unrolled_lstm_with_vjp,
        scanned=scanned_lstm_with_vjp,
        unroll_default=False,
    )


def bilstm2d(x, rnns, concat):
    """:func:`generic.bilstm2d` with this module's :func:`fused_lstm`."""
    recurrences = functools.partial(generic.grouped_recurrences, fused_lstm=fused_lstm)
    return generic.time_major_bilstm2d(x, rnns, concat, recurrences)


def layer_norm(layer, x, training):
    """``layer(x)`` for a block's LayerNormalization; in training fenced by
    ``jax.lax.optimization_barrier`` on both sides (an identity, also in the
    backward pass). XLA's CPU compiler otherwise fuses LayerNorm's backward
    with its neighbours into slow fusions. Inference compiles without fences."""
    if not training:
        return layer(x)
    return jax.lax.optimization_barrier(layer(jax.lax.optimization_barrier(x)))


def patch_embedding(layer, x):
    """A ``PatchEmbedding``'s convolution; a plain one as one GEMM
    (:func:`generic.patch_gemm`). XLA's CPU compiler runs the kernel gradient
    of a convolution with kernel = stride (S's 1x1 and 2x2 downsamplings) far
    below the rate of the same product as a dot."""
    if not generic.is_plain_patch_convolution(layer):
        return generic.patch_embedding(layer, x)
    return generic.patch_gemm(layer, x)
