"""Kernels for the torch backend: GEMMs with their bias (and residual) added
inside them, in-place element-wise work without autograd, the patch embedding
as one GEMM, and BiLSTM2D's recurrence in torch's own kernels
(:mod:`.torch_lstm`).

Eager torch runs each op as written, so here the fused path spells out what
XLA would fuse on the other backends: ``addmm`` instead of a matmul and a
separate bias pass, residual sums accumulated into the GEMM's output, GELU in
place, and the block's sub-layers called without Keras's per-call overhead.
"""

import keras
import torch
from keras import ops

from keras_sequencer.kernels import generic, torch_gemm, torch_lstm
from keras_sequencer.kernels.generic import layer_norm  # noqa: F401  (the kernel API)


def project(x, kernel, bias):
    """``x @ kernel + bias`` as one GEMM with the bias inside: ``(M, C) @ (C, K) +
    (K,)`` (``addmm``, or oneDNN's linear: :func:`torch_gemm.linear`)."""
    return torch_gemm.linear(x, kernel, bias)


def no_grad():
    """Whether torch runs without autograd (inference)."""
    return not torch.is_grad_enabled()


def gpu_inference(x):
    """Whether ``x`` is on a GPU without autograd (inference), where BiLSTM2D's
    LSTMs run cuDNN's kernel (``torch.lstm``)."""
    return x.device.type == "cuda" and no_grad()


def fused_lstm(sequences, cells, reverse, unroll=None):
    """:func:`generic.fused_lstm` with its input projections by :func:`project`.
    (BiLSTM2D runs :func:`bilstm2d` on torch, not this.)"""
    return generic.recurrence(sequences, cells, reverse, unroll, project=project)


def native_recurrences(sequences, cells):
    """Each ``(T, N, C)`` sequence through its cells by one ``torch.lstm``
    (cuDNN on a GPU): :func:`torch_lstm.torch_native_lstm`."""
    return [torch_lstm.torch_native_lstm(seq, seq_cells) for seq, seq_cells in zip(sequences, cells)]


def bilstm2d(x, rnns, concat):
    """:func:`generic.bilstm2d` on torch.

    For inference on a GPU each RNN runs ``torch.lstm`` (cuDNN). Otherwise
    (CPU inference, and training anywhere) every direction of every RNN is
    one projection GEMM and one batched recurrence, read and written where
    the tokens lie (:func:`torch_lstm.bilstm2d_lstms`), whose result is
    already the ``cat`` union ``(B, H, W, sum D_r)``; for a list it is split
    into views.
    """
    if gpu_inference(x):
        return generic.time_major_bilstm2d(x, rnns, concat, native_recurrences)
    cells, directions = [], []
    for axis, rnn_cells in rnns:  # axis of x the sequences run along
        cells += rnn_cells
        directions += [(axis, d == 1) for d in range(len(rnn_cells))]  # [fwd, bwd]
    y = torch_lstm.bilstm2d_lstms(x, cells, directions)  # (B, H, W, R*U)
    if concat:
        return y
    if len(rnns) == 1:
        return [y]
    rnn_size = len(rnns[0][1]) * cells[0].units  # D_r: both RNNs have the same
    return list(y.split(rnn_size, dim=-1))


def is_plain_dense(layer):
    """Whether a Dense is linear with a bias and not quantized (LoRA is inside
    ``layer.kernel``): ``y @ kernel + bias`` exactly."""
    return layer.activation is keras.activations.linear and layer.bias is not None and layer.quantization_mode is None


def dense(layer, x):
    """``layer(x)`` for a ``keras.layers.Dense`` over ``(..., C)``: a plain
    Dense (:func:`is_plain_dense`) runs as one ``addmm`` over the flattened
    tokens, the bias fused into the GEMM, where Keras's call adds it in a
    second pass over the output."""
    if not is_plain_dense(layer):
        return layer(x)
    kernel, bias = (ops.cast(v, x.dtype) for v in (layer.kernel, layer.bias))
    y = project(x.reshape(-1, x.shape[-1]), kernel, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def residual_dense(layer, x, y, in_place=False):
    """``x + layer(y)`` for a plain ``keras.layers.Dense`` (see :func:`dense`):
    the output ``(..., C)`` starts as ``x + bias`` (one pass) and the GEMM
    accumulates into it in place (``addmm_``), where ``x + (y @ kernel +
    bias)`` costs a bias copy, the GEMM and a separate add. With ``in_place``
    (a contiguous ``x`` that nothing else reads, no autograd) the result is
    written over ``x`` itself: no new buffer. Where oneDNN runs the GEMMs
    (:func:`torch_gemm.library`) it adds ``x`` inside its GEMM instead
    (:func:`torch_gemm.residual_linear`), into a new buffer."""
    if not is_plain_dense(layer):
        return x + layer(y)
    kernel, bias = (ops.cast(v, y.dtype) for v in (layer.kernel, layer.bias))
    if x.is_contiguous():  # oneDNN adds the residual inside its GEMM (torch_gemm.library)
        fused = torch_gemm.residual_linear(x.view(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), kernel, bias)
        if fused is not None:
            return fused.view(x.shape)
    if in_place and x.is_contiguous() and x.dtype == bias.dtype:
        out = x.view(-1, x.shape[-1]).add_(bias)
    else:
        out = torch.add(x, bias).reshape(-1, x.shape[-1])  # (tokens, C), contiguous
    out.addmm_(y.reshape(-1, y.shape[-1]), kernel)
    return out.view(x.shape)


def gelu(x):
    """Exact GELU of the MLP's hidden activations ``(B, H, W, mlp_ratio * C)``,
    the block's largest tensor; without autograd in place on the fresh GEMM
    output (``gelu_``): no second buffer of that size to write."""
    if no_grad():
        return torch.ops.aten.gelu_(x)
    return ops.gelu(x, approximate=False)


def sublayer(layer, *args, **kwargs):
    """``layer(*args, **kwargs)`` for a block's built sub-layer by
    ``layer.call``: eager torch pays Keras's ``Layer.__call__`` (input
    conversion, autocast and call-context scopes, loss tracking) on every
    call, and the block's own ``__call__`` has already done that work for its
    input."""
    if layer.built:
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def fused_block(block, x, training):
    """A fused ``Sequencer2DBlock``'s call on torch, ``(B, H, W, C) -> (B, H,
    W, C)``: :func:`generic.block_forward` over ``block.parts()`` with the
    sub-layers called by :func:`sublayer`, the Dense layers by :func:`dense`,
    GELU by :func:`gelu` and, unless DropPath has to scale a branch (training
    with ``drop_path_rate > 0``), both residual adds accumulated into the
    branches' last GEMMs (:func:`residual_dense`): the token mixer's
    ``mixer_fc`` (for a mixer that gives its output before it by ``mix``,
    BiLSTM2D) and ``mlp_fc2``."""
    parts = block.parts()
    fuse_residual = not (training and parts.drop_path_rate > 0)  # DropPath is the identity

    def residual(x, layer, y):
        is_mixer = layer is parts.mixer
        if fuse_residual and is_mixer and parts.mix is not None and parts.mixer_fc is not None:
            return residual_dense(parts.mixer_fc, x, parts.mix(y))
        if fuse_residual and not is_mixer:  # x is this block's own tensor now: without autograd, reuse it
            return residual_dense(layer, x, y, in_place=no_grad())
        branch = sublayer(layer, y) if is_mixer else dense(layer, y)
        return x + sublayer(parts.drop_path, branch, training=training)

    return generic.block_forward(x, parts, norm=sublayer, residual=residual, dense=dense, gelu=gelu)


def patch_embedding(layer, x):
    """A ``PatchEmbedding``'s convolution, ``(B, H, W, C) -> (B, h, w,
    filters)``; a plain one as what it is, one GEMM
    (:func:`generic.patch_gemm`, bias fused by :func:`project`), the output
    channels-last as it lies. Keras's torch ``Conv2D`` transposes to
    channels-first and back around oneDNN's convolution."""
    if not generic.is_plain_patch_convolution(layer):
        return generic.patch_embedding(layer, x)
    return generic.patch_gemm(layer, x, project=project)
