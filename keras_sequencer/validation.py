"""``keras_sequencer.validation``: another name of :mod:`keras_sequencer.evaluation`
(top-1 / top-5 evaluation of an image folder), so that code importing it by this name keeps working.

It is the same module object (``sys.modules`` maps both names to it), so an
attribute set through either name is seen through both.
"""

import sys

from keras_sequencer import evaluation

sys.modules[__name__] = evaluation
