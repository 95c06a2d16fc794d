"""Resuming an interrupted run: a ``BackupAndRestore`` that a killed process
cannot leave half-written, and that makes all workers resume at the same epoch.

At the end of every epoch each worker writes ``epoch-<N>.weights.h5`` (model and
optimizer state after ``N`` finished epochs) under a temporary name and renames
it into place, then records it in ``state.json`` the same way; ``state.json``
is the commit point, so a file a killed process was writing is never read back.
The two latest epochs are kept: a worker killed while another had already
committed the next epoch can still meet it at the epoch both have, which
:func:`keras_sequencer.training.distribute.agree_min` finds at the start of ``fit``.
"""

import json
import os

import keras

from keras_sequencer.training import distribute

STATE = "state.json"
KEEP = 2


def weights_name(epoch):
    return f"epoch-{epoch}.weights.h5"


def replace_atomically(path, write):
    """``write(temporary_path)``, then renames the file to ``path`` (atomic on POSIX).
    The temporary name keeps ``path``'s suffix (Keras checks ``.weights.h5``)."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_state(backup_dir):
    """Finished epochs with a complete weights file, from ``state.json`` (sorted)."""
    path = os.path.join(backup_dir, STATE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        epochs = json.load(f).get("epochs", [])
    return sorted(e for e in epochs if os.path.exists(os.path.join(backup_dir, weights_name(e))))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore(backup_dir)`` (saved every epoch, removed
    when training completes) with atomic files and a cross-worker resume epoch."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True, double_checkpoint=False)

    def on_train_begin(self, logs=None):
        epochs = read_state(self.backup_dir)
        epoch = distribute.agree_min(epochs[-1] if epochs else 0)
        if epoch == 0:
            return
        if epoch not in epochs:
            raise ValueError(
                f"The backups in {self.backup_dir} hold epochs {epochs}, but another worker's "
                f"latest is epoch {epoch}; the workers cannot resume together. Remove the "
                "backup/ folders of all workers to start over."
            )
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, weights_name(epoch)))
        self.model._initial_epoch = epoch  # what BackupAndRestore sets to resume

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        epoch = self._current_epoch
        path = os.path.join(self.backup_dir, weights_name(epoch))
        replace_atomically(path, self.model.save_weights)
        kept = [*read_state(self.backup_dir), epoch][-KEEP:]

        def write_state(tmp):
            with open(tmp, "w") as f:
                json.dump({"epochs": kept}, f)

        replace_atomically(os.path.join(self.backup_dir, STATE), write_state)
        for name in os.listdir(self.backup_dir):
            stale = name.startswith(".tmp-") or name.startswith("epoch-")
            if stale and name not in {weights_name(e) for e in kept}:
                os.remove(os.path.join(self.backup_dir, name))
