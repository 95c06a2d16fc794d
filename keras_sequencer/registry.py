"""Every Sequencer variant by name: :func:`create_model` and :func:`list_models`.

One table, :data:`MODEL_REGISTRY`, maps a name to its builder
(:func:`~keras_sequencer.models.Sequencer2D` or
:func:`~keras_sequencer.models.VanillaSequencer`), its architecture and its
default input size. The ImageNet names are the registrations of the official
okojoalg/sequencer repo (``models/two_dim_sequencer.py``,
``models/vanilla_sequencer.py``); the ``*_cifar`` names are the small-image
models of the CIFAR-10 re-implementation.
"""

import dataclasses
import difflib

from keras_sequencer.models import MODEL_CONFIGS, Sequencer2D, VanillaSequencer


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        builder: :func:`Sequencer2D` or :func:`VanillaSequencer`.
        arch: architecture keyword arguments (fixed for the name).
        input_size: the resolution the variant is defined for (square).
        fixed_input_size: build with ``input_shape=(input_size, input_size, 3)``
            by default (position embeddings need it; the ``_392`` names, like the
            official ones, are defined at 392). Otherwise ``(None, None, 3)``.
        defaults: overridable builder defaults (e.g. ``classes``).
        pretrained: published ImageNet weights exist (``weights="imagenet"``).
    """

    builder: object
    arch: dict
    input_size: int = 224
    fixed_input_size: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    pretrained: bool = False


_S, _M, _L = MODEL_CONFIGS["sequencer2d_s"], MODEL_CONFIGS["sequencer2d_m"], MODEL_CONFIGS["sequencer2d_l"]
_H2X = dict(hidden_sizes=(96, 192, 192, 192))
_V_S = dict(
    layers=(4, 3, 8, 3),
    patch_sizes=(14, 1, 1, 1),
    embed_dims=(384, 384, 384, 384),
    hidden_sizes=(192, 192, 192, 192),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)
# CIFAR-scale models (32x32): patch 4 -> an 8x8 token grid; "patch merging" is a
# PatchEmbedding of patch 2 (2x2 conv, stride 2) -> 4x4; "pointwise linear" is a
# PatchEmbedding of patch 1 (1x1 conv), i.e. a stage of 0 blocks.
_CIFAR = dict(stem_norm=True)
_CIFAR_DEFAULTS = dict(classes=10, dropout_rate=0.1)
_CIFAR_SMALL = dict(
    layers=(4, 3, 0),
    patch_sizes=(4, 2, 1),
    embed_dims=(96, 192, 192),
    hidden_sizes=(24, 48, 48),
    mlp_ratios=(3.0, 3.0, 3.0),
    **_CIFAR,
)
_CIFAR_MEDIUM = dict(
    layers=(4, 3, 3, 0),
    patch_sizes=(4, 2, 1, 1),
    embed_dims=(96, 192, 192, 192),
    hidden_sizes=(24, 48, 48, 48),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
    **_CIFAR,
)
# The 1-D baseline: CIFAR Small's widths and depths with the BiLSTM run over the
# flattened token sequence (64, then 16 tokens), without fc as in VanillaSequencer.
_CIFAR_VANILLA = dict(_CIFAR_SMALL, hidden_sizes=(48, 96, 96))

MODEL_REGISTRY = {
    # main (timm / okojoalg, published weights)
    "sequencer2d_s": ModelSpec(Sequencer2D, _S, pretrained=True),
    "sequencer2d_m": ModelSpec(Sequencer2D, _M, pretrained=True),
    "sequencer2d_l": ModelSpec(Sequencer2D, _L, pretrained=True),
    # high resolution
    "sequencer2d_s_392": ModelSpec(Sequencer2D, _S, input_size=392, fixed_input_size=True),
    "sequencer2d_m_392": ModelSpec(Sequencer2D, _M, input_size=392, fixed_input_size=True),
    "sequencer2d_l_392": ModelSpec(Sequencer2D, _L, input_size=392, fixed_input_size=True),
    # ablations
    "sequencer2d_s_unidirectional": ModelSpec(Sequencer2D, dict(_S, bidirectional=False)),
    "sequencer2d_s_add": ModelSpec(Sequencer2D, dict(_S, union="add")),
    "sequencer2d_s_h2x": ModelSpec(Sequencer2D, dict(_S, **_H2X)),
    "sequencer2d_s_without_fc": ModelSpec(Sequencer2D, dict(_S, with_fc=False)),
    "sequencer2d_vertical": ModelSpec(
        Sequencer2D, dict(_S, **_H2X, union="vertical", with_fc=False)
    ),
    "sequencer2d_s_horizontal": ModelSpec(
        Sequencer2D, dict(_S, **_H2X, union="horizontal", with_fc=False)
    ),
    # other cells, bigger model
    "gru_sequencer2d_s": ModelSpec(Sequencer2D, dict(_S, rnn_type="gru")),
    "rnn_sequencer2d_s": ModelSpec(Sequencer2D, dict(_S, rnn_type="rnn")),
    "sequencer2d_l_d4_3x": ModelSpec(
        Sequencer2D,
        dict(_L, embed_dims=(256, 512, 512, 512), hidden_sizes=(64, 128, 128, 128)),
    ),
    # VanillaSequencer (1-D BiLSTM over the flattened tokens)
    "v_sequencer_s": ModelSpec(VanillaSequencer, _V_S),
    "v_sequencer_s_h": ModelSpec(
        VanillaSequencer,
        dict(_V_S, patch_sizes=(7, 2, 1, 1), embed_dims=(192, 384, 384, 384), **_H2X),
    ),
    "v_sequencer_s_pe": ModelSpec(
        VanillaSequencer, dict(_V_S, position_embedding=True), fixed_input_size=True
    ),
    # CIFAR-10 re-implementation (32x32)
    "sequencer2d_cifar_small": ModelSpec(
        Sequencer2D, _CIFAR_SMALL, input_size=32, defaults=_CIFAR_DEFAULTS
    ),
    "sequencer2d_cifar_medium": ModelSpec(
        Sequencer2D, _CIFAR_MEDIUM, input_size=32, defaults=_CIFAR_DEFAULTS
    ),
    "vanilla_bilstm_cifar": ModelSpec(
        VanillaSequencer, _CIFAR_VANILLA, input_size=32, defaults=_CIFAR_DEFAULTS
    ),
}


def list_models(pretrained=False):
    """Registered model names, sorted; with ``pretrained=True`` only those with
    published ImageNet weights."""
    return sorted(n for n, spec in MODEL_REGISTRY.items() if spec.pretrained or not pretrained)


def get_spec(name):
    """The :class:`ModelSpec` of ``name``; a ``ValueError`` suggests close names."""
    if name not in MODEL_REGISTRY:
        close = difflib.get_close_matches(str(name), MODEL_REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Registered: {', '.join(list_models())}."
        )
    return MODEL_REGISTRY[name]


def create_model(name, weights=None, **kwargs):
    """Builds a registered model by name (as ``timm.create_model``).

    Args:
        name: one of :func:`list_models`.
        weights: ``None`` (random init), ``"imagenet"`` (only for names with
            published weights: ``list_models(pretrained=True)``), or a path to a
            ``.weights.h5`` / ``.safetensors`` / ``.pth`` checkpoint of this
            architecture.
        **kwargs: builder arguments other than the architecture, e.g.
            ``input_shape``, ``classes``, ``include_top``, ``pooling``,
            ``classifier_activation``, ``drop_path_rate``. ``input_shape``
            defaults to ``(input_size, input_size, 3)`` for fixed-size names and
            ``(None, None, 3)`` otherwise.

    Returns:
        A ``keras.Model`` named ``name``.
    """
    spec = get_spec(name)
    fixed = sorted(set(kwargs) & set(spec.arch))
    if fixed:
        raise ValueError(
            f"{name}: {', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} part of the "
            f"registered architecture; call {spec.builder.__name__}(...) directly for "
            "another architecture."
        )
    if weights == "imagenet" and not spec.pretrained:
        raise ValueError(
            f"{name} has no published ImageNet weights (names with weights: "
            f"{', '.join(list_models(pretrained=True))}); use weights=None or a checkpoint path."
        )
    options = {**spec.defaults, "name": name, **kwargs}
    if spec.fixed_input_size:
        options.setdefault("input_shape", (spec.input_size, spec.input_size, 3))
    return spec.builder(**spec.arch, weights=weights, **options)
