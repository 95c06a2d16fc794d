"""Image preprocessing identical to timm's evaluation transform for Sequencer2D.

timm's ``create_transform(input_size=(3, 224, 224), crop_pct=0.875,
interpolation="bicubic", is_training=False)`` is: resize the shorter side to
``floor(224 / 0.875) = 256`` (PIL bicubic), center crop 224, scale to [0, 1],
normalise with the ImageNet mean/std. :func:`load_image` does the geometric
part (returning 0-255 pixels), :func:`preprocess_input` the value part; a
model built with ``include_preprocessing=True`` does the latter itself.

This module is the one home of the ImageNet statistics, of the pixel
normalisation (:func:`normalize`, used by :func:`preprocess_input` and the
training pipeline), of the eval transform's geometry (:func:`eval_geometry`)
and Pillow's resize (:func:`pil_resize`), which the training pipeline's validation
also uses, and of the list of image file suffixes the package reads.
It imports nothing else of the package but :mod:`keras_sequencer.optional` (to name a missing Pillow).
"""

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# The type hint of the images (and scores) the package's functions take and return,
# defined here once: a numpy array (or nested lists), a tensor of any Keras backend
# (jax, TensorFlow, torch) or a symbolic KerasTensor. Keras 3 has no one tensor type,
# hence ``Any``.
TensorLike: TypeAlias = Any

# ImageNet-1k channel statistics of pixels scaled to [0, 1] (timm's IMAGENET_DEFAULT_*).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same statistics for 0-255 pixels.
IMAGENET_MEAN_255 = tuple(255.0 * m for m in IMAGENET_MEAN)
IMAGENET_STD_255 = tuple(255.0 * s for s in IMAGENET_STD)

DEFAULT_CROP_PCT = 0.875
# Every image file suffix the package reads (lower case): the ``validate`` command's
# folder scan and the training folders.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")

# PIL modes of 16-bit (and 32-bit integer) single-channel images: ``convert("RGB")``
# clips them at 255, so :func:`load_image` rescales them to 8 bits first.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def normalize(images: TensorLike) -> TensorLike:
    """ImageNet normalisation of 0-255 RGB pixels: ``(images / 255 - mean) / std``.

    The one implementation behind :func:`preprocess_input` and the training
    input pipeline. It runs where the pixels are: numpy arrays stay numpy
    (float32), TensorFlow tensors use TensorFlow ops (so it works inside
    ``tf.data`` whatever the Keras backend), anything else (backend tensors,
    symbolic ``KerasTensor``\\ s) goes through ``keras.ops``.

    Args:
        images: ``(..., 3)`` RGB values in ``[0, 255]``, channels last.

    Returns:
        float32 of the same shape and kind.
    """
    mean = np.asarray(IMAGENET_MEAN, "float32")
    std = np.asarray(IMAGENET_STD, "float32")
    if isinstance(images, np.ndarray):
        return (images.astype("float32") / np.float32(255.0) - mean) / std
    if type(images).__module__.startswith("tensorflow"):
        import tensorflow as tf

        return (tf.cast(images, tf.float32) / 255.0 - mean) / std
    from keras import ops

    images = ops.cast(images, "float32")
    return (images / 255.0 - ops.convert_to_tensor(mean)) / ops.convert_to_tensor(std)


def preprocess_input(images: TensorLike) -> TensorLike:
    """ImageNet normalisation: ``(images / 255 - mean) / std``, channels last.

    Args:
        images: ``(..., 3)`` RGB values in ``[0, 255]``, a numpy array (or
            nested lists) or a backend tensor.

    Returns:
        float32 of the same shape (numpy in, numpy out; tensors via ``keras.ops``).
    """
    shape = getattr(images, "shape", None)
    if shape is None:
        images = np.asarray(images)
        shape = images.shape
    if len(shape) == 0 or shape[-1] != 3:
        raise ValueError(f"preprocess_input expects RGB images with channels last (..., 3); got shape {tuple(shape)}.")
    return normalize(images)


def _sizes(image_size):
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ValueError(f"image_size must be an int or (height, width); got {image_size!r}.")
    return int(image_size[0]), int(image_size[1])


def to_rgb(image):
    """A ``PIL.Image`` in any mode as 8-bit RGB.

    16-bit grayscale (PIL modes ``I;16*`` and ``I``, as 16-bit PNG and TIFF
    files open) is scaled to 8 bits (``round(value / 257)``, so 65535 -> 255)
    rather than clipped at 255 as PIL's ``convert("RGB")`` does. Every other
    mode (grayscale, palette, RGBA, CMYK, ...) goes through ``convert("RGB")``,
    as timm's loader does; the alpha channel is dropped.
    """
    from PIL import Image

    if image.mode in _WIDE_INTEGER_MODES:
        pixels = np.asarray(image, dtype="float64")
        pixels = np.clip(np.round(pixels / 257.0), 0, 255).astype("uint8")
        image = Image.fromarray(pixels)  # uint8 (H, W): mode "L"
    return image.convert("RGB")


def image_error_reason(error):
    """A one-line reason for an exception raised while reading an image file
    (for naming the file in a batch that goes on without it)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def eval_geometry(
    image_height: int, image_width: int, height: int, width: int, crop_pct: float
) -> tuple[int, int, int, int]:
    """Where timm's eval transform puts an ``image_height`` x ``image_width``
    image for a ``height`` x ``width`` crop: ``(resized_height, resized_width,
    top, left)``, the size it is resized to (bicubic) and the corner of the
    centre crop in it.

    A square crop: torchvision's ``Resize(int)``, the shorter side to
    ``floor(height / crop_pct)``, the longer one truncated. Otherwise timm's
    ``ResizeKeepRatio``: the shorter side relative to ``(height, width) /
    crop_pct`` fits. Then torchvision's ``CenterCrop``. The aspect ratio is
    kept: a 500 x 375 photo is not squashed.
    """
    if height == width:
        scale = math.floor(height / crop_pct)
        if image_width <= image_height:
            new_w, new_h = scale, int(scale * image_height / image_width)
        else:
            new_w, new_h = int(scale * image_width / image_height), scale
    else:
        target_h, target_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
        ratio = min(image_height / target_h, image_width / target_w)
        new_h, new_w = round(image_height / ratio), round(image_width / ratio)
    return new_h, new_w, int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))


# Pillow's resampling filters (PIL.Image.Resampling values) by the names of the package's options.
PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def pil_resize(pixels: np.ndarray, height: int, width: int, interpolation: str = "bicubic") -> np.ndarray:
    """``pixels`` ``(h, w, C)`` resized by Pillow to ``(height, width, C)``, in
    their own dtype: the pixels timm's transforms (torchvision on PIL images)
    give. uint8 images with 1 or 3 channels resize as one 8-bit image, as timm's
    do; any other dtype or channel count resizes channel by channel in Pillow's
    float32 mode ``F`` (no rounding). ``interpolation``: a key of
    :data:`PIL_FILTERS`."""
    from PIL import Image

    resample = PIL_FILTERS[interpolation]
    size = (int(width), int(height))
    channels = pixels.shape[-1]
    if pixels.dtype == np.uint8 and channels in (1, 3):
        image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels))
        return np.asarray(image.resize(size, resample)).reshape(size[1], size[0], channels)
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)).resize(size, resample))
        for c in range(channels)
    ]
    return np.stack(planes, -1).astype(pixels.dtype)


def load_image(
    image: "str | os.PathLike | Image.Image",
    image_size: int | Sequence[int] = 224,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> np.ndarray:
    """Loads an image as timm's eval transform does, before normalisation.

    Resize (PIL bicubic) so the shorter side is ``floor(image_size / crop_pct)``
    (for ``(height, width)``: timm's ``ResizeKeepRatio``), then center crop.
    The EXIF orientation tag is ignored, as in timm's eval transform (PIL does
    not apply it on open): a photo is classified with its pixels as stored.
    16-bit images are scaled to 8 bits (see :func:`to_rgb`).

    Args:
        image: a file path or a ``PIL.Image``; converted to RGB.
        image_size: int or ``(height, width)`` of the crop.
        crop_pct: fraction of the resized image kept, in ``(0, 1]``.

    Returns:
        float32 array ``(height, width, 3)`` with values in ``[0, 255]`` (feed it
        to :func:`preprocess_input` or to an ``include_preprocessing=True`` model).

    Raises:
        OSError: the file cannot be read or is not an image PIL can decode
            (``PIL.UnidentifiedImageError`` is an ``OSError``).
        keras_sequencer.optional.MissingPackageError: Pillow is not
            installed (the message names the extra that installs it).
    """
    from keras_sequencer import optional

    Image = optional.require("PIL.Image", "keras_sequencer.load_image")

    height, width = _sizes(image_size)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct}.")
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = to_rgb(opened)
    else:
        image = to_rgb(image)
    img_w, img_h = image.size
    new_h, new_w, top, left = eval_geometry(img_h, img_w, height, width, crop_pct)
    if (new_w, new_h) != (img_w, img_h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    image = image.crop((left, top, left + width, top + height))
    return np.asarray(image, dtype="float32")
