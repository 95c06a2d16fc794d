"""preprocess_input / load_image against timm's eval transform, include_preprocessing, decode_predictions."""

import keras
import numpy as np
import pytest

from keras_sequencer import Sequencer2D, load_image, preprocess_input
from tests.helpers import TINY_ARCH, requires_timm, to_numpy


def _pil_image(width, height, seed=0):
    """A smooth-plus-noise RGB test image (resampling differences would show on it)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype("uint8")
    return Image.fromarray(pixels)


def _timm_eval(image, input_size=(3, 224, 224), crop_pct=0.875):
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config(
        dict(
            input_size=input_size,
            crop_pct=crop_pct,
            interpolation="bicubic",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        )
    )
    assert config["crop_pct"] == crop_pct and config["interpolation"] == "bicubic"
    return create_transform(**config, is_training=False)(image).permute(1, 2, 0).numpy()


# Both sides resize/crop with PIL (bit-identical uint8 pixels) and then run the same
# float32 ops (x / 255, - mean, / std), so only float32 rounding may differ: 1e-6 is
# ~8 ulps at the largest normalised magnitude (|x| < 2.7). A different resize,
# crop offset or interpolation changes values by >1e-2.
@requires_timm
@pytest.mark.parametrize(
    "size, image_size, crop_pct",
    [((300, 200), 224, 0.875), ((190, 260), 224, 0.875), ((97, 80), 64, 0.9), ((500, 333), (96, 128), 0.875)],
)
def test_load_image_matches_timm_eval_transform(tmp_path, size, image_size, crop_pct):
    image = _pil_image(*size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    expected = _timm_eval(image, (3, height, width), crop_pct)
    path = tmp_path / "image.png"
    image.save(path)
    for source in (image, str(path)):
        loaded = load_image(source, image_size, crop_pct)
        assert loaded.shape == (height, width, 3) and loaded.dtype == np.float32
        assert loaded.min() >= 0 and loaded.max() <= 255
        np.testing.assert_allclose(preprocess_input(loaded), expected, atol=1e-6, rtol=0)


def test_load_image_rejects_bad_arguments():
    image = _pil_image(40, 40)
    with pytest.raises(ValueError, match="crop_pct"):
        load_image(image, 32, crop_pct=1.5)
    with pytest.raises(ValueError, match="image_size"):
        load_image(image, (32, 32, 3))


def test_preprocess_input_numpy_and_tensor():
    raw = np.random.RandomState(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")
    out = preprocess_input(raw)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, (raw / 255.0 - mean) / std, atol=1e-6)
    np.testing.assert_allclose(to_numpy(preprocess_input(keras.ops.convert_to_tensor(raw))), out, atol=1e-6)
    np.testing.assert_allclose(
        preprocess_input(raw.astype("uint8")), preprocess_input(raw.astype("uint8").astype("float32"))
    )
    with pytest.raises(ValueError, match=r"channels last \(\.\.\., 3\)"):
        preprocess_input(np.zeros((1, 3, 8, 8)))


def test_include_preprocessing_equals_preprocess_input():
    raw = np.random.RandomState(1).uniform(0, 255, (2, 28, 42, 3)).astype("float32")
    with_pre = Sequencer2D(**TINY_ARCH, include_preprocessing=True, classifier_activation=None)
    plain = Sequencer2D(**TINY_ARCH, classifier_activation=None)
    for layer in plain.layers:
        layer.set_weights(with_pre.get_layer(layer.name).get_weights())
    expected = to_numpy(plain(preprocess_input(raw)))
    # Rescaling multiplies by 1/255 and Normalization divides by sqrt(std**2): a few
    # float32 ulps on the inputs, which the network keeps at the 1e-6 level.
    np.testing.assert_allclose(to_numpy(with_pre(raw)), expected, atol=1e-5)


# ---------------------------------------------------------------- 16-bit, EXIF, normalize


def _gray16(width=48, height=40, seed=3):
    """16-bit grayscale pixels spanning the full 0-65535 range."""
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 65536, (height, width)).astype("uint16")
    pixels[0, 0], pixels[0, 1] = 0, 65535
    return pixels


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, suffix):
    from PIL import Image

    pixels = _gray16()
    path = str(tmp_path / f"gray16{suffix}")
    Image.fromarray(pixels).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # what Pillow gives for 16-bit files
        clipped = np.asarray(opened.convert("RGB"))
    assert (clipped == 255).mean() > 0.9  # PIL's convert("RGB") clips: nearly all white
    eight_bit = np.round(pixels / 257.0).astype("uint8")
    expected = load_image(Image.fromarray(eight_bit).convert("RGB"), (40, 48), crop_pct=1.0)
    loaded = load_image(path, (40, 48), crop_pct=1.0)
    np.testing.assert_array_equal(loaded, expected)
    assert loaded.min() == 0 and loaded.max() == 255
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])  # gray -> equal RGB channels


def test_32_bit_integer_mode_is_scaled_like_16_bit():
    from PIL import Image

    pixels = _gray16().astype("int32")
    image = Image.fromarray(pixels)
    assert image.mode == "I"
    expected = np.round(pixels / 257.0).astype("float32")
    np.testing.assert_array_equal(load_image(image, (40, 48), crop_pct=1.0)[..., 1], expected)


def test_exif_orientation_is_ignored_as_in_timm(tmp_path):
    """A JPEG tagged "rotate 90" is read with its pixels as stored (as timm's eval
    transform, which does not apply EXIF orientation)."""
    from PIL import Image

    image = _pil_image(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    tagged, plain = str(tmp_path / "tagged.jpg"), str(tmp_path / "plain.jpg")
    image.save(tagged, quality=95, exif=exif)
    image.save(plain, quality=95)
    with Image.open(tagged) as opened:
        assert opened.getexif()[0x0112] == 6
    loaded = load_image(tagged, (48, 64), crop_pct=1.0)
    assert loaded.shape == (48, 64, 3)  # not rotated to 64x48
    np.testing.assert_array_equal(loaded, load_image(plain, (48, 64), crop_pct=1.0))


def test_normalize_is_the_one_normalisation():
    from keras_sequencer import preprocessing

    raw = np.random.RandomState(2).uniform(0, 255, (2, 3, 4, 3)).astype("float32")
    expected = (raw / 255.0 - np.array(preprocessing.IMAGENET_MEAN)) / np.array(preprocessing.IMAGENET_STD)
    np.testing.assert_allclose(preprocessing.normalize(raw), expected, atol=1e-6)
    np.testing.assert_allclose(
        (raw - np.array(preprocessing.IMAGENET_MEAN_255)) / np.array(preprocessing.IMAGENET_STD_255),
        expected,
        atol=1e-6,
    )
    tensor = preprocessing.normalize(keras.ops.convert_to_tensor(raw))
    np.testing.assert_allclose(to_numpy(tensor), expected, atol=1e-6)
    np.testing.assert_array_equal(preprocess_input(raw), preprocessing.normalize(raw))


def test_normalize_inside_tf_data_on_any_backend():
    """The training pipeline calls normalize on TensorFlow tensors in tf.data, whatever
    the Keras backend."""
    tf = pytest.importorskip("tensorflow")
    from keras_sequencer.preprocessing import normalize

    raw = np.random.RandomState(4).uniform(0, 255, (5, 2, 2, 3)).astype("uint8")
    dataset = tf.data.Dataset.from_tensor_slices(raw).map(normalize).batch(5)
    (batch,) = [b.numpy() for b in dataset]
    np.testing.assert_allclose(batch, normalize(raw), atol=1e-6)


def test_image_extensions_cover_every_reader():
    from keras_sequencer.preprocessing import IMAGE_EXTENSIONS

    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


@requires_timm
@pytest.mark.parametrize(
    "mode, suffix, size",
    [
        ("L", ".png", (70, 50)),
        ("RGBA", ".png", (70, 50)),
        ("CMYK", ".jpg", (70, 50)),
        ("P", ".gif", (70, 50)),
        ("RGB", ".webp", (70, 50)),
        ("RGB", ".png", (1, 1)),
        ("LA", ".png", (50, 70)),
    ],
)
def test_image_modes_and_formats_load_as_timm_reads_them(tmp_path, mode, suffix, size):
    """Every mode Pillow opens gives what timm's loader (``convert("RGB")``) and
    eval transform give."""
    from PIL import Image

    image = _pil_image(*size, seed=5)
    image = image.convert(mode) if mode != "RGBA" else Image.merge("RGBA", (*image.split(), image.convert("L")))
    path = str(tmp_path / f"image{suffix}")
    image.save(path, **({"lossless": True} if suffix == ".webp" else {}))
    with Image.open(path) as opened:
        expected = _timm_eval(opened.convert("RGB"), (3, 32, 32))
    np.testing.assert_allclose(preprocess_input(load_image(path, 32)), expected, atol=1e-6, rtol=0)


def test_load_image_without_pillow_names_the_package_to_install(monkeypatch, tmp_path):
    import sys

    from keras_sequencer.optional import MissingPackageError

    for module in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    message = r"load_image needs the PIL.Image package .*keras-sequencer\[images\]"
    with pytest.raises(MissingPackageError, match=message):
        load_image(str(tmp_path / "x.jpg"))


def test_pil_resize_of_gray_and_float_pixels():
    """``pil_resize`` (validation in the training pipeline): a one-channel uint8 image
    resizes as Pillow's grayscale image; float pixels resize per channel unrounded."""
    from PIL import Image

    from keras_sequencer.preprocessing import pil_resize

    image = np.random.RandomState(0).randint(0, 256, (20, 31, 3)).astype("uint8")
    gray = pil_resize(image[..., :1], 16, 12, "bilinear")
    expected = np.asarray(Image.fromarray(image[..., 0]).resize((12, 16), Image.BILINEAR))
    assert gray.shape == (16, 12, 1) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], expected)
    floats = pil_resize(image.astype("float32") + 0.25, 16, 12, "bicubic")
    rounded = pil_resize(image, 16, 12, "bicubic")
    assert floats.shape == (16, 12, 3) and floats.dtype == np.float32
    assert np.abs(floats - 0.25 - rounded).max() <= 2.0 and (floats != np.round(floats)).any()
