"""Loading weights into Sequencer2D models: ``weights=`` of the model builders.

Accepted: a Keras ``.weights.h5`` file (as written by the converter), a timm
``.safetensors`` checkpoint, a ``.pth``/``.pt``/``.bin`` checkpoint (timm or
okojoalg/sequencer layout; needs torch), or ``"imagenet"``. A file that
cannot be read (truncated, damaged, not a checkpoint) raises an ``OSError`` or
``ValueError`` naming it; so does :func:`load_model` for a saved ``.keras`` model.

Everything here works on the model it is given and builds none: a file with
another classifier than the model's (or one with a classifier for a model
without) loads every weight but the classifier's straight into the model, and
the ImageNet cache is converted into, and written from, the model being
loaded. The builders import this module; it calls nothing of theirs.

The layout of a Keras ``.weights.h5`` (dataset paths such as
``layers/sequencer2d_block/rnn_tokens/.../vars/0``) is read off the model by
Keras' own saving walk (``keras.src.saving.saving_lib``) with a store that
records paths and shapes instead of writing them.
"""

import os
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

from keras.src.saving import saving_lib

from keras_sequencer import conversion, pretrained

if TYPE_CHECKING:
    import keras
    import numpy as np


def load_weights(model: "keras.Model", weights: str | os.PathLike, variant: str | None = None) -> "keras.Model":
    """Loads ``weights`` into ``model``.

    Args:
        model: a model built by ``Sequencer2D``.
        weights: ``"imagenet"`` or the path to a ``.weights.h5`` /
            ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file.
        variant: the registered name whose published weights ``"imagenet"``
            means (``"sequencer2d_s"``, ...); needed only for ``"imagenet"``.

    A file with another classifier than the model's (``include_top=False``,
    or another number of classes: a warning) loads every weight but the
    classifier, which keeps its initialisation.
    """
    if weights == "imagenet":
        if variant is None:
            raise ValueError("weights='imagenet' needs the variant's name (weights_name='sequencer2d_s', ...).")
        return _load_imagenet(model, variant)
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path to an existing "
            f".weights.h5/.safetensors/.pth file; {path!r} does not exist."
        )
    if path.endswith(conversion.CHECKPOINT_SUFFIXES):
        state_dict = conversion.read_checkpoint(path)
        try:
            _assign_checkpoint(model, state_dict)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    elif path.endswith(".weights.h5"):
        with conversion.reading_errors(path, "Keras weights file"):
            load_keras_weights(model, path)
    else:
        raise ValueError(
            f"Unknown weights file {path!r}; expected a .weights.h5, {', '.join(conversion.CHECKPOINT_SUFFIXES)} file."
        )
    return model


def _assign_checkpoint(model, state_dict):
    """Assigns a timm-layout ``state_dict`` to ``model``, its classifier only when it fits."""
    skip_head = _head_differs(model, conversion.head_classes(state_dict))
    conversion.load_state_dict(model, state_dict, skip_head=skip_head)


def _load_imagenet(model, variant):
    """``weights="imagenet"``: from the cache, or converted into ``model`` (which
    then writes the cache) the first time on this host."""
    with pretrained.filling_cache(variant) as fill:
        if fill is not None:
            save_converted(model, conversion.read_checkpoint(fill.checkpoint), fill.output)
            return model
    path = pretrained.weights_cache_path(variant)
    with conversion.reading_errors(path, "Keras weights file"):
        return load_keras_weights(model, path)


def check_output_path(output_path: str | os.PathLike) -> str:
    """``output_path`` as a string; a ``ValueError`` unless it ends in ``.weights.h5``."""
    output_path = os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(f"The output must end in .weights.h5; got {output_path!r}.")
    return output_path


def save_converted(
    model: "keras.Model", state_dict: Mapping[str, "np.ndarray"], output_path: str | os.PathLike
) -> "keras.Model":
    """Converts a checkpoint: assigns the timm-layout ``state_dict`` to ``model``
    (its classifier only when it fits) and writes the checkpoint's full-model
    ``.weights.h5`` (its classifier included, logits) in ``model``'s Keras layout.

    The file holds the checkpoint's values (float32), not the model's: ``model``
    may have another classifier or none (``include_top=False``; the classifier
    is then written where a model with one keeps it, :data:`HEAD_GROUP`), or
    another variable dtype, and the file is still the checkpoint's full model.
    So converting needs no other model than the one being loaded.

    Raises:
        ValueError: ``output_path`` does not end in ``.weights.h5``, or
            ``state_dict`` does not match ``model`` (naming the tensors).
    """
    output_path = check_output_path(output_path)
    _assign_checkpoint(model, state_dict)
    values = {
        id(variable): transform(*(state_dict[key] for key in keys))
        for variable, keys, transform in conversion.weight_map(model)
        if all(key in state_dict for key in keys)
    }
    head = conversion.head_weights(state_dict)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    store = _ConvertedStore(output_path, values)
    try:
        saving_lib._save_state(model, store, None, "", set())
        if head is not None and _model_classes(model) is None:
            store.make(HEAD_GROUP, metadata={"name": "head"})
            for index, value in enumerate(head):
                store[str(index)] = value
    finally:
        store.close()
    return model


def _head_layer(model):
    """The classifier (the layer named ``head``) of ``model``, or None."""
    for layer in model.layers:
        if layer.name == "head":
            return layer
    return None


def _model_classes(model):
    head = _head_layer(model)
    return None if head is None else head.units


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


# Where a Sequencer2D ``.weights.h5`` keeps the classifier: Keras' saving names
# a model's layers by class, and the head is the model's only top-level Dense.
HEAD_GROUP = "layers/dense"
# The classifier's datasets (kernel ``vars/0``, bias ``vars/1``) in such a file.
HEAD_DATASET = re.compile(r"layers/dense(_\d+)?/vars/\d+")


def _stored_head_classes(datasets):
    """Classes of the head stored in a Sequencer2D ``.weights.h5`` (its only top-level
    Dense, saved as ``layers/dense*/vars``), or None for a model without head."""
    for name, shape in datasets.items():
        if HEAD_DATASET.fullmatch(name) and name.endswith("/1"):
            return shape[0]
    return None


class _LayoutStore(saving_lib.H5IOStore):
    """A write-mode store for Keras' saving walk that records, for each dataset
    the walk would write, its path in the ``.weights.h5`` and the value given
    (a model variable) instead of writing anything."""

    def __init__(self):
        self.entries = {}
        self._group = "vars"

    def __bool__(self):
        return True

    def make(self, path, metadata=None):
        self._group = f"{path}/vars" if path else "vars"
        return self

    def __setitem__(self, key, value):
        self.entries[f"{self._group}/{key}"] = value

    def close(self):
        pass


class _ConvertedStore(saving_lib.H5IOStore):
    """Keras' ``.weights.h5`` writer that stores, for each variable found in
    ``values`` (``{id(variable): array}``), that array instead of the variable."""

    def __init__(self, path, values):
        super().__init__(path, mode="w")
        self._values = values

    def __setitem__(self, key, value):
        super().__setitem__(key, self._values.get(id(value), value))


def _layout_entries(model):
    """``{dataset path: variable}`` of what ``model.save_weights`` would write
    (the optimizer state left out); nothing is written."""
    store = _LayoutStore()
    saving_lib._save_state(model, store, None, "", set())
    return {path: value for path, value in store.entries.items() if not path.startswith(NON_MODEL_GROUPS)}


def keras_layout(model: "keras.Model") -> dict[str, tuple[int, ...]]:
    """``{dataset path: shape}`` of the model weights ``model.save_weights`` would
    write (the optimizer state left out), read off the model: nothing is written."""
    return {path: tuple(value.shape) for path, value in _layout_entries(model).items()}


def _check_layout(model, expected, datasets, path):
    """Keras' ``load_weights`` silently ignores tensors the model has no place for;
    refuse any difference between the file's ``datasets`` and the model's
    ``expected`` layout (both ``{dataset path: shape}``) instead."""
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


def load_keras_weights(model: "keras.Model", path: str) -> "keras.Model":
    """Loads a full-model ``.weights.h5`` (as written by the converter or
    ``save_weights``) into ``model``, after checking that it holds exactly
    the model's tensors; when the heads differ (another number of classes, a
    model or a file without one), everything but the classifier."""
    datasets = _h5_datasets(path)
    stored = _stored_head_classes(datasets)
    entries = _layout_entries(model)
    if stored is not None and not _head_differs(model, stored):
        _check_layout(model, {name: tuple(v.shape) for name, v in entries.items()}, datasets, path)
        model.load_weights(path)
        return model
    head = _head_layer(model)
    head_ids = {id(variable) for variable in head.weights} if head is not None else set()
    expected = {name: tuple(v.shape) for name, v in entries.items() if id(v) not in head_ids}
    datasets = {name: shape for name, shape in datasets.items() if not HEAD_DATASET.fullmatch(name)}
    _check_layout(model, expected, datasets, path)
    model.load_weights(path, objects_to_skip=None if head is None else [head])
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
