"""keras-sequencer: Sequencer (Deep LSTM for Image Classification) for Keras 3."""

from keras_sequencer import layers
from keras_sequencer.features import feature_extractor
from keras_sequencer.imagenet import decode_predictions
from keras_sequencer.models import (
    MODEL_CONFIGS,
    Sequencer2D,
    Sequencer2DL,
    Sequencer2DM,
    Sequencer2DS,
)
from keras_sequencer.preprocessing import load_image, preprocess_input

__version__ = "0.1.0"
