"""examples/cifar10_from_scratch.py end to end on tfds mock data (no network)."""

import json

import numpy as np
import pytest

from tests.helpers import load_script


def _example():
    return load_script("examples/cifar10_from_scratch.py")


@pytest.mark.slow
def test_cifar10_example_on_mock_data(tmp_path):
    """Trains all three CIFAR models for one epoch (one batch) of mock CIFAR-10."""
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("matplotlib")
    from PIL import Image

    example = _example()
    out = tmp_path / "out"
    # ~16 of the 40 mock images fall in the 4 classes; 8 of them make exactly one
    # batch, so each model compiles its train / test step for one batch shape only.
    with tfds.testing.mock_data(num_examples=40):
        results = example.main([
            "--epochs", "1", "--batch-size", "8", "--limit", "8", "--output-dir", str(out),
            "--data-dir", str(tmp_path / "tfds"),
        ])
    assert [r["model"] for r in results] == [
        "sequencer2d_cifar_small", "sequencer2d_cifar_medium", "vanilla_bilstm_cifar"
    ]
    for result in results:
        assert np.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0
        assert len(result["history"]["val_loss"]) == 1
    for name in ("loss.png", "accuracy.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 3 and table[2].startswith("| Sequencer2D Small |")
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["classes"] == [0, 1, 2, 3]


def test_cifar10_example_keeps_four_classes():
    example = _example()
    labels = np.array([9, 0, 3, 5, 2, 1, 3])
    images = np.arange(len(labels), dtype="float32").reshape(-1, 1, 1, 1)
    kept_images, kept_labels = example._keep(images, labels, [0, 2, 3, 1], None)
    assert kept_images[:, 0, 0, 0].tolist() == [1, 2, 4, 5, 6]
    assert kept_labels.tolist() == [0, 3, 2, 1, 3]
    with pytest.raises(SystemExit):
        example.parse_args(["--classes", "0,0,1"])
