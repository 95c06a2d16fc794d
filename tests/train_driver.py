"""A ``keras-sequencer train`` run that dies: ``python tests/train_driver.py KILL_EPOCH train-args...``.

Runs the ``train`` command with a tiny ``sequencer2d_s``
(:func:`tests.helpers.create_model_with_tiny_s`) and SIGKILLs itself in the middle of
epoch ``KILL_EPOCH`` (0-based, after its second batch), like a crash or a pre-empted
machine.
"""

import os
import sys

if __name__ == "__main__":  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_sequencer import cli, registry, training
from tests.helpers import KillAt, create_model_with_tiny_s

if __name__ == "__main__":
    registry.create_model = create_model_with_tiny_s
    make_callbacks = training.loop.make_callbacks
    training.loop.make_callbacks = lambda *a: [*make_callbacks(*a), KillAt(int(sys.argv[1]))]
    sys.exit(cli.main(sys.argv[2:]))
