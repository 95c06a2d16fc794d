"""Backend kernels of the Sequencer layers, behind one dispatch.

:func:`backend_kernels` returns the module for the running Keras backend,
imported on first use (so torch is never imported on JAX, nor JAX on torch).
Every module has the same functions with the same signatures, as Keras's own
``keras/src/backend/{jax,tensorflow,torch}``; a backend without a special
version of one uses :mod:`.generic`'s:

- ``fused_lstm(sequences, cells, reverse, unroll=None)``: several
  (bi)directional LSTMs over time-major ``(T, N, C)`` as one batched
  recurrence -> ``(T, N, D * U)`` each.
- ``bilstm2d(x, rnns, concat)``: the LSTMs of a fused ``BiLSTM2D`` over the
  columns and rows of ``(B, H, W, C)``.
- ``fused_block(block, x, training)``: a ``Sequencer2DBlock``'s call with
  ``implementation="fused"``.
- ``layer_norm(layer, x, training)``: a block's LayerNormalization.
- ``dense(layer, x)`` / ``residual_dense(layer, x, y, in_place=False)``: a
  Dense on the fused path, ``layer(x)`` / ``x + layer(y)``.
- ``patch_embedding(layer, x)``: a ``PatchEmbedding``'s convolution.

Modules: :mod:`.generic` (``keras.ops``; the fused recurrence and the
defaults), :mod:`.jax` (custom VJP of the recurrence, LayerNorm fences),
:mod:`.tensorflow` (split gates, XLA-compiled inference blocks),
:mod:`.torch` (fused GEMMs, in-place ops, patch GEMM) and :mod:`.torch_lstm`
(torch's in-place recurrence and its backward, cuDNN's LSTM).
"""

import keras


def backend_kernels():
    """The kernel module of ``keras.backend.backend()`` (:mod:`.generic` for a
    backend without its own, e.g. numpy)."""
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_sequencer.kernels import jax as module
    elif backend == "tensorflow":
        from keras_sequencer.kernels import tensorflow as module
    elif backend == "torch":
        from keras_sequencer.kernels import torch as module
    else:
        from keras_sequencer.kernels import generic as module
    return module
