"""keras-sequencer: Sequencer (Deep LSTM for Image Classification) for Keras 3.

Importing the package first makes sure Keras starts on an installed backend
(:mod:`keras_sequencer.backend_setup`: ``KERAS_BACKEND``, else ``keras.json``,
else the first installed of tensorflow, jax, torch); with none installed it
fails with one line saying what to install.
"""

import sys

from keras_sequencer import backend_setup

try:
    backend_setup.choose_backend()
except backend_setup.BackendNotFoundError as error:
    if backend_setup.invoked_as_command():  # the keras-sequencer command: one line, no traceback
        print(f"keras-sequencer: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    raise

from keras_sequencer import runtime

runtime.configure_backend()  # before TensorFlow first compiles with XLA

from keras_sequencer import layers, schedules  # schedules: training checkpoints load
from keras_sequencer.features import feature_extractor
from keras_sequencer.imagenet import decode_predictions
from keras_sequencer.models import (
    MODEL_CONFIGS,
    Sequencer2D,
    Sequencer2DL,
    Sequencer2DM,
    Sequencer2DS,
    SequencerModel,
    VanillaSequencer,
)
from keras_sequencer.preprocessing import load_image, preprocess_input
from keras_sequencer.registry import MODEL_REGISTRY, create_model, list_models

# The package's version: the one place it is written (pyproject.toml reads it from here).
__version__ = "0.2.0"

__all__ = [
    "MODEL_CONFIGS",
    "MODEL_REGISTRY",
    "Sequencer2D",
    "Sequencer2DL",
    "Sequencer2DM",
    "Sequencer2DS",
    "SequencerModel",
    "VanillaSequencer",
    "create_model",
    "decode_predictions",
    "feature_extractor",
    "layers",
    "list_models",
    "load_image",
    "preprocess_input",
    "schedules",
]
