"""Training callbacks: the non-finite-loss stop, the CSV history and its curve
PNG, resuming (:class:`~keras_sequencer.training.backup.AtomicBackupAndRestore`)
and the best checkpoint."""

import csv
import math
import os

import keras

from keras_sequencer import optional
from keras_sequencer.training.backup import AtomicBackupAndRestore


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteLossError` naming the epoch and batch.

    Unlike ``keras.callbacks.TerminateOnNaN`` the run fails loudly, and the last
    epoch's backup stays in place for a restart with other settings.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch "
                f"{batch + 1}; stopping. Lower the learning rate, enable gradient clipping "
                "(--clip-grad) or check the data for NaN/inf values."
            )


class TrainingCurves(keras.callbacks.Callback):
    """After every epoch, plots the CSV history (all runs, resumed ones too) to a PNG."""

    def __init__(self, csv_path, png_path):
        super().__init__()
        self.csv_path, self.png_path = csv_path, png_path

    def on_epoch_end(self, epoch, logs=None):
        plot_history(self.csv_path, self.png_path)


def read_history(csv_path):
    """The ``CSVLogger`` file as ``{column: [float, ...]}``."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))

    def number(text):
        try:
            return float(text)
        except ValueError:  # "NA": a metric missing that epoch
            return float("nan")

    return {key: [number(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_history(csv_path, png_path):
    """Loss and accuracy per epoch (train and validation) from the CSV history;
    every epoch is a marker, so a one-epoch run shows its points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(csv_path)
    epochs = [e + 1 for e in history.get("epoch", [])]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            if prefix + metric in history:
                axis.plot(epochs, history[prefix + metric], marker="o", label=prefix + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)


def make_callbacks(config, output_dir):
    """Best checkpoint, backup for resuming, CSV history, curve PNG, NaN stop.

    Without matplotlib the curve PNG is left out (one warning line) and the
    run trains as usual."""
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "history.csv")
    best = None  # keep the best of an interrupted run's epochs when resuming
    if os.path.exists(csv_path):
        previous = [v for v in read_history(csv_path).get("val_accuracy", []) if v == v]
        best = max(previous) if previous else None
    callbacks = [
        StopOnNonFiniteLoss(),
        AtomicBackupAndRestore(os.path.join(output_dir, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "best.keras"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(csv_path, append=True),
    ]
    png_path = os.path.join(output_dir, "curves.png")
    if optional.available("matplotlib", skipped=f"the training curves {png_path}"):
        callbacks.append(TrainingCurves(csv_path, png_path))
    return callbacks
