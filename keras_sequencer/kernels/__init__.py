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
  ``implementation="fused"``, over its ``block.parts()``
  (:class:`.generic.BlockParts`) by :func:`.generic.block_forward`.
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


# ------------------------------------------------ implementation="auto" -----
# How a BiLSTM2D may run its recurrences (``"auto"`` resolves to one of the others).
IMPLEMENTATIONS = ("auto", "keras", "fused")


def accelerator_platform():
    """``"gpu"`` when the running backend computes on a GPU, else ``"cpu"``.

    JAX: ``jax.default_backend()``; torch: the device Keras places tensors on
    (``keras.src.backend.torch.core.get_device()``, "cuda..." for a GPU);
    TensorFlow: whether ``tf.config.list_logical_devices("GPU")`` lists one.
    Any other backend counts as CPU.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "torch":
        from keras.src.backend.torch import core

        return "gpu" if str(core.get_device()).startswith("cuda") else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"


def resolve_implementation(implementation, rnn_type="lstm", platform=None):
    """The implementation a ``BiLSTM2D`` runs: ``"keras"`` or ``"fused"``.

    An explicit ``"keras"`` / ``"fused"`` is kept. ``"auto"`` picks:

    - ``"keras"`` for GRU and SimpleRNN (the fused recurrence is LSTM only);
    - ``"keras"`` for an LSTM on a GPU (``platform`` ``"gpu"``): the layers'
      default settings (tanh/sigmoid, bias, no unrolling, no mask) let
      ``keras.layers.LSTM`` run cuDNN's fused kernel, forwards and backwards;
    - ``"fused"`` for an LSTM on CPU: one batched recurrence for every
      direction of both RNNs (:mod:`.generic` and the backend's module).

    ``platform`` defaults to :func:`accelerator_platform`.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unrecognized implementation {implementation!r}; expected one of {IMPLEMENTATIONS}.")
    if implementation != "auto":
        return implementation
    if rnn_type != "lstm":
        return "keras"
    if platform is None:
        platform = accelerator_platform()
    return "keras" if platform == "gpu" else "fused"


def resolved_implementation(layer):
    """The implementation a ``BiLSTM2D`` ``layer`` runs now, for its
    ``implementation`` and ``rnn_type`` on the current backend and device
    (see :func:`resolve_implementation`)."""
    return resolve_implementation(layer.implementation, layer.rnn_type)


def resolved_implementations(model):
    """``{layer path: "keras" | "fused"}`` for every layer of ``model`` (nested
    ones included) that has a ``resolved_implementation``: what each BiLSTM2D
    and block runs on the current backend and device."""
    return {
        layer.path: layer.resolved_implementation
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if hasattr(layer, "resolved_implementation")
    }
