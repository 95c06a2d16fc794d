"""``tf.data`` input pipelines for training and validation (``fit`` accepts
``tf.data`` on every Keras backend); the normalisation is
:func:`keras_sequencer.preprocessing.normalize`, the package's one.

Both take the unbatched ``(uint8 image (H, W, 3), int32 label)`` datasets of
:mod:`keras_sequencer.data` and yield ``(float32 (B, height, width, 3)
normalised images, float32 (B, num_classes) one-hot or mixed labels)``.
"""

import keras

from keras_sequencer.preprocessing import normalize
from keras_sequencer.training.augment import REMODES, parse_auto_augment


def train_pipeline(dataset, config, num_classes, global_batch_size):
    """Augmented, batched training data: ``(images float32 normalised, one-hot labels)``.

    Per image: random resized crop (``scale``, ``ratio``), horizontal flip,
    RandAugment; per batch: normalisation, random erasing, MixUp or CutMix.
    """
    import tensorflow as tf

    height, width = config.image_size
    from keras_sequencer.training.randaugment import rand_augment

    policy = parse_auto_augment(config.aa)  # timm's RandAugment, on 0-255 pixels

    def per_image(image, label):
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            min_object_covered=0.0,
            aspect_ratio_range=config.ratio,
            area_range=config.scale,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.slice(image, begin, size), (height, width))
        image = tf.ensure_shape(image, (height, width, 3))
        if config.hflip > 0:
            flip = tf.random.uniform([]) < config.hflip
            image = tf.where(flip, tf.image.flip_left_right(image), image)
        if policy:
            image = rand_augment(image, policy)
        return tf.clip_by_value(image, 0.0, 255.0), label

    erasing = config.reprob > 0 and keras.layers.RandomErasing(
        factor=(config.reprob, config.reprob),
        fill_value=REMODES[config.remode],
        value_range=(-1.0, 1.0),  # noise N(0, 1) clipped to +-1 (normalised space)
        seed=config.seed,
    )
    mixers = [
        keras.layers.MixUp(alpha=config.mixup, seed=config.seed) if config.mixup > 0 else None,
        keras.layers.CutMix(factor=config.cutmix, seed=config.seed) if config.cutmix > 0 else None,
    ]

    def per_batch(images, labels):
        images = normalize(images)
        if erasing:
            images = erasing(images)
        labels = tf.one_hot(labels, num_classes)
        mixup, cutmix = mixers
        if mixup and cutmix:
            use_cutmix = tf.random.uniform([]) < config.mixup_switch_prob
            mixed = tf.cond(
                use_cutmix,
                lambda: cutmix({"images": images, "labels": labels}),
                lambda: mixup({"images": images, "labels": labels}),
            )
        elif mixup or cutmix:
            mixed = (mixup or cutmix)({"images": images, "labels": labels})
        else:
            return images, labels
        return mixed["images"], mixed["labels"]

    return (
        dataset.map(per_image, num_parallel_calls=config.workers)
        .batch(global_batch_size, drop_remainder=True)
        .map(per_batch, num_parallel_calls=config.workers)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_pipeline(
    dataset, config, num_classes, global_batch_size, batch_multiple=1, drop_remainder=False
):
    """Validation data: resize to ``image_size / crop_pct``, centre crop, normalise.

    ``batch_multiple``: trim the last batch to a multiple of it (JAX's
    ``DataParallel`` needs every batch to split evenly over the devices), which
    leaves out fewer than ``batch_multiple`` images. ``drop_remainder``: drop
    the last partial batch (several JAX processes need a static batch size to
    split the data between them), which leaves out fewer than
    ``global_batch_size`` images."""
    import tensorflow as tf

    height, width = config.image_size
    resize = (int(height / config.crop_pct), int(width / config.crop_pct))

    def prepare(image, label):
        image = tf.image.resize(image, resize, method="bicubic", antialias=True)
        top, left = (resize[0] - height) // 2, (resize[1] - width) // 2
        image = tf.clip_by_value(image[top : top + height, left : left + width], 0.0, 255.0)
        return normalize(image), tf.one_hot(label, num_classes)

    def trim(images, labels):
        keep = tf.shape(images)[0] // batch_multiple * batch_multiple
        return images[:keep], labels[:keep]

    batches = dataset.map(prepare, num_parallel_calls=config.workers).batch(
        global_batch_size, drop_remainder=drop_remainder
    )
    if batch_multiple > 1 and not drop_remainder:
        batches = batches.map(trim).filter(lambda images, _: tf.shape(images)[0] > 0)
    return batches.prefetch(tf.data.AUTOTUNE)
