"""keras_sequencer.folders: ``ks.image_dataset`` (batched tf.data of an image folder with the
recipe's training transforms or timm's evaluation transform, and the class names), and the
README's fine-tuning snippet that uses it, run as written (read from README.md) with the
tests' tiny architecture in place of ``Sequencer2DS`` and its ImageNet download.

The command-line half of the transfer-learning loop is in tests/cli/test_main.py."""

import os

import numpy as np
import pytest

from keras_sequencer import cli
from tests.cli.helpers import predictions, write_images
from tests.helpers import REPO, TINY_TRAIN_ARCH, make_image_folder

CLASSES = ("cat", "dog", "fox")


def readme_snippet():
    """The README's fine-tuning code block."""
    with open(os.path.join(REPO, "README.md")) as f:
        section = f.read().split("## Fine-tuning", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
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
