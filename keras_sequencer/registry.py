"""Every Sequencer variant by name: :func:`create_model`, :func:`list_models`
and :func:`convert_checkpoint`.

:func:`create_model` is the one way the package builds a model by name (the
Python API, every command-line command, training, feature extraction and
conversion call it). The names, architectures, input sizes and published
weights are the rows of :data:`keras_sequencer.variants.VARIANTS`; a row's
``family`` picks its builder in :data:`BUILDERS`.
"""

import dataclasses
import os

import keras

from keras_sequencer import conversion
from keras_sequencer import weights as weights_lib
from keras_sequencer.models import Sequencer2D, VanillaSequencer

# get_variant and list_models are also importable from here.
from keras_sequencer.variants import TableView, get_variant, list_models  # noqa: F401

# family -> builder.
BUILDERS = {"sequencer2d": Sequencer2D, "vanilla": VanillaSequencer}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model, as :data:`MODEL_REGISTRY` shows it: a row of
    :data:`keras_sequencer.variants.VARIANTS` (a :class:`~keras_sequencer.variants.Variant`)
    with its family's builder, kept for code that reads ``MODEL_REGISTRY``.

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


def _spec(variant):
    return ModelSpec(
        builder=BUILDERS[variant.family],
        arch=dict(variant.arch),
        input_size=variant.input_size,
        fixed_input_size=variant.fixed_input_size,
        defaults=dict(variant.defaults),
        pretrained=variant.pretrained,
    )


# name -> ModelSpec of every registered variant: a read-only view of the one table,
# keras_sequencer.variants.VARIANTS, kept for code that reads it.
MODEL_REGISTRY = TableView("MODEL_REGISTRY", _spec)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; a ``ValueError`` suggests close names."""
    return _spec(get_variant(name))


def create_model(name: str, weights: str | os.PathLike | None = None, **kwargs) -> keras.Model:
    """Builds a registered model by name (as ``timm.create_model``).

    Args:
        name: one of :func:`list_models`.
        weights: ``None`` (random init), ``"imagenet"`` (only for names with
            published weights: ``list_models(pretrained=True)``), or a path to a
            ``.weights.h5`` / ``.safetensors`` / ``.pth`` checkpoint of this
            architecture.
        **kwargs: every builder argument other than the architecture:
            ``input_shape``, ``input_tensor``, ``classes``, ``include_top``,
            ``pooling``, ``classifier_activation``, ``drop_path_rate``,
            ``dropout_rate``, ``include_preprocessing``, ``implementation``,
            ``initialization`` (``"keras"`` or the paper's ``"original"``
            initial weights), ``name``. ``input_shape`` defaults to ``(input_size, input_size, 3)``
            for fixed-size names and ``(None, None, 3)`` otherwise.

    Returns:
        A ``keras.Model`` named ``name`` (unless ``name=`` is given).

    Raises:
        ValueError: an unknown name (with close names), an architecture
            argument, or ``weights="imagenet"`` for a name without published
            weights.
    """
    variant = get_variant(name)
    builder = BUILDERS[variant.family]
    fixed = sorted(set(kwargs) & set(variant.full_arch))
    if fixed:
        raise ValueError(
            f"{name}: {', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} part of the "
            f"registered architecture; call {builder.__name__}(...) directly for "
            "another architecture."
        )
    if weights == "imagenet" and not variant.pretrained:
        raise ValueError(
            f"{name} has no published ImageNet weights (names with weights: "
            f"{', '.join(list_models(pretrained=True))}); use weights=None or a checkpoint path."
        )
    options = {**variant.defaults, "name": name, **kwargs}
    if variant.fixed_input_size:
        options.setdefault("input_shape", (variant.input_size, variant.input_size, 3))
    if weights == "imagenet":
        options["weights_name"] = name  # the published weights are looked up by name
    return builder(**variant.arch, weights=weights, **options)


def convert_checkpoint(
    checkpoint_path: str | os.PathLike, output_path: str | os.PathLike, model_name: str | None = None
) -> keras.Model:
    """Converts a timm / okojoalg checkpoint into a Keras ``.weights.h5`` file.

    Args:
        checkpoint_path: ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file.
        output_path: where to write; must end in ``.weights.h5``.
        model_name: a registered name (:func:`list_models`) to build and check
            the checkpoint against; by default the Sequencer2D architecture is
            read off the checkpoint (:func:`conversion.infer_arch`).

    Returns:
        The Keras model holding the converted weights (the checkpoint's head,
        logits, no softmax).

    Raises:
        ValueError: an unknown name, an output not ending in ``.weights.h5``,
            or a checkpoint that does not match (naming the tensors).
    """
    output_path = weights_lib.check_output_path(output_path)
    if model_name is not None:
        get_variant(model_name)  # an unknown name fails before the checkpoint is read
    state_dict = conversion.read_checkpoint(checkpoint_path)
    classes = conversion.head_classes(state_dict)
    options = dict(include_top=classes is not None, classes=classes or 1000, classifier_activation=None)
    if model_name is None:
        model = Sequencer2D(**conversion.infer_arch(state_dict), name="sequencer2d", **options)
    else:
        model = create_model(model_name, **options)
    return weights_lib.save_converted(model, state_dict, output_path)
