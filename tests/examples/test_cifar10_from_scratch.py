"""examples/cifar10_from_scratch.py end to end on tfds mock data (no network)."""

import json

import numpy as np
import pytest

from tests.helpers import load_script, tiny_stand_in


def _example():
    return load_script("examples/cifar10_from_scratch.py")


@pytest.mark.slow
def test_cifar10_example_on_mock_data(tmp_path, monkeypatch):
    """Runs the example over its three CIFAR models for one epoch (one batch) of mock
    CIFAR-10: the script's data, training, curves and tables. Each name builds a tiny
    stand-in of its family (what the full CIFAR models compute is tested in
    test_registry.py), so the run costs seconds, not three full-size compilations."""
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("matplotlib")
    from PIL import Image

    import keras_sequencer
    from keras_sequencer.training import data

    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: True)  # mock data: no download

    monkeypatch.setattr(keras_sequencer, "create_model", tiny_stand_in)
    example = _example()
    out = tmp_path / "out"
    # ~16 of the 40 mock images fall in the 4 classes; 8 of them make exactly one
    # batch, so each model compiles its train / test step for one batch shape only.
    with tfds.testing.mock_data(num_examples=40):
        results = example.main(
            [
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--limit",
                "8",
                "--output-dir",
                str(out),
                "--data-dir",
                str(tmp_path / "tfds"),
            ]
        )
    assert [r["model"] for r in results] == [
        "sequencer2d_cifar_small",
        "sequencer2d_cifar_medium",
        "vanilla_bilstm_cifar",
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


def test_digits_without_scikit_learn_fails_before_any_work(tmp_path, monkeypatch):
    import sys

    from keras_sequencer import optional

    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    out = tmp_path / "out"
    with pytest.raises(
        optional.MissingPackageError,
        match=r"scikit-learn.*keras-sequencer\[train\]|keras-sequencer\[train\].*scikit-learn",
    ):
        _example().main(["--dataset", "digits", "--output-dir", str(out)])
    assert not out.exists()


def _fake_results(epochs=1):
    history = {key: [0.5] * epochs for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
    return [dict(model="m", title="M", params=1, loss=0.5, accuracy=0.5, seconds=0.0, history=history)]


def test_without_matplotlib_the_curves_are_skipped_and_the_run_finishes(tmp_path, monkeypatch, capsys):
    import sys

    example = _example()
    images = np.zeros((4, 32, 32, 3), "float32")
    monkeypatch.setattr(example, "load_data", lambda args: ((images, np.arange(4)), (images, np.arange(4))))
    monkeypatch.setattr(example, "train", lambda key, args, data: _fake_results()[0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "out"
    results = example.main(["--dataset", "digits", "--models", "vanilla", "--output-dir", str(out)])
    assert len(results) == 1 and (out / "results.md").exists() and (out / "results.json").exists()
    assert not (out / "loss.png").exists()
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1 and "skipped" in warnings[0] and "keras-sequencer[train]" in warnings[0]
    assert str(out) in captured.out  # the output folder is printed


def test_one_epoch_curves_are_visible(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self) or save(self, *a, **k)
    )
    paths = _example().save_curves(_fake_results(epochs=1), str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["loss.png", "accuracy.png"]
    lines = [line for figure in figures for axis in figure.axes for line in axis.get_lines()]
    assert len(lines) == 4 and all(len(line.get_xdata()) == 1 for line in lines)
    assert all(line.get_marker() not in (None, "", " ", "None") for line in lines)


@pytest.mark.slow  # a subprocess that imports the example and its packages
def test_from_scratch_script_reports_a_missing_package_in_one_line(tmp_path):
    """Run as a script: one error line, exit status 1, no traceback."""
    from tests.helpers import run_script_without

    code, errors, stderr = run_script_without(
        "cifar10_from_scratch.py", ["--dataset", "digits", "--output-dir", str(tmp_path)], "sklearn"
    )
    assert code == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert len(errors) == 1 and 'pip install "keras-sequencer[train]"' in errors[0]
