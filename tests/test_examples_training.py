"""examples/cifar10_finetune.py runs one short epoch on mock CIFAR-10 (no network)."""

import csv

import keras
import pytest
from train_helpers import create_model_with_tiny_s

from keras_sequencer import data, registry
from tests.helpers import load_script


@pytest.mark.slow  # the recipe's RandAugment takes ~15-60 s to trace in tf.data
def test_cifar10_finetune_one_epoch_on_mock_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(registry, "create_model", create_model_with_tiny_s)  # a tiny "S"
    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: True)  # mock data: no download
    example = load_script("examples/cifar10_finetune.py")
    argv = ["--epochs", "1", "--batch-size", "8", "--image-size", "16", "--weights", "none",
            "--warmup-epochs", "0", "--output-dir", str(tmp_path), "--data-dir", str(tmp_path / "tfds")]
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        assert example.main(argv) == 0
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0"] and "val_accuracy" in rows[0]
    model = keras.saving.load_model(tmp_path / "best.keras")
    assert tuple(model.output.shape) == (None, 10)  # CIFAR-10's classes
    assert (tmp_path / "curves.png").exists() and not (tmp_path / "backup").exists()
