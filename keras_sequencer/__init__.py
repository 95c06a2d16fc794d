"""keras-sequencer: Sequencer (Deep LSTM for Image Classification) for Keras 3."""

from keras_sequencer import runtime

runtime.configure_backend()  # before TensorFlow first compiles with XLA

from keras_sequencer import layers  # noqa: E402
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

__version__ = "0.1.0"
