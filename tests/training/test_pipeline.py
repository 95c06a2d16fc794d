"""keras_sequencer.training.pipeline: the tf.data training and evaluation pipelines
(augmentation, mixing, repeated draws, resize and centre crop, batch trimming)."""

import keras
import numpy as np
import pytest

from keras_sequencer import training
from keras_sequencer.models import IMAGENET_MEAN, IMAGENET_STD
from keras_sequencer.training import data
from tests.helpers import TINY_ARCH, tiny_config, to_numpy


def test_train_pipeline_mixes_and_erases():
    images = np.full((8, 20, 20, 3), 128, np.uint8)
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    config = tiny_config("unused", mixup=0.8, cutmix=1.0, reprob=0.25)
    x, y = next(iter(training.train_pipeline(splits.train, config, 4, 8)))
    assert tuple(x.shape) == (8, 16, 16, 3) and tuple(y.shape) == (8, 4)
    y = y.numpy()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    assert (y.max(-1) < 1.0).any()  # labels were mixed

    erase = tiny_config(
        "unused", reprob=1.0, remode="const", hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0
    )
    x, y = next(iter(training.train_pipeline(splits.train, erase, 4, 8)))
    x = x.numpy()
    normalised = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    erased = (x == 0).all(-1)
    kept = np.isclose(x, normalised, atol=1e-5).all(-1)
    assert (erased | kept).all()  # every pixel is either the image or erased to 0
    assert ((erased.mean((1, 2)) > 0) & (erased.mean((1, 2)) < 0.5)).all()
    assert sorted(y.numpy().argmax(-1)) == sorted(np.arange(8) % 4) and (y.numpy().max(-1) == 1).all()


def test_train_pipeline_repeated_draws_anew_every_epoch_under_a_seed():
    """``fit``'s pipeline (``repeat=True``, one iterator) gives each epoch new
    MixUp draws; a new iterator per epoch replays the previous epoch's draws."""
    images = np.full((8, 20, 20, 3), 128, np.uint8)
    splits = data.from_arrays((images, np.arange(8)), (images, np.arange(8)))
    config = tiny_config("unused", mixup=0.8, cutmix=0.0)

    def lam(batch):  # 8 distinct labels: every row's largest target is max(lam, 1 - lam)
        return float(np.max(keras.ops.convert_to_numpy(batch[1])))

    keras.utils.set_random_seed(0)
    repeated = iter(training.train_pipeline(splits.train, config, 8, 8, repeat=True))
    epochs = [lam(next(repeated)) for _ in range(3)]  # one batch per epoch
    assert len(set(epochs)) == 3, epochs
    keras.utils.set_random_seed(0)
    once = training.train_pipeline(splits.train, config, 8, 8)
    assert lam(next(iter(once))) == lam(next(iter(once)))  # what repeat=True avoids


def test_eval_pipeline_resizes_and_centre_crops():
    image = np.random.RandomState(0).randint(0, 256, (1, 20, 20, 3)).astype("uint8")
    splits = data.from_arrays((image, [1]), (image, [1]))
    config = tiny_config("unused", image_size=(16, 16), crop_pct=0.8)  # resize 20 -> crop 16
    x, y = next(iter(training.eval_pipeline(splits.val, config, 3, 4)))
    expected = (image[:, 2:18, 2:18] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(y.numpy(), [[0, 1, 0]])


def test_eval_pipeline_is_load_image_and_keeps_the_aspect_ratio():
    """timm's eval transform: the shorter side resized, not the image squashed."""
    from PIL import Image

    from keras_sequencer.preprocessing import load_image, normalize

    image = np.random.RandomState(1).randint(0, 256, (1, 30, 21, 3)).astype("uint8")
    splits = data.from_arrays((image, [0]), (image, [0]))
    config = tiny_config("unused", image_size=(16, 16), crop_pct=0.8)  # shorter side 20: 21 x 30 -> 20 x 28
    x, _ = next(iter(training.eval_pipeline(splits.val, config, 2, 4)))
    expected = to_numpy(normalize(load_image(Image.fromarray(image[0]), (16, 16), 0.8)[None]))
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
    squashed = keras.ops.image.resize(image.astype("float32"), (20, 20), interpolation="bicubic")[:, 2:18, 2:18]
    assert np.abs(x.numpy() - to_numpy(normalize(squashed))).max() > 0.5


@pytest.mark.slow
def test_rand_augment_in_the_pipeline():
    """--aa rand-m9-mstd0.5-inc1 (slow: tracing keras.layers.RandAugment in tf.data)."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (8, 16, 16, 3)).astype("uint8")
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    plain = dict(hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    config = tiny_config("unused", aa="rand-m9-mstd0.5-inc1", **plain)
    x, y = next(iter(training.train_pipeline(splits.train.take(8), config, 4, 8)))
    assert tuple(x.shape) == (8, 16, 16, 3) and np.isfinite(x.numpy()).all()
    originals = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    # the batch is shuffled: compare the sorted per-image means
    changed = np.abs(np.sort(x.numpy().mean((1, 2, 3))) - np.sort(originals.mean((1, 2, 3))))
    assert changed.max() > 1e-3  # the images were augmented


def test_eval_batches_trimmed_to_split_over_devices():
    images = np.zeros((9, 16, 16, 3), "uint8")
    splits = data.from_arrays((images, [0] * 9), (images, [0] * 9))
    config = tiny_config("unused")
    sizes = lambda ds: [int(x.shape[0]) for x, _ in ds]  # noqa: E731
    assert sizes(training.eval_pipeline(splits.val, config, 2, 4)) == [4, 4, 1]
    assert sizes(training.eval_pipeline(splits.val, config, 2, 4, batch_multiple=2)) == [4, 4]
    assert sizes(training.eval_pipeline(splits.val, config, 2, 5, batch_multiple=2)) == [4, 4]  # 5 -> 4, 4


def test_pipeline_jitters_without_aa_and_mixes_even_batches():
    images = np.full((8, 20, 20, 3), 100, np.uint8)
    images[:, :, :, 0] = 200
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    plain = dict(
        model="t", arch=TINY_ARCH, image_size=(16, 16), workers=1, hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    x, _ = next(iter(training.train_pipeline(splits.train, training.TrainConfig(**plain), 4, 8)))
    assert np.ptp(to_numpy(x).mean((1, 2, 3))) > 1e-2  # colour jitter on by default
    steady = training.TrainConfig(**plain, color_jitter=0.0)
    x, _ = next(iter(training.train_pipeline(splits.train, steady, 4, 8)))
    assert np.ptp(to_numpy(x).mean((1, 2, 3))) < 1e-4
    with pytest.raises(ValueError, match="must be even"):
        training.train_pipeline(splits.train, training.TrainConfig(**plain, mixup=0.8), 4, 7)
