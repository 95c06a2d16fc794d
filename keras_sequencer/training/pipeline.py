"""``tf.data`` input pipelines for training and validation (``fit`` accepts
``tf.data`` on every Keras backend); the normalisation is
:func:`keras_sequencer.preprocessing.normalize`, the package's one.

Both take the unbatched ``(uint8 image (H, W, 3), int32 label)`` datasets of
:mod:`keras_sequencer.training.data` and yield ``(float32 (B, height, width, 3)
normalised images, float32 (B, num_classes) one-hot or mixed labels)``.
"""

from keras_sequencer.preprocessing import eval_geometry, normalize, pil_resize
from keras_sequencer.training.augment import parse_auto_augment
from keras_sequencer.training.mix import make_mixer
from keras_sequencer.training.transforms import color_jitter, random_erasing, random_resized_crop
from keras_sequencer.training.xla import cached, compiled


@cached
def _clipped_and_normalized():
    """``normalize(clip(image, 0, 255))``, compiled (one pass over the image)."""
    import tensorflow as tf

    return compiled(lambda image: normalize(tf.clip_by_value(image, 0.0, 255.0)))


def train_pipeline(dataset, config, num_classes, global_batch_size, repeat=False):
    """Augmented, batched training data: ``(images float32 normalised, one-hot labels)``.

    timm's training transforms in timm's order. Per image
    (:mod:`~keras_sequencer.training.transforms`): random resized crop
    (``scale``, log-uniform ``ratio``, 10 attempts, centre-crop fallback;
    ``train_interpolation``), horizontal flip, RandAugment (``aa``) or else
    colour jitter (``color_jitter``), normalisation, random erasing (``reprob``,
    ``remode``, ``recount``). Per batch (:mod:`~keras_sequencer.training.mix`):
    MixUp / CutMix (``mixup``, ``cutmix``, ``mixup_prob``,
    ``mixup_switch_prob``, ``mixup_mode``) of the one-hot labels; the loss's
    label smoothing then gives timm's smoothed soft targets.

    ``repeat``: repeat the epoch without end, each pass reshuffled, and give
    ``model.fit`` ``steps_per_epoch=len(dataset) // global_batch_size``. Then
    one iterator serves the whole run and every epoch gets new random draws, as
    timm's loader does. Without it, each epoch starts a new iterator, and under
    a global seed (``keras.utils.set_random_seed``) every new iterator replays
    the same sequence of crops, flips, RandAugment ops, erasing boxes and
    MixUp/CutMix draws (given to other images, as the order is reshuffled).
    """
    import tensorflow as tf

    height, width = config.image_size
    from keras_sequencer.training.randaugment import rand_augment

    policy = parse_auto_augment(config.aa)  # timm's RandAugment, on 0-255 pixels
    jitter = not policy and config.color_jitter > 0

    def per_image(image, label):
        image = random_resized_crop(image, (height, width), config.scale, config.ratio, config.train_interpolation)
        if config.hflip > 0:
            flip = tf.random.uniform([]) < config.hflip
            image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        if policy:
            image = rand_augment(image, policy)
        if jitter:
            image = color_jitter(image, config.color_jitter)
        image = _clipped_and_normalized()(image)
        if config.reprob > 0:
            image = random_erasing(image, config.reprob, config.remode, config.recount)
        return image, label

    mixer = make_mixer(config.mixup, config.cutmix, config.mixup_prob, config.mixup_switch_prob, config.mixup_mode)
    if mixer and global_batch_size % 2:
        raise ValueError(
            f"MixUp/CutMix pair each image with the mirrored one of its batch: the global "
            f"batch ({global_batch_size}) must be even."
        )

    def per_batch(images, labels):
        labels = tf.one_hot(labels, num_classes)
        return mixer(images, labels) if mixer else (images, labels)

    batches = (
        dataset.map(per_image, num_parallel_calls=config.workers)
        .batch(global_batch_size, drop_remainder=True)
        .map(per_batch, num_parallel_calls=config.workers)
    )
    # Repeated after the batching: an epoch is whole batches of one pass, as timm's
    # drop_last loader; the random ops keep their state from one pass to the next.
    return (batches.repeat() if repeat else batches).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, config, num_classes, global_batch_size, batch_multiple=1, drop_remainder=False):
    """Validation data: timm's eval transform, as :func:`keras_sequencer.load_image`
    does it: the shorter side resized (Pillow, bicubic) to ``image_size /
    crop_pct``, the aspect ratio kept (:func:`keras_sequencer.preprocessing.eval_geometry`),
    the centre crop, normalised.

    ``batch_multiple``: trim the last batch to a multiple of it (JAX's
    ``DataParallel`` needs every batch to split evenly over the devices), which
    leaves out fewer than ``batch_multiple`` images. ``drop_remainder``: drop
    the last partial batch (several JAX processes need a static batch size to
    split the data between them), which leaves out fewer than
    ``global_batch_size`` images."""
    import tensorflow as tf

    height, width = config.image_size

    def resized_and_cropped(pixels):
        new_h, new_w, top, left = eval_geometry(pixels.shape[0], pixels.shape[1], height, width, config.crop_pct)
        if (new_h, new_w) != pixels.shape[:2]:
            pixels = pil_resize(pixels, new_h, new_w, "bicubic")
        return pixels[top : top + height, left : left + width]

    def prepare(image, label):
        pixels = tf.numpy_function(resized_and_cropped, [image], image.dtype, stateful=False)
        image = tf.ensure_shape(tf.cast(pixels, tf.float32), (height, width, image.shape[-1]))
        return normalize(tf.clip_by_value(image, 0.0, 255.0)), tf.one_hot(label, num_classes)

    def trim(images, labels):
        keep = tf.shape(images)[0] // batch_multiple * batch_multiple
        return images[:keep], labels[:keep]

    batches = dataset.map(prepare, num_parallel_calls=config.workers).batch(
        global_batch_size, drop_remainder=drop_remainder
    )
    if batch_multiple > 1 and not drop_remainder:
        batches = batches.map(trim).filter(lambda images, _: tf.shape(images)[0] > 0)
    return batches.prefetch(tf.data.AUTOTUNE)
