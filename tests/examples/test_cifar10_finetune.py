"""examples/cifar10_finetune.py runs one short epoch on mock CIFAR-10 (no network)."""

import csv

import keras
import pytest

from keras_sequencer import registry
from keras_sequencer.training import data
from tests.helpers import create_model_with_tiny_s, load_script


@pytest.mark.slow  # tracing the recipe's RandAugment in tf.data
def test_cifar10_finetune_one_epoch_on_mock_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(registry, "create_model", create_model_with_tiny_s)  # a tiny "S"
    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: True)  # mock data: no download
    example = load_script("examples/cifar10_finetune.py")
    argv = [
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "16",
        "--weights",
        "none",
        "--warmup-epochs",
        "0",
        "--output-dir",
        str(tmp_path),
        "--data-dir",
        str(tmp_path / "tfds"),
    ]
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        assert example.main(argv) == 0
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0"] and "val_accuracy" in rows[0]
    model = keras.saving.load_model(tmp_path / "best.keras")
    assert tuple(model.output.shape) == (None, 10)  # CIFAR-10's classes
    assert (tmp_path / "curves.png").exists() and not (tmp_path / "backup").exists()


def _finetune():
    return load_script("examples/cifar10_finetune.py")


def test_finetune_shortens_the_recipe_warmup_to_short_runs(capsys):
    example = _finetune()
    config = example.build_config(example.parse_args(["--epochs", "2", "--weights", "none"]))
    assert (config.epochs, config.warmup_epochs, config.cooldown_epochs) == (2, 2, 0)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "warmup shortened to the run's 2 epoch(s)" in out
    config = example.build_config(example.parse_args(["--epochs", "8", "--weights", "none"]))
    assert config.warmup_epochs == 5 and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"warmup_epochs \(3\) cannot exceed epochs \(2\)"):
        example.build_config(example.parse_args(["--epochs", "2", "--warmup-epochs", "3"]))


def test_finetune_without_tfds_fails_before_any_work(tmp_path, monkeypatch):
    import sys

    from keras_sequencer import optional

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    out = tmp_path / "out"
    with pytest.raises(optional.MissingPackageError, match=r'pip install "keras-sequencer\[train\]"'):
        _finetune().main(["--epochs", "1", "--weights", "none", "--output-dir", str(out)])
    assert not out.exists()


@pytest.mark.slow  # a subprocess that imports the example and its packages
def test_finetune_script_reports_a_missing_package_in_one_line(tmp_path):
    """Run as a script: one error line, exit status 1, no traceback."""
    from tests.helpers import run_script_without

    code, errors, stderr = run_script_without(
        "cifar10_finetune.py",
        ["--epochs", "1", "--weights", "none", "--output-dir", str(tmp_path / "out")],
        "tensorflow_datasets",
    )
    assert code == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert len(errors) == 1 and 'pip install "keras-sequencer[train]"' in errors[0]
    assert errors[0] == stderr.strip().splitlines()[-1]
