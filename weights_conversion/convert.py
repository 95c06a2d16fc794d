"""Convert a PyTorch Sequencer2D checkpoint to Keras weights.

    python weights_conversion/convert.py sequencer2d_s.safetensors sequencer2d_s.weights.h5 --model sequencer2d_s
    python weights_conversion/convert.py sequencer2d_s.pth sequencer2d_s.weights.h5   # okojoalg layout, needs torch

Same as ``keras-sequencer convert``; the work is done by
``keras_sequencer.registry.convert_checkpoint``.
"""

import sys

from keras_sequencer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
