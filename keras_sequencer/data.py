"""``keras_sequencer.data``: another name of :mod:`keras_sequencer.training.data`
(the training data readers: image folders, TFDS, arrays), so that code importing it by this name keeps working.

It is the same module object (``sys.modules`` maps both names to it), so an
attribute set through either name is seen through both.
"""

import sys

from keras_sequencer.training import data

sys.modules[__name__] = data
