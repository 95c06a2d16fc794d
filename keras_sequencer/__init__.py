"""keras-sequencer: Sequencer (Deep LSTM for Image Classification) for Keras 3.

Importing the package first makes sure Keras starts on an installed backend
(:mod:`keras_sequencer.backend_setup`: ``KERAS_BACKEND``, else ``keras.json``,
else the first installed of tensorflow, jax, torch); with none installed, or
an unknown ``KERAS_BACKEND``, it fails with one line saying what to do.

It then imports Keras and the public API (:func:`load`). The
``keras-sequencer`` command defers that until its arguments are parsed, so a
mistyped flag is answered at once; the public names still import on first use.
"""

import importlib
import sys

from keras_sequencer import backend_setup

try:
    backend_setup.choose_backend()
except backend_setup.BackendNotFoundError as error:
    if backend_setup.invoked_as_command():  # the keras-sequencer command: one line, no traceback
        print(f"keras-sequencer: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    raise

# The package's version: the one place it is written (pyproject.toml reads it from here).
__version__ = "0.2.0"

# Every public name -> the module that defines it.
_PUBLIC = {
    "MODEL_CONFIGS": "models",
    "Sequencer2D": "models",
    "Sequencer2DL": "models",
    "Sequencer2DM": "models",
    "Sequencer2DS": "models",
    "SequencerModel": "models",
    "VanillaSequencer": "models",
    "decode_predictions": "imagenet",
    "feature_extractor": "features",
    "image_dataset": "folders",
    "load_image": "preprocessing",
    "preprocess_input": "preprocessing",
    "MODEL_REGISTRY": "registry",
    "create_model": "registry",
    "list_models": "registry",
}

# Modules imported with the package: they register what saved files name
# (schedules, optimizers: what a training checkpoint's optimizer holds).
_REGISTERING = ("layers", "schedules", "optimizers")

__all__ = sorted([*_PUBLIC, *_REGISTERING])


def load():
    """Imports Keras (applying :mod:`keras_sequencer.runtime`'s process settings
    first) and the public API; registers the package's layers, so that
    ``keras.saving.load_model`` reads its ``.keras`` files. What
    ``import keras_sequencer`` does; idempotent."""
    from keras_sequencer import runtime

    runtime.configure_backend()  # before TensorFlow first compiles with XLA
    for module in _REGISTERING:
        globals()[module] = importlib.import_module(f"{__name__}.{module}")
    for name, module in _PUBLIC.items():
        globals()[name] = getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __getattr__(name):
    if name in _PUBLIC or name in _REGISTERING:
        load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


if not backend_setup.invoked_as_command():
    load()
