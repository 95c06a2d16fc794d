"""``keras_sequencer.distribute``: another name of :mod:`keras_sequencer.training.distribute`
(the data-parallel strategy per backend), so that code importing it by this name keeps working.

It is the same module object (``sys.modules`` maps both names to it), so an
attribute set through either name is seen through both.
"""

import sys

from keras_sequencer.training import distribute

sys.modules[__name__] = distribute
