"""keras_sequencer.training.backup: a multi-worker run's backup commits only complete
epochs."""

import os

import keras
import numpy as np
import pytest

from keras_sequencer.training import backup


def test_backup_commits_only_complete_epochs(tmp_path, monkeypatch):
    """A weights file a killed process left half-written is never read back: only
    the epochs in state.json (renamed into place last) are resumed from."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    folder = str(tmp_path / "backup")
    callback = backup.AtomicBackupAndRestore(folder)
    callback.set_model(model)
    for epoch in range(3):
        model.fit(x, y, verbose=0)
        callback.on_epoch_end(epoch)
    assert backup.read_state(folder) == [2, 3]  # the two latest epochs are kept
    assert sorted(os.listdir(folder)) == ["epoch-2.weights.h5", "epoch-3.weights.h5", "state.json"]
    saved = [w.copy() for w in model.get_weights()]
    # a killed writer: a truncated temporary file and a truncated next epoch not yet committed
    for name in (".tmp-123-epoch-4.weights.h5", "epoch-4.weights.h5"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"\x89HDF\r\n")
    model.fit(x, y, verbose=0)  # the weights move on
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    restored.compile(optimizer="adam", loss="mse")
    callback = backup.AtomicBackupAndRestore(folder)
    callback.set_model(restored)
    callback.on_train_begin()
    assert restored._initial_epoch == 3
    for got, want in zip(restored.get_weights(), saved):
        np.testing.assert_array_equal(got, want)
    callback.on_epoch_end(3)  # the next save clears what the killed writer left
    assert sorted(os.listdir(folder)) == ["epoch-3.weights.h5", "epoch-4.weights.h5", "state.json"]
    with pytest.raises(ValueError, match="hold epochs \\[3, 4\\].*epoch 1"):
        monkeypatch.setattr(backup.distribute, "agree_min", lambda value: 1)
        callback.on_train_begin()
