"""THE table of Sequencer variants: every registered name, its architecture,
default input size and published weights.

Every lookup by name in the package reads :data:`VARIANTS` through
:func:`get_variant`: :func:`keras_sequencer.create_model` (and with it the
command line, training, :func:`keras_sequencer.feature_extractor` and
checkpoint conversion) and the ``Sequencer2DS/M/L`` builders, which pass the
name on to ``weights="imagenet"``; a direct ``Sequencer2D(**arch,
weights="imagenet")`` call finds its name once, at its entry, with
:func:`variant_for_arch`.

:data:`VARIANTS` is the one table. ``MODEL_CONFIGS`` (``keras_sequencer.models``),
``MODEL_REGISTRY`` and ``ModelSpec`` (``keras_sequencer.registry``) and
``PRETRAINED`` (``keras_sequencer.pretrained``) are kept for existing code as
read-only views of it (:class:`TableView`), computed on every access.

The ImageNet names are the registrations of the official okojoalg/sequencer
repo (``models/two_dim_sequencer.py``, ``models/vanilla_sequencer.py``); the
``*_cifar`` names are the small-image models of the CIFAR-10
re-implementation. This module imports nothing of the package.
"""

import collections.abc
import dataclasses
import difflib
import types

FAMILIES = ("sequencer2d", "vanilla")

# Architecture arguments of the family's builder that a variant's ``arch`` may
# leave out, with the builder's defaults: ``Sequencer2D`` and ``VanillaSequencer``
# (a Sequencer2D with ``token_mixer="1d"`` and ``with_fc=False``).
ARCH_DEFAULTS = {
    "sequencer2d": dict(
        mlp_ratios=(3.0, 3.0, 3.0, 3.0),
        bidirectional=True,
        union="cat",
        with_fc=True,
        rnn_type="lstm",
        stem_norm=False,
        position_embedding=False,
        token_mixer="2d",
    ),
    "vanilla": dict(
        mlp_ratios=(3.0, 3.0, 3.0, 3.0),
        bidirectional=True,
        union="cat",
        with_fc=False,
        rnn_type="lstm",
        stem_norm=False,
        position_embedding=False,
        token_mixer="1d",
    ),
}


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """Where a variant's ImageNet-1k weights are published.

    Attributes:
        repo: Hugging Face Hub repository of the timm checkpoint
            (``model.safetensors``).
        commit: the Hub commit the checkpoint is pinned to (40 hex digits).
        sha256: the Hub's published SHA-256 of ``model.safetensors``; None when
            none is published (the download is then not hash-checked).
        original_url: the authors' release (okojoalg/sequencer), a ``.pth``
            that ``weights=`` and ``keras-sequencer convert`` also read when
            torch is installed.
        top1, top5: ImageNet-1k validation accuracy (%) in timm's
            ``results-imagenet.csv`` (224 px, crop 0.875); None if unknown.
    """

    repo: str
    commit: str
    sha256: str = None
    original_url: str = None
    top1: float = None
    top5: float = None


@dataclasses.dataclass(frozen=True)
class Variant:
    """One registered model.

    Attributes:
        name: the registered name (``create_model(name)``).
        family: ``"sequencer2d"`` (built by ``Sequencer2D``) or ``"vanilla"``
            (``VanillaSequencer``).
        arch: the architecture keyword arguments of the family's builder,
            fixed for the name (read-only mapping).
        input_size: the square resolution the variant is defined for.
        fixed_input_size: build with ``input_shape=(input_size, input_size, 3)``
            by default (a position embedding needs it; the ``_392`` names, like
            the official ones, are defined at 392); otherwise ``(None, None, 3)``.
        defaults: builder defaults of the name that a caller may override
            (e.g. ``classes=10`` for the CIFAR models; read-only mapping).
        weights: the published ImageNet weights (:class:`PublishedWeights`),
            or None.
    """

    name: str
    family: str
    arch: dict
    input_size: int = 224
    fixed_input_size: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    weights: PublishedWeights = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}; got {self.family!r}.")
        # Read-only so that no caller can change the table by editing a lookup's result.
        object.__setattr__(self, "arch", types.MappingProxyType(dict(self.arch)))
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))

    @property
    def pretrained(self):
        """True when ``weights="imagenet"`` exists for this name."""
        return self.weights is not None

    @property
    def full_arch(self):
        """Every architecture argument of ``Sequencer2D`` for this variant: ``arch``
        with the family's defaults filled in (:data:`ARCH_DEFAULTS`)."""
        return {**ARCH_DEFAULTS[self.family], **self.arch}


# Architectures of timm's sequencer2d_{s,m,l} (== the official okojoalg/sequencer).
_SEQUENCER2D_BASE = dict(
    patch_sizes=(7, 2, 1, 1),
    embed_dims=(192, 384, 384, 384),
    hidden_sizes=(48, 96, 96, 96),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)
_S = dict(layers=(4, 3, 8, 3), **_SEQUENCER2D_BASE)
_M = dict(layers=(4, 3, 14, 3), **_SEQUENCER2D_BASE)
_L = dict(layers=(8, 8, 16, 4), **_SEQUENCER2D_BASE)
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
_CIFAR_DEFAULTS = dict(classes=10, dropout_rate=0.1)
_CIFAR_SMALL = dict(
    layers=(4, 3, 0),
    patch_sizes=(4, 2, 1),
    embed_dims=(96, 192, 192),
    hidden_sizes=(24, 48, 48),
    mlp_ratios=(3.0, 3.0, 3.0),
    stem_norm=True,
)
_CIFAR_MEDIUM = dict(
    layers=(4, 3, 3, 0),
    patch_sizes=(4, 2, 1, 1),
    embed_dims=(96, 192, 192, 192),
    hidden_sizes=(24, 48, 48, 48),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
    stem_norm=True,
)
# The 1-D baseline: CIFAR Small's widths and depths with the BiLSTM run over the
# flattened token sequence (64, then 16 tokens), without fc as in VanillaSequencer.
_CIFAR_VANILLA = dict(_CIFAR_SMALL, hidden_sizes=(48, 96, 96))

_RELEASE = "https://github.com/okojoalg/sequencer/releases/download/weights"


def _table(*variants):
    return {variant.name: variant for variant in variants}


VARIANTS = _table(
    # main (timm / okojoalg, published weights)
    Variant(
        "sequencer2d_s",
        "sequencer2d",
        _S,
        weights=PublishedWeights(
            repo="timm/sequencer2d_s.in1k",
            commit="dfd8e6955f97c4fe7b18ed439dcac56f33f6acac",
            sha256="ef70ff18ff4f615c53009fde2ffe2f00e47376858d6da329fca2017baaffa946",
            original_url=f"{_RELEASE}/sequencer2d_s.pth",
            top1=82.34,
            top5=96.03,
        ),
    ),
    Variant(
        "sequencer2d_m",
        "sequencer2d",
        _M,
        weights=PublishedWeights(
            repo="timm/sequencer2d_m.in1k",
            commit="391329ebe646393e88be9499eaa7b79af1c92f11",
            sha256=None,
            original_url=f"{_RELEASE}/sequencer2d_m.pth",
            top1=82.84,
            top5=96.28,
        ),
    ),
    Variant(
        "sequencer2d_l",
        "sequencer2d",
        _L,
        weights=PublishedWeights(
            repo="timm/sequencer2d_l.in1k",
            commit="f0f041c30b6ae2c2d991b45e107f3a4a22839b15",
            sha256="4104172887d330aec2e0ab09705e09962fa2a77a475a7792e36e0d6065f231a2",
            original_url=f"{_RELEASE}/sequencer2d_l.pth",
            top1=83.41,
            top5=96.50,
        ),
    ),
    # high resolution
    Variant("sequencer2d_s_392", "sequencer2d", _S, input_size=392, fixed_input_size=True),
    Variant("sequencer2d_m_392", "sequencer2d", _M, input_size=392, fixed_input_size=True),
    Variant("sequencer2d_l_392", "sequencer2d", _L, input_size=392, fixed_input_size=True),
    # ablations
    Variant("sequencer2d_s_unidirectional", "sequencer2d", dict(_S, bidirectional=False)),
    Variant("sequencer2d_s_add", "sequencer2d", dict(_S, union="add")),
    Variant("sequencer2d_s_h2x", "sequencer2d", dict(_S, **_H2X)),
    Variant("sequencer2d_s_without_fc", "sequencer2d", dict(_S, with_fc=False)),
    Variant("sequencer2d_vertical", "sequencer2d", dict(_S, **_H2X, union="vertical", with_fc=False)),
    Variant(
        "sequencer2d_s_horizontal",
        "sequencer2d",
        dict(_S, **_H2X, union="horizontal", with_fc=False),
    ),
    # other cells, bigger model
    Variant("gru_sequencer2d_s", "sequencer2d", dict(_S, rnn_type="gru")),
    Variant("rnn_sequencer2d_s", "sequencer2d", dict(_S, rnn_type="rnn")),
    Variant(
        "sequencer2d_l_d4_3x",
        "sequencer2d",
        dict(_L, embed_dims=(256, 512, 512, 512), hidden_sizes=(64, 128, 128, 128)),
    ),
    # VanillaSequencer (1-D BiLSTM over the flattened tokens)
    Variant("v_sequencer_s", "vanilla", _V_S),
    Variant(
        "v_sequencer_s_h",
        "vanilla",
        dict(_V_S, patch_sizes=(7, 2, 1, 1), embed_dims=(192, 384, 384, 384), **_H2X),
    ),
    Variant("v_sequencer_s_pe", "vanilla", dict(_V_S, position_embedding=True), fixed_input_size=True),
    # CIFAR-10 re-implementation (32x32)
    Variant(
        "sequencer2d_cifar_small",
        "sequencer2d",
        _CIFAR_SMALL,
        input_size=32,
        defaults=_CIFAR_DEFAULTS,
    ),
    Variant(
        "sequencer2d_cifar_medium",
        "sequencer2d",
        _CIFAR_MEDIUM,
        input_size=32,
        defaults=_CIFAR_DEFAULTS,
    ),
    Variant(
        "vanilla_bilstm_cifar",
        "vanilla",
        _CIFAR_VANILLA,
        input_size=32,
        defaults=_CIFAR_DEFAULTS,
    ),
)


def list_models(pretrained: bool = False) -> list[str]:
    """Registered model names, sorted; with ``pretrained=True`` only those with
    published ImageNet weights."""
    return sorted(name for name, v in VARIANTS.items() if v.pretrained or not pretrained)


def _unknown_model_error(name):
    """The one ``ValueError`` of every lookup by name: close names, then all names."""
    close = difflib.get_close_matches(str(name), VARIANTS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"Unknown model {name!r}.{hint} Registered: {', '.join(list_models())}.")


def get_variant(name: str) -> Variant:
    """The :class:`Variant` registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message suggests close
            names and lists every registered one.
    """
    if not isinstance(name, str) or name not in VARIANTS:
        raise _unknown_model_error(name)
    return VARIANTS[name]


def _normalize(arch):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}


def variant_for_arch(arch):
    """Name of the variant with published weights whose architecture is ``arch``.

    ``Sequencer2D(**arch, weights="imagenet")`` without ``weights_name`` names
    no variant; ``Sequencer2D`` calls this once, before loading, to find it.
    ``arch`` are ``Sequencer2D``'s architecture arguments; those left out take
    the builder's defaults, lists equal tuples.

    Raises:
        ValueError: no published variant has this architecture.
    """
    wanted = _normalize({**ARCH_DEFAULTS["sequencer2d"], **arch})
    published = [v for v in VARIANTS.values() if v.pretrained]
    for variant in published:
        if _normalize(variant.full_arch) == wanted:
            return variant.name
    names = ", ".join(v.name for v in published)
    raise ValueError(
        f"weights='imagenet' exists only for the published architectures ({names}); "
        f"this model's architecture {arch} is none of them. "
        "Use weights=None or a path to a checkpoint."
    )


class TableView(collections.abc.Mapping):
    """A read-only mapping derived from :data:`VARIANTS` on every access
    (``MODEL_CONFIGS``, ``MODEL_REGISTRY``, ``PRETRAINED``), so it never drifts
    from the table. To register or change a variant, edit :data:`VARIANTS`.

    Args:
        name: the view's public name (for messages).
        derive: ``derive(variant) -> value``; None leaves the name out.
    """

    def __init__(self, name, derive):
        self._name = name
        self._derive = derive

    def _items(self):
        items = ((name, self._derive(v)) for name, v in VARIANTS.items())
        return {name: value for name, value in items if value is not None}

    def __getitem__(self, key):
        return self._items()[key]

    def __iter__(self):
        return iter(self._items())

    def __len__(self):
        return len(self._items())

    def __setitem__(self, key, value):
        raise TypeError(
            f"{self._name} is a read-only view of keras_sequencer.variants.VARIANTS; to register "
            f"or change {key!r} set VARIANTS[{key!r}] to a Variant(...) (or to "
            "dataclasses.replace(VARIANTS[name], arch=...) for another architecture)."
        )

    def __delitem__(self, key):
        self.__setitem__(key, None)

    def __repr__(self):
        return f"{self._name}({self._items()!r})"


def check_arch(name, arch):
    """Raises a ``ValueError`` unless ``arch`` (``Sequencer2D``'s architecture
    arguments, defaults filled in as :func:`variant_for_arch` does) is the
    architecture of the registered variant ``name``: ``weights_name`` of a
    builder must name the model being built."""
    wanted = _normalize(get_variant(name).full_arch)
    given = _normalize({**ARCH_DEFAULTS["sequencer2d"], **arch})
    if given != wanted:
        differ = sorted(key for key in given.keys() | wanted.keys() if given.get(key) != wanted.get(key))
        raise ValueError(
            f"weights_name={name!r} names another architecture than this model's "
            f"(they differ in {', '.join(differ)}); pass the registered name of this "
            "architecture, or leave weights_name out."
        )


# name -> architecture (Sequencer2D keyword arguments) of every variant with
# published weights: a view of VARIANTS, importable as keras_sequencer.MODEL_CONFIGS.
MODEL_CONFIGS = TableView("MODEL_CONFIGS", lambda v: dict(v.arch) if v.pretrained else None)

# name -> its PublishedWeights as a dict (repo, commit, sha256, original_url, top1,
# top5) for every variant with published weights: a view of VARIANTS, importable
# as keras_sequencer.pretrained.PRETRAINED.
PRETRAINED = TableView("PRETRAINED", lambda v: dataclasses.asdict(v.weights) if v.pretrained else None)
