"""``python -m keras_sequencer.cli``: the ``keras-sequencer`` command."""

import sys

from keras_sequencer.cli import main

sys.exit(main())
