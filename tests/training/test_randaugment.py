"""timm's RandAugment in TensorFlow ops: the ``--aa`` grammar, each op's
argument and output against timm's PIL implementation, the random draws, and
the policy inside ``tf.data`` on the current Keras backend."""

import random
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sequencer.training import augment, randaugment
from keras_sequencer.training.augment import parse_auto_augment
from tests.helpers import HAS_TIMM, requires_timm

if HAS_TIMM:
    from PIL import Image
    from timm.data import auto_augment as timm_aa

ALL_OPS = sorted(set(augment.RAND_TRANSFORMS + augment.RAND_INCREASING_TRANSFORMS))
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
FILL = augment.IMAGENET_MEAN_PIXEL


def timm_hparams(translate_const=100):
    """What timm's ``transforms_imagenet_train`` passes, with bilinear resampling."""
    return dict(translate_const=translate_const, img_mean=FILL, interpolation=Image.BILINEAR)


def fixed_image():
    """37x29 RGB (not square, so a swapped height/width shows): ramps plus noise."""
    yy, xx = np.mgrid[0:37, 0:29]
    image = np.stack([(xx * 7 + yy * 3) % 256, (yy * 5) % 200 + 30, (xx * yy) % 256], -1)
    noise = np.random.RandomState(0).randint(-20, 20, image.shape)
    return np.clip(image + noise, 0, 255).astype("uint8")


def digit_images():
    """scikit-learn's digits as 32x32 RGB uint8 (each pixel 4x4), and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype("uint8")
    images = np.repeat(np.repeat(images, 4, 1), 4, 2)
    return np.repeat(images[..., None], 3, -1), digits.target


# -- the --aa grammar ---------------------------------------------------------


@requires_timm
@pytest.mark.parametrize(
    "aa",
    [
        "rand-m9-mstd0.5-inc1",
        "rand-m7-n3",
        "rand",
        "rand-inc1-n1-m5",
        "rand-m9-mstd101",
        "rand-m15-mstd1-mmax20-p0.8",
        "rand-m12",
        "rand-m9-mstd0.5-mstd2-mmax0",
        "rand-m3-inc0-p1.0",
    ],
)
def test_policy_matches_timm_rand_augment_transform(aa):
    policy = parse_auto_augment(aa)
    reference = timm_aa.rand_augment_transform(aa, timm_hparams())
    assert policy.num_ops == reference.num_layers and reference.choice_weights is None
    assert list(policy.transforms) == [op.name for op in reference.ops]
    for op in reference.ops:
        assert (policy.magnitude, policy.prob) == (op.magnitude, op.prob)
        assert policy.magnitude_std == op.magnitude_std
        assert policy.magnitude_max == op.magnitude_max
        assert policy.upper_bound == float(op.magnitude_max or 10)


@pytest.mark.parametrize(
    "aa",
    [
        "original",
        "augmix-m5",
        "rand-m9-w0",
        "rand-tweights",
        "rand-m9.5",
        "rand-n0",
        "rand-p2",
        "rand-inc",
        "rand-mstd-1",
        "rand-m9-foo",
    ],
)
def test_unsupported_aa_is_one_line_value_error_naming_the_flag(aa):
    with pytest.raises(ValueError, match="--aa") as error:
        parse_auto_augment(aa)
    assert "\n" not in str(error.value)


def test_no_augmentation():
    assert parse_auto_augment(None) is None and parse_auto_augment("none") is None


# -- each op against timm ------------------------------------------------------


def timm_argument(name, magnitude, negate, hparams):
    """timm's LEVEL_TO_ARG with its random sign forced (-v if random() > 0.5)."""
    level_fn = timm_aa.LEVEL_TO_ARG[name]
    with mock.patch.object(timm_aa.random, "random", return_value=0.9 if negate else 0.1):
        return level_fn(magnitude, hparams) if level_fn else ()


@requires_timm
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_argument_equals_timm(name):
    hparams = timm_hparams()
    for magnitude in (0.0, 1.0, 2.5, 4.3, 7.5, 9.0, 9.99, 10.0, 14.0):
        for negate in (False, True):
            expected = timm_argument(name, magnitude, negate, hparams)
            ours = randaugment.op_argument(name, magnitude, negate)
            if not expected:
                assert ours is None
            else:
                assert float(ours) == pytest.approx(expected[0], abs=1e-12), (magnitude, negate)


@requires_timm
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_output_equals_timm_pil(name):
    """Colour ops equal Pillow exactly. Geometric ops use Pillow's bilinear
    sampling (edge-clamped neighbours, fill outside, truncation) in float64:
    equal except a few pixels off by 1 where the rotation's cos/sin differ
    from Python's in the last bits and a truncation flips."""
    image = fixed_image()
    hparams = timm_hparams()
    op = timm_aa.AugmentOp(name, prob=1.0, hparams=hparams)
    for magnitude in (1.0, 5.0, 9.0, 10.0):
        for negate in (False, True):
            argument = timm_argument(name, magnitude, negate, hparams)
            ours = randaugment.op_argument(name, magnitude, negate)
            ours = randaugment.apply_op(name, image, ours).numpy().astype(int)
            try:
                expected = np.asarray(op.aug_fn(Image.fromarray(image), *argument, **op.kwargs))
            except ValueError:  # Pillow >= 10 refuses posterize to 0 bits: the intent is black
                assert "Posterize" in name and argument[0] <= 0
                np.testing.assert_array_equal(ours, 0)
                continue
            difference = np.abs(ours - expected.astype(int))
            if name in GEOMETRIC:
                assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (magnitude, negate)
            else:
                np.testing.assert_array_equal(ours, expected, err_msg=f"{name} m={magnitude}")


@requires_timm
def test_geometric_ops_move_pixels_as_pillow_on_a_square_image():
    """Translate by a whole number of pixels: exact, fill on the uncovered side."""
    image = np.random.RandomState(1).randint(0, 256, (20, 20, 3)).astype("uint8")
    ours = randaugment.apply_op("TranslateXRel", image, 0.25).numpy()  # 5 pixels left
    np.testing.assert_array_equal(ours[:, :15], image[:, 5:])
    np.testing.assert_array_equal(ours[:, 15:], np.broadcast_to(FILL, (20, 5, 3)))
    expected = timm_aa.translate_x_rel(Image.fromarray(image), 0.25, fillcolor=FILL, resample=Image.BILINEAR)
    np.testing.assert_array_equal(ours, np.asarray(expected))


def test_every_op_in_the_policy_gives_the_pixels_of_apply_op():
    """Inside ``rand_augment`` most ops run compiled by XLA; each gives exactly
    the pixels of :func:`randaugment.apply_op` (checked against Pillow above) on
    the same draws. One op per image, always applied, 120 seeds: every op of the
    increasing set, both signs of the geometric ones."""
    image = fixed_image()
    policy = parse_auto_augment("rand-m9-mstd0.5-inc1-n1-p1.0")
    seeds = np.stack([np.arange(120), np.full(120, 11)], -1)

    def augment_with_draws(seed):
        return randaugment.rand_augment(image, policy, seed), randaugment.sample_ops(policy, seed)

    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(augment_with_draws)
    seen = set()
    for augmented, draws in dataset.as_numpy_iterator():
        name = policy.transforms[draws["index"][0]]
        argument = randaugment.op_argument(name, draws["magnitude"][0], draws["negate"][0])
        expected = randaugment.apply_op(name, image, argument).numpy()
        np.testing.assert_array_equal(augmented, expected, err_msg=name)
        seen.add((name, bool(draws["negate"][0]) if name in GEOMETRIC else None))
    assert {name for name, _ in seen} == set(policy.transforms)
    assert {(name, sign) for name, sign in seen if name in GEOMETRIC} >= {(g, s) for g in GEOMETRIC for s in (0, 1)}


# -- the random draws ----------------------------------------------------------


def draws(aa, count=3000):
    policy = parse_auto_augment(aa)
    seeds = tf.data.Dataset.range(count).map(lambda i: tf.stack([i, tf.constant(7, tf.int64)]))
    batches = seeds.map(lambda seed: randaugment.sample_ops(policy, seed)).batch(count)
    return policy, {k: v.numpy() for k, v in next(iter(batches)).items()}


def test_draws_follow_timm_sampling():
    policy, d = draws("rand-m9-mstd0.5-inc1")
    assert d["index"].shape == (3000, 2)
    frequencies = np.bincount(d["index"].ravel(), minlength=15) / d["index"].size
    assert np.abs(frequencies - 1 / 15).max() < 0.02  # uniform, with replacement
    assert abs(d["apply"].mean() - 0.5) < 0.03 and abs(d["negate"].mean() - 0.5) < 0.03
    magnitude = d["magnitude"]
    assert magnitude.min() >= 0 and magnitude.max() <= 10.0
    assert abs(magnitude.mean() - 9.0) < 0.05 and abs(magnitude.std() - 0.5) < 0.05
    # a rotation is at most 30 degrees (m = 10) and 27 on average at m9
    degrees = randaugment.op_argument("Rotate", magnitude, d["negate"]).numpy()
    assert np.abs(degrees).max() <= 30.0 and abs(np.abs(degrees).mean() - 27.0) < 0.2
    assert abs(np.mean(degrees < 0) - 0.5) < 0.03
    _, uniform = draws("rand-m8-mstd101")  # mstd > 100: uniform in [0, m]
    assert abs(uniform["magnitude"].mean() - 4.0) < 0.2 and uniform["magnitude"].max() <= 8.0
    _, fixed = draws("rand-m15-n1", count=50)  # no noise: clipped to 10, as in timm
    np.testing.assert_array_equal(fixed["magnitude"], 10.0)


def test_same_seed_same_image():
    image = fixed_image()
    policy = parse_auto_augment("rand-m9-mstd0.5-inc1-n4")
    first = randaugment.rand_augment(image, policy, seed=tf.constant([3, 4]))
    again = randaugment.rand_augment(image, policy, seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert first.dtype == tf.float32 and np.all(first.numpy() == np.round(first.numpy()))


# -- the whole policy in tf.data ----------------------------------------------


@pytest.mark.slow
def test_policy_in_tf_data_feeds_a_model_on_this_backend():
    images = np.random.RandomState(0).randint(0, 256, (16, 24, 24, 3)).astype("uint8")
    policy = parse_auto_augment("rand-m9-mstd0.5-inc1-p1.0")  # every drawn op applied
    seeds = np.stack([np.arange(16), np.full(16, 5)], -1)  # per image: the same draws each pass
    dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
        lambda image, seed: randaugment.rand_augment(image, policy, seed), num_parallel_calls=2
    )
    augmented = np.stack(list(dataset.as_numpy_iterator()))
    assert augmented.shape == images.shape and augmented.min() >= 0 and augmented.max() <= 255
    assert (augmented != images).any(axis=(1, 2, 3)).mean() > 0.7
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Rescaling(1 / 255.0)])
    out = model.predict(dataset.batch(8), verbose=0)
    np.testing.assert_allclose(out, augmented / 255.0, rtol=1e-6)


@requires_timm
@pytest.mark.slow
def test_digits_stay_recognisable_as_with_timm():
    """A linear classifier fitted on clean digits classifies timm's
    rand-m9-mstd0.5-inc1 images and these about equally well (keras'
    RandAugment(factor=0.9) made about half of them unreadable)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = digit_images()

    def features(x):  # back to 8x8 grey, 0-1
        return x.reshape(len(x), 8, 4, 8, 4, 3).mean((2, 4, 5)).reshape(len(x), -1) / 255

    order = np.random.RandomState(0).permutation(len(images))
    train, test = order[:1000], order[1000:]
    classifier = LogisticRegression(max_iter=2000).fit(features(images[train]), labels[train])
    assert classifier.score(features(images[test]), labels[test]) > 0.9
    aa = "rand-m9-mstd0.5-inc1"
    policy = parse_auto_augment(aa)
    seeds = np.stack([np.arange(len(test)), np.zeros(len(test), int)], -1)  # reproducible draws
    dataset = tf.data.Dataset.from_tensor_slices((images[test], seeds)).map(
        lambda image, seed: randaugment.rand_augment(image, policy, seed), num_parallel_calls=2
    )
    ours = np.stack(list(dataset.as_numpy_iterator()))

    def posterize(img, bits, **kwargs):  # 0 bits: black, which Pillow >= 10 refuses
        return Image.new(img.mode, img.size, 0) if bits <= 0 else timm_aa.posterize(img, bits)

    with mock.patch.dict(timm_aa.NAME_TO_OP, {"PosterizeIncreasing": posterize}):
        reference = timm_aa.rand_augment_transform(aa, timm_hparams(translate_const=14))
    random.seed(0)
    np.random.seed(0)
    theirs = np.stack([np.asarray(reference(Image.fromarray(image))) for image in images[test]])
    ours_accuracy = classifier.score(features(ours), labels[test])
    timm_accuracy = classifier.score(features(theirs), labels[test])
    assert ours_accuracy > 0.5 and abs(ours_accuracy - timm_accuracy) < 0.07
    changed = lambda x: (x != images[test]).any(axis=(1, 2, 3)).mean()  # noqa: E731
    assert abs(changed(ours) - changed(theirs)) < 0.07


def test_rand_augment_string():
    policy = parse_auto_augment("rand-m7-n3")
    assert (policy.magnitude, policy.num_ops, policy.magnitude_std, policy.increasing) == (7, 3, 0.0, False)
    assert parse_auto_augment(None) is None
