"""Small training setups shared by the training tests; also a subprocess driver.

``python tests/train_helpers.py KILL_EPOCH keras-sequencer-train-args...`` runs the
``train`` command with a tiny ``sequencer2d_s`` (:func:`create_model_with_tiny_s`)
and SIGKILLs itself in the middle of epoch ``KILL_EPOCH`` (0-based, after its
second batch), like a crash or a pre-empted machine.
"""

import os
import signal
import sys

if __name__ == "__main__":  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras

from keras_sequencer import cli, data, datasets, registry, training
from keras_sequencer.models import Sequencer2D

# One stage, 2x2 tokens at 16x16: the cheapest Sequencer2D that still has every part.
TINY_TRAIN_ARCH = dict(layers=(1,), patch_sizes=(8,), embed_dims=(16,), hidden_sizes=(4,), mlp_ratios=(2.0,))


_create_model = registry.create_model


def create_model_with_tiny_s(name, **kwargs):
    """``registry.create_model``, except that ``"sequencer2d_s"`` is built with
    :data:`TINY_TRAIN_ARCH` (patch it over ``registry.create_model`` for a tiny "S")."""
    if name == "sequencer2d_s":
        return Sequencer2D(**TINY_TRAIN_ARCH, name=name, **kwargs)
    return _create_model(name, **kwargs)


def tiny_config(output, **overrides):
    settings = dict(
        model="tiny",
        arch=TINY_TRAIN_ARCH,
        image_size=(16, 16),
        crop_pct=1.0,
        batch_size=16,
        workers=1,
        epochs=3,
        warmup_epochs=1,
        cooldown_epochs=0,
        lr=1e-3,
        output=str(output),
        verbose=0,
    )
    settings.update(overrides)
    return training.TrainConfig(**settings)


def digits_splits(num_train=64, num_val=32, image_size=16):
    """The first scikit-learn digits as uint8 RGB images (fixed split)."""
    (x_train, y_train), (x_val, y_val) = datasets.load_digits(image_size)
    to_uint8 = lambda x: (x * 255).round().astype("uint8")  # noqa: E731
    return data.from_arrays(
        (to_uint8(x_train[:num_train]), y_train[:num_train]),
        (to_uint8(x_val[:num_val]), y_val[:num_val]),
        class_names=[str(i) for i in range(10)],
    )


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process at ``epoch`` (0-based) after its second batch."""

    def __init__(self, epoch):
        super().__init__()
        self.kill_epoch, self.epoch = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    registry.create_model = create_model_with_tiny_s
    make_callbacks = training.loop.make_callbacks
    training.loop.make_callbacks = lambda *a: [*make_callbacks(*a), KillAt(int(sys.argv[1]))]
    sys.exit(cli.main(sys.argv[2:]))
