"""keras_sequencer.training.transforms: random resized crop and colour jitter against
timm's and torchvision's on the same random draws."""

import itertools
import math
import types

import numpy as np
import pytest

from keras_sequencer.training import transforms, xla
from tests.helpers import Draws, patched, to_numpy

scipy_stats = pytest.importorskip("scipy.stats")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
timm_transforms = pytest.importorskip("timm.data.transforms")


# ---------------------------------------------------------------- random resized crop
@pytest.mark.parametrize("height, width", [(32, 32), (40, 24), (300, 20), (12, 200), (7, 9)])
def test_crop_box_equals_timm_get_params_on_the_same_draws(height, width, monkeypatch):
    rng = np.random.RandomState(height * 1000 + width)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    image = types.SimpleNamespace()  # timm reads only its size
    monkeypatch.setattr(timm_transforms.F, "get_image_size", lambda img: [width, height])
    fallbacks = 0
    crop_box = tf.function(transforms.crop_box_from_draws)
    for _ in range(20):
        areas = rng.uniform(*scale, 10)
        logs = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), 10)
        offsets = rng.uniform(size=2)
        sequence = []
        for a, r in zip(areas, logs):  # the draws timm makes: attempts up to the first fit
            sequence += [a, r]
            fits = (
                round(math.sqrt(a * height * width * math.exp(r))) <= width
                and round(math.sqrt(a * height * width / math.exp(r))) <= height
            )
            if fits:
                sequence += list(offsets)
                break
        fallbacks += not fits
        patched(timm_transforms, "random", Draws(sequence), monkeypatch)
        expected = timm_transforms.RandomResizedCropAndInterpolation.get_params(image, scale, ratio)
        got = crop_box(height, width, areas, logs, offsets, ratio)
        assert tuple(int(v) for v in got) == tuple(expected)
    if height / width > 5 or width / height > 5:
        assert fallbacks > 0  # the centre-crop fallback was exercised


def test_crop_aspect_ratio_is_log_uniform_and_area_uniform():
    tf.random.set_seed(0)

    @tf.function
    def sample(n):
        draw = lambda _: tf.stack(transforms.random_resized_crop_box(2000, 2000, (0.25, 1.0), (3 / 4, 4 / 3)))  # noqa: E731
        return tf.map_fn(draw, tf.range(n))

    boxes = to_numpy(sample(600))
    log_ratio = np.log(boxes[:, 3] / boxes[:, 2])
    uniform = scipy_stats.uniform(math.log(3 / 4), math.log(4 / 3) - math.log(3 / 4))
    assert scipy_stats.kstest(log_ratio, uniform.cdf).pvalue > 0.01
    fraction = boxes[:, 2] * boxes[:, 3] / 2000**2
    accepted = fraction[(boxes[:, 2] < 2000) & (boxes[:, 3] < 2000)]
    assert abs(np.median(accepted) - 0.625) < 0.06


# ---------------------------------------------------------------- colour jitter
def test_color_jitter_equals_torchvision_adjustments():
    from PIL import Image
    from torchvision.transforms import functional as F

    image = np.random.RandomState(4).randint(0, 256, (16, 16, 3)).astype("uint8")
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for factors, order in (((0.7, 1.3, 0.9), (2, 0, 1)), ((1.35, 0.65, 1.4), (1, 2, 0))):
        expected = Image.fromarray(image)
        for op in order:
            expected = ops[op](expected, factors[op])
        ours = transforms.color_jitter_from_draws(tf.constant(image, tf.float32), tf.constant(factors), order)
        assert np.abs(to_numpy(ours) - np.asarray(expected, "float32")).max() <= 3.0


def test_color_jitter_compiled_gives_the_pixels_of_its_ops():
    """The pipeline runs the jitter compiled by XLA: the pixels of the same
    adjustments run op by op, for every order of the three."""
    image = tf.constant(np.random.RandomState(5).randint(0, 256, (64, 48, 3)), tf.float32)
    jitter = xla.compiled(transforms.color_jitter_from_draws)
    for seed, order in enumerate(itertools.permutations(range(3))):
        factors = tf.constant(np.random.RandomState(seed).uniform(0.6, 1.4, 3), tf.float32)
        order = tf.constant(order)
        expected = to_numpy(transforms.color_jitter_from_draws(image, factors, order))
        np.testing.assert_array_equal(to_numpy(jitter(image, factors, order)), expected)
