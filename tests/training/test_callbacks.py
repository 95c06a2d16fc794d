"""keras_sequencer.training.callbacks: the non-finite-loss stop, the history file and the
training curves (also without matplotlib)."""

import sys

import keras
import numpy as np
import pytest

from keras_sequencer import training
from keras_sequencer.training import data
from tests.helpers import read_csv_epochs, tiny_config


@pytest.mark.slow
def test_nan_loss_stops_with_a_message(tmp_path):
    images = np.full((32, 16, 16, 3), np.nan, "float32")
    splits = data.from_arrays((images, np.arange(32) % 10), (images, np.arange(32) % 10))
    with pytest.raises(training.NonFiniteLossError, match="loss became nan at epoch 1, batch 1"):
        training.fit(tiny_config(tmp_path), splits)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_without_matplotlib_the_curves_are_skipped_and_training_finishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    images = np.random.RandomState(0).randint(0, 256, (16, 16, 16, 3)).astype("uint8")
    splits = data.from_arrays((images, np.arange(16) % 2), (images[:8], np.arange(8) % 2))
    model, history = training.fit(tiny_config(tmp_path, epochs=2, warmup_epochs=0), splits)
    assert history.epoch == [0, 1]
    assert read_csv_epochs(tmp_path / "history.csv") == [0, 1]
    assert (tmp_path / "best.keras").exists() and not (tmp_path / "curves.png").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1 and "curves.png skipped" in warnings[0]
    assert 'pip install "keras-sequencer[train]"' in warnings[0]


def test_one_epoch_curves_are_visible(tmp_path, monkeypatch):
    """A one-epoch history plots every series with markers (a line through one
    point draws nothing)."""
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self) or save(self, *a, **k)
    )
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.25,1.4\n")
    training.plot_history(str(csv_path), str(tmp_path / "curves.png"))
    lines = [line for axis in figures[0].axes for line in axis.get_lines()]
    assert len(lines) == 4 and all(len(line.get_xdata()) == 1 for line in lines)
    assert all(line.get_marker() not in (None, "", " ", "None") for line in lines)
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
