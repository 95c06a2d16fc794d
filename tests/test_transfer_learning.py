"""The transfer-learning loop as a new user plays it, on every backend: a folder of
photos -> ``keras-sequencer train`` for N epochs -> ``predict`` with the trained file,
printing the folder's class names -> ``validate`` -> ``export`` to ONNX; then the same in
Python with the README's fine-tuning snippet (the tested code: read from README.md).

The model is the tests' tiny architecture at 16x16 (registered under a name for the
command line; built in place of ``Sequencer2DS`` for the snippet, without the ImageNet
download), so the loop takes seconds."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

from keras_sequencer import cli
from tests.cli.helpers import NAME, error_lines, register_tiny, write_images
from tests.helpers import EXPORT_PACKAGES, REPO, TINY_TRAIN_ARCH, make_image_folder, read_csv_epochs

CLASSES = ("cat", "dog", "fox")


def predictions(out):
    """``{image path: [(probability, label), ...]}`` from ``predict``'s output."""
    found, path = {}, None
    for line in out.splitlines():
        if not line.startswith("  "):
            path = line
            found[path] = []
        else:
            score, label = line.split(None, 1)
            found[path].append((float(score), label))
    return found


def test_folder_to_trained_classifier_on_the_command_line(tmp_path, monkeypatch, capsys):
    register_tiny(monkeypatch, arch=TINY_TRAIN_ARCH, input_size=16)
    data, out = tmp_path / "photos", tmp_path / "runs" / "small"
    make_image_folder(str(data), classes=CLASSES, per_class=4, size=(24, 20))
    photos = write_images(str(tmp_path), ["new1.jpg", "new2.png"], size=(40, 30))

    # 2. train for 2 epochs, with the default batch (128), larger than the 12 images
    argv = ["train", str(data), "--model", NAME, "--epochs", "2", "-j", "1", "--output", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "batch size lowered from 128 to 12 per device" in captured.out
    assert "keras-sequencer: 2 epochs: 2 of warmup" in captured.out
    assert read_csv_epochs(out / "history.csv") == [0, 1]  # N epochs run, no more
    best = str(out / "best.keras")

    # 3. predict with the trained file: the folder's class names, probabilities
    assert cli.main(["predict", *photos, "--weights", best, "--top", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    found = predictions(captured.out)
    assert list(found) == photos
    for top in found.values():
        assert sorted(label for _, label in top) == sorted(CLASSES)
        assert sum(p for p, _ in top) == pytest.approx(1.0, abs=1e-3)
        assert [p for p, _ in top] == sorted((p for p, _ in top), reverse=True)
    # the same file as --model; its weights alone, with its head size read off the file
    assert cli.main(["predict", photos[0], "--model", best, "--top", "1"]) == 0
    assert predictions(capsys.readouterr().out)[photos[0]][0][1] == found[photos[0]][0][1]
    import keras

    trained = keras.saving.load_model(best)
    assert trained.class_names == list(CLASSES)
    trained.save_weights(str(tmp_path / "best.weights.h5"))
    weights_argv = ["predict", photos[0], "--model", NAME, "--weights", str(tmp_path / "best.weights.h5")]
    assert cli.main([*weights_argv, "--top", "1"]) == 0
    top = predictions(capsys.readouterr().out)[photos[0]][0]
    assert top[1] == str(CLASSES.index(found[photos[0]][0][1]))  # no names in a weights file: the index
    # a head the weights do not have is an error, never ImageNet labels
    assert cli.main([*weights_argv, "--num-classes", "1000"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "has a 3-class classifier, not --num-classes 1000" in line

    # 4. validate with the trained file: the folders labelled by the model's class names
    results = tmp_path / "results.json"
    assert cli.main(["validate", str(data), "--weights", best, "--results-file", str(results)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith(f"{NAME}: top-1 ")
    report = json.loads(results.read_text())
    assert report["images"] == 12 and report["input_size"] == [3, 16, 16] and report["top5"] == 100.0

    # 5. export to ONNX, checked by ONNX Runtime against Keras
    if any(importlib.util.find_spec(m) is None for m in EXPORT_PACKAGES):
        pytest.skip("export needs the [export] extra")
    onnx = tmp_path / "small.onnx"
    assert cli.main(["export", best, "--format", "onnx", "--output", str(onnx)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and onnx.exists()
    difference = float(re.search(r"max abs difference .*: ([0-9.e+-]+)$", captured.out.strip())[1])
    assert difference < 1e-4


def readme_snippet():
    """The README's fine-tuning code block."""
    with open(os.path.join(REPO, "README.md")) as f:
        section = f.read().split("## Fine-tuning", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_fine_tuning_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """The snippet, with only its sizes made tiny (each replaced exactly where the
    README has it) and the tiny model built for ``Sequencer2DS``."""
    import keras

    import keras_sequencer
    from keras_sequencer import Sequencer2D

    make_image_folder(str(tmp_path / "photos"), classes=CLASSES, per_class=4, size=(24, 20))
    code = readme_snippet()
    for old, new, count in (
        ("image_size=224", "image_size=16", 2),
        ("batch_size=32", "batch_size=4", 2),
        ("epochs=10", "epochs=1", 1),
    ):
        assert code.count(old) == count, old
        code = code.replace(old, new)

    def tiny_s(weights=None, **kwargs):
        assert weights == "imagenet"
        return Sequencer2D(**TINY_TRAIN_ARCH, input_shape=(16, 16, 3), **kwargs)

    monkeypatch.setattr(keras_sequencer, "Sequencer2DS", tiny_s)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (the README's code)
    model = keras.saving.load_model("photos.keras")
    assert model.class_names == list(CLASSES) and tuple(model.output.shape) == (None, 3)
    (photo,) = write_images(str(tmp_path), ["new.jpg"], size=(40, 30))
    capsys.readouterr()
    assert cli.main(["predict", photo, "--weights", "photos.keras", "--top", "3"]) == 0
    top = predictions(capsys.readouterr().out)[photo]
    assert sorted(label for _, label in top) == sorted(CLASSES)
    assert sum(p for p, _ in top) == pytest.approx(1.0, abs=1e-3)  # logits -> probabilities


def test_image_dataset_batches_with_the_recipe_or_the_eval_transform(tmp_path):
    import keras_sequencer as ks

    make_image_folder(str(tmp_path), classes=CLASSES, per_class=5, size=(30, 20), val_classes=None)
    train, names = ks.image_dataset(tmp_path / "train", training=True, image_size=16, batch_size=4)
    assert names == list(CLASSES)
    batches = list(train.as_numpy_iterator())
    assert len(batches) == 15 // 4  # whole batches only
    images, labels = batches[0]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32 and labels.shape == (4, 3)
    assert np.allclose(labels.sum(-1), 1.0)  # one-hot, or mixed by MixUp/CutMix
    val, _ = ks.image_dataset(tmp_path / "val", training=False, image_size=16, batch_size=4)
    sizes = [len(x) for x, _ in val.as_numpy_iterator()]
    assert sizes == [4, 4, 4, 3]  # every image, in file order, the last batch partial
    first = next(val.as_numpy_iterator())
    np.testing.assert_array_equal(first[1][:, 0], [1, 1, 1, 1])  # the first files are cat's: class 0
    with pytest.warns(UserWarning, match="batch_size 64 is larger than its 15 images; using batches of 14"):
        ks.image_dataset(tmp_path / "train", training=True, image_size=16, batch_size=64)
    with pytest.raises(ValueError, match="has no class folders"):
        ks.image_dataset(tmp_path / "train" / "cat", training=False)
