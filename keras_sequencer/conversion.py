"""Port PyTorch Sequencer checkpoints (timm and okojoalg/sequencer) to Keras.

A checkpoint is read into a flat ``{name: numpy array}`` dict in timm's key
layout (``stem.proj.weight``, ``stages.{i}.blocks.{j}.rnn_tokens.rnn_v.weight_ih_l0``,
``head.fc.bias``, ...). The original repo's layout (``blocks.{stage}.{i}...``,
``blocks.{stage}.{n}.down...``, ``head...``) is renamed on reading, as timm's
``checkpoint_filter_fn`` does.

Every checkpoint tensor must be consumed and every model weight assigned; a
missing, unexpected or mis-shaped tensor raises a ``ValueError`` naming it.

Tensor maps (torch -> Keras):
    Conv2d weight ``(out, in, kh, kw)`` -> kernel ``(kh, kw, in, out)``
    Linear weight ``(out, in)``         -> kernel ``(in, out)``
    LayerNorm weight / bias             -> gamma / beta
    LSTM / RNN: kernel ``W_ih.T``, recurrent_kernel ``W_hh.T``, bias ``b_ih + b_hh``
    GRU: gate blocks reordered (r, z, n) -> (z, r, h); bias ``stack([b_ih, b_hh])``
    ``*_reverse`` -> the backward layer of ``Bidirectional``.

This module maps a checkpoint onto an existing model and builds none;
:func:`keras_sequencer.registry.convert_checkpoint` writes a checkpoint's
Keras ``.weights.h5`` (by registered name or by :func:`infer_arch`), and
``weights="imagenet"`` converts into the model being loaded
(:mod:`keras_sequencer.weights`).
"""

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

from keras_sequencer.layers import (
    BiLSTM1D,
    BiLSTM2D,
    PatchEmbedding,
    PositionEmbedding,
    Sequencer2DBlock,
)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


# ---------------------------------------------------------------- reading --
@contextlib.contextmanager
def reading_errors(path: str | os.PathLike, kind: str) -> Iterator[None]:
    """Turns any failure to read ``path`` (a ``kind`` file) into a ``ValueError``
    naming it; an ``OSError`` or ``ValueError`` that already names the path passes
    through. Errors of the libraries that parse checkpoints (safetensors, h5py,
    zipfile, torch, pickle, json) have no common base class, hence ``Exception``;
    ``MemoryError`` and non-``Exception`` interrupts propagate unchanged."""
    path = os.fspath(path)
    try:
        yield
    except MemoryError:
        raise
    except (OSError, ValueError) as error:
        if path in str(error):
            raise
        error_type = OSError if isinstance(error, OSError) else ValueError
        raise error_type(f"Could not read {kind} {path}: {error}") from error
    except Exception as error:
        raise ValueError(
            f"Could not read {kind} {path} (damaged or not a {kind} file?): {type(error).__name__}: {error}"
        ) from error


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a checkpoint file into ``{timm key: float32 numpy array}``.

    ``.safetensors`` is read with the ``safetensors`` package and numpy (no
    torch needed); ``.pth``/``.pt``/``.bin`` with ``torch.load(weights_only=True)``.
    A file that cannot be read (missing, truncated, damaged, not a state dict of
    tensors) raises an ``OSError`` or ``ValueError`` naming it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        with reading_errors(path, "safetensors checkpoint"):
            return normalize_state_dict(load_file(path))
    if path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading {path} needs PyTorch (`pip install torch`); "
                "a .safetensors checkpoint needs only the safetensors package."
            ) from error
        with reading_errors(path, "PyTorch checkpoint"):
            return normalize_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    raise ValueError(f"Unknown checkpoint format {path!r}; expected one of {CHECKPOINT_SUFFIXES}.")


def _to_numpy(value):
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def normalize_state_dict(state_dict: Any) -> dict[str, np.ndarray]:
    """Unwraps ``{"model": ...}``/``{"state_dict": ...}``, strips ``module.``,
    renames the okojoalg/sequencer layout to timm's and converts to numpy.
    Anything but a ``{name: tensor}`` mapping raises a ``ValueError``."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"expected a dict of tensors; got {type(state_dict).__name__}")
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if not all(isinstance(key, str) for key in state_dict):
        raise ValueError("expected a dict of tensors keyed by name; found a non-string key")
    original_layout = not any(k.startswith("stages.") for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if original_layout:
            key = re.sub(
                r"^blocks\.([0-9]+)\.([0-9]+)\.down",
                lambda m: f"stages.{int(m.group(1)) + 1}.downsample.down",
                key,
            )
            key = re.sub(r"^blocks\.([0-9]+)\.([0-9]+)", r"stages.\1.blocks.\2", key)
            key = re.sub(r"^head\.(?!fc\.)", "head.fc.", key)
        try:
            out[key] = _to_numpy(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"entry {key!r} ({type(value).__name__}) is not a tensor") from error
    return out


# ---------------------------------------------------------------- mapping --
def _timm_prefix(layer_name):
    """Keras layer name -> timm module prefix."""
    match = re.fullmatch(r"stages_(\d+)_downsample", layer_name)
    if match:
        return f"stages.{match.group(1)}.downsample.down"
    match = re.fullmatch(r"stages_(\d+)_blocks_(\d+)", layer_name)
    if match:
        return f"stages.{match.group(1)}.blocks.{match.group(2)}"
    return {
        "stem": "stem.proj",
        "stem_norm": "stem.norm",
        "pos_embed": "absolute_pos_embed",
        "norm": "norm",
        "head": "head.fc",
    }.get(layer_name)


def _linear(dense, prefix):
    return [
        (dense.kernel, (f"{prefix}.weight",), lambda w: w.T),
        (dense.bias, (f"{prefix}.bias",), lambda b: b),
    ]


def _layer_norm(norm, prefix):
    return [
        (norm.gamma, (f"{prefix}.weight",), lambda w: w),
        (norm.beta, (f"{prefix}.bias",), lambda b: b),
    ]


def _conv(conv, prefix):
    return [
        (conv.kernel, (f"{prefix}.weight",), lambda w: w.transpose(2, 3, 1, 0)),
        (conv.bias, (f"{prefix}.bias",), lambda b: b),
    ]


def _gru_gates(w):
    """torch GRU gate blocks (r, z, n) along axis 0 -> Keras order (z, r, h)."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _rnn(rnn_layer, rnn_type, prefix, suffix):
    cell = rnn_layer.cell
    names = tuple(f"{prefix}.{p}_l0{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    w_ih, w_hh, b_ih, b_hh = names
    if rnn_type == "gru":
        return [
            (cell.kernel, (w_ih,), lambda w: _gru_gates(w).T),
            (cell.recurrent_kernel, (w_hh,), lambda w: _gru_gates(w).T),
            (cell.bias, (b_ih, b_hh), lambda bi, bh: np.stack([_gru_gates(bi), _gru_gates(bh)])),
        ]
    return [
        (cell.kernel, (w_ih,), lambda w: w.T),
        (cell.recurrent_kernel, (w_hh,), lambda w: w.T),
        (cell.bias, (b_ih, b_hh), lambda bi, bh: bi + bh),
    ]


def _directions(rnn, rnn_type, prefix):
    """One (possibly Bidirectional) RNN -> torch ``{prefix}.*_l0[_reverse]``."""
    if isinstance(rnn, keras.layers.Bidirectional):
        return _rnn(rnn.forward_layer, rnn_type, prefix, "") + _rnn(rnn.backward_layer, rnn_type, prefix, "_reverse")
    return _rnn(rnn, rnn_type, prefix, "")


def _token_mixer(layer, prefix):
    """BiLSTM2D (``rnn_v``, ``rnn_h``, ``fc``) or BiLSTM1D (``rnn``, ``fc``)."""
    if isinstance(layer, BiLSTM1D):
        rnns = ((layer.rnn, "rnn"),)
    else:
        rnns = ((layer.rnn_v, "rnn_v"), (layer.rnn_h, "rnn_h"))
    assignments = []
    for rnn, name in rnns:
        if rnn is not None:
            assignments += _directions(rnn, layer.rnn_type, f"{prefix}.{name}")
    if layer.fc is not None:
        assignments += _linear(layer.fc, f"{prefix}.fc")
    return assignments


def _block(block, prefix):
    return (
        _layer_norm(block.norm1, f"{prefix}.norm1")
        + _token_mixer(block.rnn_tokens, f"{prefix}.rnn_tokens")
        + _layer_norm(block.norm2, f"{prefix}.norm2")
        + _linear(block.mlp_fc1, f"{prefix}.mlp_channels.fc1")
        + _linear(block.mlp_fc2, f"{prefix}.mlp_channels.fc2")
    )


def weight_map(model: keras.Model) -> list[tuple[keras.Variable, tuple[str, ...], Callable[..., np.ndarray]]]:
    """Lists ``(variable, timm keys, transform)`` for every weight of ``model``."""
    assignments = []
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _timm_prefix(layer.name)
        if prefix is None:
            raise ValueError(f"Layer {layer.name!r} has weights but no timm counterpart.")
        if isinstance(layer, Sequencer2DBlock):
            assignments += _block(layer, prefix)
        elif isinstance(layer, PatchEmbedding):
            assignments += _conv(layer, prefix)
        elif isinstance(layer, keras.layers.LayerNormalization):
            assignments += _layer_norm(layer, prefix)
        elif isinstance(layer, keras.layers.Dense):
            assignments += _linear(layer, prefix)
        elif isinstance(layer, (BiLSTM2D, BiLSTM1D)):
            assignments += _token_mixer(layer, prefix)
        elif isinstance(layer, PositionEmbedding):
            assignments.append((layer.embedding, (prefix,), lambda w: w))
        else:
            raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot be converted.")
    return assignments


def _list(names, limit=8):
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_state_dict(model: keras.Model, state_dict: Mapping[str, Any], skip_head: bool | None = None) -> keras.Model:
    """Assigns a timm-layout state dict to a Keras Sequencer2D model.

    Args:
        model: a model built by :func:`keras_sequencer.Sequencer2D`.
        state_dict: ``{timm key: array}`` (torch tensors are accepted too).
        skip_head: leave the classifier untouched and consume the ``head.*``
            tensors without using them. Default: skip when the model has no
            ``head`` layer (``include_top=False``).

    Raises:
        ValueError: naming the missing, unexpected or mis-shaped tensors.
    """
    state_dict = normalize_state_dict(dict(state_dict))
    if skip_head is None:
        skip_head = not any(layer.name == "head" for layer in model.layers)
    assignments = weight_map(model)
    if skip_head:
        assignments = [a for a in assignments if not a[1][0].startswith("head.")]
    needed = {key for _, keys, _ in assignments for key in keys}
    missing = needed - state_dict.keys()
    unexpected = {k for k in state_dict.keys() - needed if not (skip_head and k.startswith("head."))}
    errors = []
    if missing:
        errors.append(f"missing tensors: {_list(missing)}")
    if unexpected:
        errors.append(f"unexpected tensors: {_list(unexpected)}")
    values = []
    if not errors:
        for variable, keys, transform in assignments:
            value = transform(*(state_dict[k] for k in keys))
            if tuple(value.shape) != tuple(variable.shape):
                errors.append(
                    f"tensor {'+'.join(keys)} has shape {tuple(state_dict[keys[0]].shape)}, "
                    f"which does not fit {variable.path} of shape {tuple(variable.shape)}"
                )
            values.append(value)
    if errors:
        raise ValueError(
            f"Checkpoint does not match model {model.name!r} (another variant or architecture?): " + "; ".join(errors)
        )
    assigned = {id(v) for v, _, _ in assignments}
    unassigned = [
        w.path for w in model.weights if id(w) not in assigned and not (skip_head and w.path.startswith("head/"))
    ]
    if unassigned:
        raise ValueError(f"Model weights with no checkpoint tensor: {_list(unassigned)}")
    for (variable, _, _), value in zip(assignments, values):
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return model


# ---------------------------------------------------------- architecture --
def head_classes(state_dict: Mapping[str, np.ndarray]) -> int | None:
    """Number of classes of the checkpoint's classifier (``head.fc``), or None without one."""
    bias = state_dict.get("head.fc.bias")
    return None if bias is None else int(bias.shape[0])


def head_weights(state_dict: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """The classifier of a timm-layout state dict as the Keras head's weights,
    ``[kernel (features, classes), bias (classes,)]``, or None without one."""
    if "head.fc.weight" not in state_dict:
        return None
    return [state_dict["head.fc.weight"].T, state_dict["head.fc.bias"]]


def infer_arch(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Reads the Sequencer2D architecture (builder kwargs) off a timm-layout state dict."""
    blocks = {}
    for key in state_dict:
        match = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if "stem.proj.weight" not in state_dict or not blocks:
        raise ValueError("Not a Sequencer2D checkpoint: no stem.proj.weight / stages.*.blocks.* tensors.")
    num_stages = max(blocks) + 1
    layers, patch_sizes, embed_dims, hidden_sizes, mlp_ratios = [], [], [], [], []
    for i in range(num_stages):
        conv = state_dict["stem.proj.weight" if i == 0 else f"stages.{i}.downsample.down.weight"]
        block = f"stages.{i}.blocks.0"
        layers.append(blocks[i])
        patch_sizes.append(int(conv.shape[-1]))
        embed_dims.append(int(conv.shape[0]))
        rnn = "rnn_v" if f"{block}.rnn_tokens.rnn_v.weight_hh_l0" in state_dict else "rnn_h"
        hidden_sizes.append(int(state_dict[f"{block}.rnn_tokens.{rnn}.weight_hh_l0"].shape[1]))
        mlp_ratios.append(state_dict[f"{block}.mlp_channels.fc1.weight"].shape[0] / conv.shape[0])
    block = "stages.0.blocks.0.rnn_tokens"
    has_v = f"{block}.rnn_v.weight_hh_l0" in state_dict
    has_h = f"{block}.rnn_h.weight_hh_l0" in state_dict
    rnn = "rnn_v" if has_v else "rnn_h"
    bidirectional = f"{block}.{rnn}.weight_hh_l0_reverse" in state_dict
    gates = state_dict[f"{block}.{rnn}.weight_hh_l0"].shape[0] // hidden_sizes[0]
    rnn_type = {4: "lstm", 3: "gru", 1: "rnn"}[gates]
    with_fc = f"{block}.fc.weight" in state_dict
    rnn_out = hidden_sizes[0] * (2 if bidirectional else 1)
    if has_v and has_h:
        union_width = state_dict[f"{block}.fc.weight"].shape[1] if with_fc else embed_dims[0]
        union = "cat" if union_width == 2 * rnn_out else "add"
    else:
        union = "vertical" if has_v else "horizontal"
    return dict(
        layers=tuple(layers),
        patch_sizes=tuple(patch_sizes),
        embed_dims=tuple(embed_dims),
        hidden_sizes=tuple(hidden_sizes),
        mlp_ratios=tuple(mlp_ratios),
        bidirectional=bidirectional,
        union=union,
        with_fc=with_fc,
        rnn_type=rnn_type,
    )
