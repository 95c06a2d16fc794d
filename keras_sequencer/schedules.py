"""The learning-rate schedule of the training recipe, registered with Keras when
the package is imported, so that a checkpoint written by a training run
(``best.keras``, with its optimizer) loads with only ``keras_sequencer`` imported."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sequencer")
class TimmCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """timm's ``CosineLRScheduler`` as timm's ``train.py`` drives it (one cycle,
    no warmup prefix, no noise), as a function of the optimizer step.

    With ``t`` the epoch (``on_updates=False``, timm's default: the rate is
    constant within an epoch) or the update (``on_updates=True``, timm's
    ``--sched-on-updates``), and ``T``, ``W`` the ``epochs`` and ``warmup_epochs``
    in the same unit::

        t < W:      warmup_lr + t * (lr - warmup_lr) / W
        W <= t < T: min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2
        t >= T:     min_lr   (the cooldown)

    The cosine counts ``t`` from 0, so it is already past its peak when the
    warmup ends, as in timm.
    """

    def __init__(self, lr, min_lr, epochs, warmup_lr, warmup_epochs, steps_per_epoch, on_updates=False):
        self.lr, self.min_lr, self.warmup_lr = float(lr), float(min_lr), float(warmup_lr)
        self.epochs, self.warmup_epochs = int(epochs), int(warmup_epochs)
        self.steps_per_epoch, self.on_updates = int(steps_per_epoch), bool(on_updates)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        scale = self.steps_per_epoch if self.on_updates else 1
        t = step if self.on_updates else ops.floor(step / self.steps_per_epoch)
        total, warmup = float(self.epochs * scale), float(self.warmup_epochs * scale)
        cosine = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + ops.cos(math.pi * t / total))
        rate = ops.where(t < total, cosine, self.min_lr)
        if warmup:
            ramp = self.warmup_lr + t * ((self.lr - self.warmup_lr) / warmup)
            rate = ops.where(t < warmup, ramp, rate)
        return rate

    def get_config(self):
        return dict(
            lr=self.lr,
            min_lr=self.min_lr,
            epochs=self.epochs,
            warmup_lr=self.warmup_lr,
            warmup_epochs=self.warmup_epochs,
            steps_per_epoch=self.steps_per_epoch,
            on_updates=self.on_updates,
        )
