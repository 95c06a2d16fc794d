"""Loading weights into Sequencer2D models: ``weights=`` of the model builders.

Accepted: a Keras ``.weights.h5`` file (as written by the converter), a timm
``.safetensors`` checkpoint, a ``.pth``/``.pt``/``.bin`` checkpoint (timm or
okojoalg/sequencer layout; needs torch), or ``"imagenet"``. A file that
cannot be read (truncated, damaged, not a checkpoint) raises an ``OSError`` or
``ValueError`` naming it; so does :func:`load_model` for a saved ``.keras`` model.

This module builds no model of its own choosing: the caller passes ``build``,
the builder of the model being loaded (``Sequencer2D``), for the twin a
``.weights.h5`` with another head is read into and for converting the
ImageNet checkpoint. So the builders can import this module and not the
other way round.
"""

import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from keras_sequencer import conversion, pretrained
from keras_sequencer.variants import variant_for_arch

if TYPE_CHECKING:
    import keras
    import numpy as np

# The builder a caller passes (``Sequencer2D``): ``build(**arch, ...)`` -> the model.
Builder = Callable[..., "keras.Model"]


def load_weights(
    model: "keras.Model", weights: str | os.PathLike, arch: Mapping[str, Any], build: Builder
) -> "keras.Model":
    """Loads ``weights`` into ``model``.

    Args:
        model: a model built by ``build(**arch, ...)``.
        weights: ``"imagenet"`` or the path to a ``.weights.h5`` /
            ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file.
        arch: the builder's architecture keyword arguments.
        build: the builder (``Sequencer2D``), called as
            ``build(**arch, include_top=..., classes=..., classifier_activation=None,
            input_shape=...)`` for a twin with the stored head.

    A ``.weights.h5`` file holds a full model (with its 1000-class head); for
    ``include_top=False`` or another number of classes it is loaded into a twin
    with the stored head and every layer but ``head`` is copied over.
    """
    if weights == "imagenet":
        variant = variant_for_arch(arch)
        weights = pretrained.imagenet_weights_path(
            variant, lambda checkpoint, output: convert_checkpoint_file(checkpoint, output, arch, build)
        )
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path to an existing "
            f".weights.h5/.safetensors/.pth file; {path!r} does not exist."
        )
    if path.endswith(conversion.CHECKPOINT_SUFFIXES):
        state_dict = conversion.read_checkpoint(path)
        skip_head = _head_differs(model, conversion.head_classes(state_dict))
        try:
            conversion.load_state_dict(model, state_dict, skip_head=skip_head)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    elif path.endswith(".weights.h5"):
        with conversion.reading_errors(path, "Keras weights file"):
            load_keras_weights(model, path, arch, build)
    else:
        raise ValueError(
            f"Unknown weights file {path!r}; expected a .weights.h5, {', '.join(conversion.CHECKPOINT_SUFFIXES)} file."
        )
    return model


def check_output_path(output_path: str | os.PathLike) -> str:
    """``output_path`` as a string; a ``ValueError`` unless it ends in ``.weights.h5``."""
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(f"The output must end in .weights.h5; got {output_path!r}.")
    return output_path


def save_converted(
    model: "keras.Model", state_dict: Mapping[str, "np.ndarray"], output_path: str | os.PathLike
) -> "keras.Model":
    """Assigns ``state_dict`` (timm layout) to ``model`` and writes its ``.weights.h5``."""
    output_path = check_output_path(output_path)
    conversion.load_state_dict(model, state_dict)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    model.save_weights(output_path)
    return model


def convert_checkpoint_file(
    checkpoint_path: str | os.PathLike, output_path: str | os.PathLike, arch: Mapping[str, Any], build: Builder
) -> "keras.Model":
    """Converts a checkpoint of architecture ``arch`` into a full-model ``.weights.h5``
    (with the checkpoint's head, logits) built by ``build``."""
    check_output_path(output_path)
    state_dict = conversion.read_checkpoint(checkpoint_path)
    classes = conversion.head_classes(state_dict)
    model = build(
        **arch,
        include_top=classes is not None,
        classes=classes or 1000,
        classifier_activation=None,
    )
    return save_converted(model, state_dict, output_path)


def _model_classes(model):
    for layer in model.layers:
        if layer.name == "head":
            return layer.units
    return None


def _head_differs(model, checkpoint_classes):
    """True when the checkpoint's head cannot be used: the model has no head, or
    another number of classes (the head then keeps its fresh initialisation)."""
    classes = _model_classes(model)
    if classes is None:
        return True
    if checkpoint_classes is not None and checkpoint_classes != classes:
        warnings.warn(
            f"{model.name}: the checkpoint's classifier has {checkpoint_classes} classes and "
            f"the model {classes}; loading every weight but the classifier, which "
            "stays randomly initialised (fine-tune it).",
            stacklevel=3,
        )
        return True
    return False


# Top-level groups of a ``.weights.h5`` that hold no model weight: the optimizer's
# state (``save_weights`` of a compiled, trained model writes it) is not loaded.
NON_MODEL_GROUPS = ("optimizer/",)


def _h5_datasets(path):
    """``{dataset path: shape}`` of the model weights in a Keras ``.weights.h5`` file
    (the optimizer state it may hold left out)."""
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None)
    return {name: shape for name, shape in found.items() if not name.startswith(NON_MODEL_GROUPS)}


def stored_classes(path: str | os.PathLike) -> int | None:
    """The number of classes of the classifier stored in a weights file
    (``.weights.h5``, ``.safetensors``, ``.pth``/``.pt``/``.bin``), or ``None``
    when it holds none (a model built with ``include_top=False``)."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        with conversion.reading_errors(path, "Keras weights file"):
            return _stored_head_classes(_h5_datasets(path))
    return conversion.head_classes(conversion.read_checkpoint(path))


def _stored_head_classes(datasets):
    """Classes of the head stored in a Sequencer2D ``.weights.h5`` (its only top-level
    Dense, saved as ``layers/dense*/vars``), or None for a model without head."""
    for name, shape in datasets.items():
        if re.fullmatch(r"layers/dense(_\d+)?/vars/1", name):
            return shape[0]
    return None


def _check_layout(model, datasets, path):
    """Keras' ``load_weights`` silently ignores tensors the model has no place for;
    refuse any difference between the file and the model instead."""
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "expected.weights.h5")
        model.save_weights(reference)
        expected = _h5_datasets(reference)
    missing = sorted(expected.keys() - datasets.keys())
    unexpected = sorted(datasets.keys() - expected.keys())
    mis_shaped = sorted(
        f"{k} {datasets[k]} (model: {expected[k]})"
        for k in expected.keys() & datasets.keys()
        if expected[k] != datasets[k]
    )
    problems = [
        f"{label}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
        for label, names in (
            ("missing tensors", missing),
            ("unexpected tensors", unexpected),
            ("mis-shaped tensors", mis_shaped),
        )
        if names
    ]
    if problems:
        raise ValueError(
            f"{path} holds the weights of another architecture than model {model.name!r} "
            "(another variant or size?): " + "; ".join(problems)
        )


def load_keras_weights(model: "keras.Model", path: str, arch: Mapping[str, Any], build: Builder) -> "keras.Model":
    """Loads a full-model ``.weights.h5`` (as written by the converter) into ``model``,
    through a twin built by ``build(**arch, ...)`` when the heads differ."""
    datasets = _h5_datasets(path)
    stored = _stored_head_classes(datasets)
    if stored is not None and not _head_differs(model, stored):
        _check_layout(model, datasets, path)
        model.load_weights(path)
        return model
    twin = build(
        **arch,
        include_top=stored is not None,
        classes=stored or 1000,
        classifier_activation=None,
        input_shape=tuple(model.inputs[0].shape[1:]),
    )
    _check_layout(twin, datasets, path)
    twin.load_weights(path)
    twin_layers = {layer.name: layer for layer in twin.layers}
    for layer in model.layers:
        if layer.weights and layer.name != "head":
            layer.set_weights(twin_layers[layer.name].get_weights())
    return model


def load_model(path: str | os.PathLike, **kwargs) -> "keras.Model":
    """``keras.saving.load_model(path, **kwargs)`` for a saved Sequencer ``.keras``
    file, with a file that cannot be read (missing, truncated, damaged) reported
    as an ``OSError`` or ``ValueError`` naming it."""
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file not found: {path}")
    with conversion.reading_errors(path, ".keras model file"):
        return keras.saving.load_model(path, **kwargs)
