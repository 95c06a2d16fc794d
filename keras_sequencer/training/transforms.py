"""timm's per-image training transforms as ``tf`` ops for the ``tf.data`` pipeline.

- :func:`random_resized_crop_box`: timm's
  ``RandomResizedCropAndInterpolation.get_params`` (area fraction uniform in
  ``scale``, aspect ratio log-uniform in ``ratio``, 10 attempts, else the
  centre crop of the closest allowed aspect ratio);
- :func:`random_erasing`: timm's ``RandomErasing`` on one normalised image
  (``mode`` ``pixel``: per-pixel N(0, 1), ``rand``: one N(0, 1) colour per box,
  ``const``: zeros; area fraction in ``(0.02, 1/3)``, log aspect in
  ``(log 0.3, log 1/0.3)``, 10 attempts per box, 1 to ``count`` boxes);
- :func:`color_jitter`: torchvision's ``ColorJitter(b, c, s)`` that timm uses
  when there is no ``--aa`` (factors uniform in ``[max(0, 1 - v), 1 + v]``,
  random order).

Each is split into its random draws and a deterministic function of them, so
the result can be checked against timm's on the same draws.
"""

import math

from keras_sequencer.training.xla import cached, compiled

ATTEMPTS = 10
ERASE_MODES = ("pixel", "rand", "const")


def crop_box_from_draws(height, width, area_fractions, log_ratios, offsets, ratio):
    """The crop ``(top, left, crop_height, crop_width)`` (int32 scalars) timm's
    ``get_params`` returns for these draws.

    ``area_fractions`` / ``log_ratios``: ``(10,)`` draws of the attempts;
    ``offsets``: ``(2,)`` uniform in ``[0, 1)``, the first fitting attempt's
    ``randint(0, height - h)`` / ``randint(0, width - w)`` as fractions.
    """
    import tensorflow as tf

    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    target_area = tf.cast(area_fractions, tf.float64) * h * w
    aspect = tf.exp(tf.cast(log_ratios, tf.float64))
    target_w = tf.round(tf.sqrt(target_area * aspect))  # Python's round: half to even
    target_h = tf.round(tf.sqrt(target_area / aspect))
    fits = (target_w <= w) & (target_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    # The centre crop of the closest allowed aspect ratio (timm's fallback).
    in_ratio = w / h
    low, high = min(ratio), max(ratio)
    fallback_w = tf.where(in_ratio > high, tf.round(h * high), w)
    fallback_h = tf.where(in_ratio < low, tf.round(w / low), h)
    found = tf.reduce_any(fits)
    crop_h = tf.cast(tf.where(found, target_h[first], fallback_h), tf.int32)
    crop_w = tf.cast(tf.where(found, target_w[first], fallback_w), tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    offsets = tf.cast(offsets, tf.float64)
    top = tf.where(
        found,
        tf.cast(tf.floor(offsets[0] * tf.cast(height - crop_h + 1, tf.float64)), tf.int32),
        (height - crop_h) // 2,
    )
    left = tf.where(
        found,
        tf.cast(tf.floor(offsets[1] * tf.cast(width - crop_w + 1, tf.float64)), tf.int32),
        (width - crop_w) // 2,
    )
    return top, left, crop_h, crop_w


def random_resized_crop_box(height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random crop box of an ``height`` x ``width`` image, as timm samples it
    (see :func:`crop_box_from_draws`)."""
    import tensorflow as tf

    area_fractions = tf.random.uniform([ATTEMPTS], scale[0], scale[1], dtype=tf.float64)
    log_ratios = tf.random.uniform([ATTEMPTS], math.log(ratio[0]), math.log(ratio[1]), dtype=tf.float64)
    offsets = tf.random.uniform([2], dtype=tf.float64)
    return crop_box_from_draws(height, width, area_fractions, log_ratios, offsets, ratio)


def random_resized_crop(image, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear"):
    """timm's random resized crop of one image ``(H, W, C)`` to ``size``
    ``(height, width)``; float32. ``interpolation``: ``bilinear``, ``bicubic``
    or ``random`` (one of the two per image, timm's default)."""
    import tensorflow as tf

    shape = tf.shape(image)
    top, left, crop_h, crop_w = random_resized_crop_box(shape[0], shape[1], scale, ratio)
    crop = tf.cast(image[top : top + crop_h, left : left + crop_w], tf.float32)

    def resize(method):
        return tf.image.resize(crop, size, method=method, antialias=True)

    if interpolation == "random":
        out = tf.cond(tf.random.uniform([]) < 0.5, lambda: resize("bilinear"), lambda: resize("bicubic"))
    else:
        out = resize(interpolation)
    return tf.ensure_shape(out, (*size, image.shape[-1]))


def erase_boxes_from_draws(height, width, area_fractions, log_aspects, offsets, count):
    """The boxes timm's ``RandomErasing._erase`` erases for these draws.

    ``area_fractions``, ``log_aspects``: ``(N, 10)`` draws of the attempts of
    ``N`` boxes; ``offsets``: ``(N, 2)`` in ``[0, 1)``; ``count``: how many of
    the ``N`` boxes are drawn (each with area ``fraction * H * W / count``).
    Returns ``(N, 4)`` int32 ``(top, left, box_height, box_width)``, height 0
    for a box none of whose attempts fits (timm then erases nothing).
    """
    import tensorflow as tf

    area = tf.cast(height * width, tf.float64)
    count_f = tf.cast(count, tf.float64)
    target_area = tf.cast(area_fractions, tf.float64) * area / count_f
    aspect = tf.exp(tf.cast(log_aspects, tf.float64))
    h = tf.round(tf.sqrt(target_area * aspect))
    w = tf.round(tf.sqrt(target_area / aspect))
    fits = (w < width) & (h < height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1)[:, None]
    h = tf.cast(tf.gather(h, first, batch_dims=1)[:, 0], tf.int32)
    w = tf.cast(tf.gather(w, first, batch_dims=1)[:, 0], tf.int32)
    active = tf.reduce_any(fits, axis=1) & (tf.range(tf.shape(fits)[0]) < count)
    offsets = tf.cast(offsets, tf.float64)
    top = tf.cast(tf.floor(offsets[:, 0] * tf.cast(height - h + 1, tf.float64)), tf.int32)
    left = tf.cast(tf.floor(offsets[:, 1] * tf.cast(width - w + 1, tf.float64)), tf.int32)
    h = tf.where(active, h, 0)
    return tf.stack([top, left, h, w], axis=1)


def erase_with_boxes(image, boxes, fills):
    """``image`` ``(H, W, C)`` with each box of ``boxes`` ``(N, 4)`` replaced by
    its fill, later boxes on top. ``fills`` ``(N, h, w, C)``: box ``k`` takes
    ``fills[k]`` cut to its size, or broadcast from a ``(1, 1, C)`` colour.
    Only the boxes' rows are rebuilt (the rest of the image is copied)."""
    import tensorflow as tf

    shape, channels = image.shape, image.shape[-1]
    for k in range(boxes.shape[0]):
        top, left, h = boxes[k, 0], boxes[k, 1], boxes[k, 2]
        w = tf.where(h > 0, boxes[k, 3], 0)  # a box of height 0 erases nothing
        patch = tf.broadcast_to(tf.cast(fills[k, :h, :w], image.dtype), tf.stack([h, w, channels]))
        band = tf.concat([image[top : top + h, :left], patch, image[top : top + h, left + w :]], axis=1)
        image = tf.concat([image[:top], band, image[top + h :]], axis=0)
    return tf.ensure_shape(image, shape)


def random_erasing(image, probability, mode="pixel", count=1, area=(0.02, 1 / 3), min_aspect=0.3):
    """timm's ``RandomErasing(probability, mode=mode, max_count=count)`` on one
    normalised image ``(H, W, C)`` (static H, W, C). The number of boxes is
    uniform in ``[1, count]``; the random fill is drawn only for the boxes of
    an image that is erased."""
    import tensorflow as tf

    if mode not in ERASE_MODES:
        raise ValueError(f"Unsupported remode {mode!r}; supported: {ERASE_MODES}.")
    height, width, channels = image.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    apply = tf.random.uniform([]) <= probability

    def erase():
        n = tf.random.uniform([], 1, count + 1, dtype=tf.int32) if count > 1 else 1
        boxes = erase_boxes_from_draws(
            height,
            width,
            tf.random.uniform([count, ATTEMPTS], area[0], area[1], dtype=tf.float64),
            tf.random.uniform([count, ATTEMPTS], *log_aspect, dtype=tf.float64),
            tf.random.uniform([count, 2], dtype=tf.float64),
            n,
        )
        if mode == "pixel":
            size = tf.reduce_max(boxes[:, 2:], axis=0)
            fills = tf.random.normal(tf.stack([count, size[0], size[1], channels]))
        elif mode == "rand":
            fills = tf.random.normal([count, 1, 1, channels])
        else:
            fills = tf.zeros([count, 1, 1, channels])
        return erase_with_boxes(image, boxes, fills)

    return tf.cond(apply, erase, lambda: image)


def grayscale(image):
    """ITU-R 601-2 luma ``(H, W, 1)`` of an RGB image in ``[0, 255]`` (PIL's ``L``)."""
    import tensorflow as tf

    return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114], image.dtype), -1, keepdims=True)


def adjust(image, op, factor):
    """torchvision's ``adjust_brightness`` (``op`` 0), ``adjust_contrast`` (1) or
    ``adjust_saturation`` (2) by ``factor`` on an RGB image in ``[0, 255]``
    (the result truncated to whole levels, as PIL's uint8 images are)."""
    import tensorflow as tf

    if op == 0:
        base = tf.zeros_like(image)
    elif op == 1:
        base = tf.round(tf.reduce_mean(grayscale(image))) + tf.zeros_like(image)
    else:
        base = grayscale(image) + tf.zeros_like(image)
    # PIL (which timm's ColorJitter runs on) stores every step as uint8, truncating.
    return tf.floor(tf.clip_by_value(base + factor * (image - base), 0.0, 255.0))


def color_jitter_from_draws(image, factors, order):
    """Brightness, contrast and saturation adjustments (``factors`` ``(3,)``)
    applied in ``order`` (a permutation of ``[0, 1, 2]``), as torchvision's
    ``ColorJitter`` applies its sampled ones."""
    import tensorflow as tf

    for step in range(3):
        op = order[step]
        image = tf.switch_case(
            tf.cast(op, tf.int32),
            [lambda o=o, image=image: adjust(image, o, tf.gather(factors, o)) for o in range(3)],
        )
    return image


def color_jitter(image, strength=0.4):
    """torchvision's ``ColorJitter(strength, strength, strength)`` (timm's
    ``--color-jitter``) on an RGB image in ``[0, 255]``."""
    import tensorflow as tf

    factors = tf.random.uniform([3], max(0.0, 1.0 - strength), 1.0 + strength)
    order = tf.random.shuffle(tf.range(3))
    return _compiled_color_jitter()(image, factors, order)


@cached
def _compiled_color_jitter():
    """:func:`color_jitter_from_draws` compiled by XLA (:mod:`.xla`): each step
    runs only its drawn adjustment (in ``tf.data`` TensorFlow lowers the
    ``switch_case`` so that all three run), fused into one pass."""
    return compiled(color_jitter_from_draws)
