"""A fit-ready dataset from a folder of class folders, in one call
(:func:`image_dataset`, ``keras_sequencer.image_dataset``).

It reads ``folder/<class name>/<images>`` as ``keras-sequencer train`` does
(:mod:`keras_sequencer.training.data`: the same checks, decoders and class order) and
gives batched ``tf.data`` with the recipe's training transforms
(:func:`keras_sequencer.training.train_pipeline`) or timm's evaluation
transform (:func:`keras_sequencer.training.eval_pipeline`: bicubic resize to
``image_size / crop_pct``, centre crop), normalised as ``preprocess_input``
does. ``model.fit`` takes ``tf.data`` on every Keras backend.
"""

import os
import warnings

from keras_sequencer.training import data
from keras_sequencer.training.config import TRANSFER_RECIPE, TrainConfig
from keras_sequencer.training.pipeline import eval_pipeline, train_pipeline

# The fine-tuning recipe's training transforms (the official CIFAR-10 transfer command).
AUGMENTATION = ("aa", "reprob", "remode", "mixup", "cutmix")


def image_dataset(
    directory: str | os.PathLike,
    training: bool,
    image_size: int | tuple[int, int] = 224,
    batch_size: int = 32,
    crop_pct: float = 0.875,
    seed: int | None = None,
    **augmentation,
):
    """Batched ``tf.data`` of the images under ``directory/<class name>/``, and the class names.

    Args:
        directory: a folder with one sub-folder of images per class (sorted
            names give the labels 0, 1, ...), as ``photos/train``.
        training: ``True``: shuffled every epoch, with the fine-tuning
            recipe's transforms (random resized crop, flip, RandAugment
            ``rand-m9-mstd0.5-inc1``, MixUp 0.8 / CutMix 1.0), whole batches
            only; ``False``: in file order, timm's evaluation transform, the
            last batch partial.
        image_size: the model's input size, ``N`` or ``(height, width)``.
        batch_size: images per batch; for training, lowered (with a warning)
            to the number of images when there are fewer.
        crop_pct: the evaluation centre crop (timm's 0.875: resize to
            ``image_size / crop_pct``, crop ``image_size``).
        seed: seeds the training transforms' draws (default: not seeded).
        **augmentation: :class:`~keras_sequencer.training.TrainConfig` fields
            that replace the recipe's, e.g. ``aa=None, mixup=0, cutmix=0`` for
            crop and flip only, or ``reprob=0.25``.

    Returns:
        ``(dataset, class_names)``: ``dataset`` yields ``(images, labels)``,
        images float32 ``(batch, height, width, 3)`` normalised with the
        ImageNet mean and std, labels float32 one-hot ``(batch, classes)``
        (mixed by MixUp/CutMix when training): train with
        ``keras.losses.CategoricalCrossentropy``.

    Raises:
        ValueError: a missing folder, no class folders, a class without
            images, an unreadable file (named), an unknown option.
    """
    import tensorflow as tf

    paths, labels, class_names, decoders = data.scan_split_with_decoders(os.fspath(directory))
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    settings = {key: TRANSFER_RECIPE[key] for key in AUGMENTATION if key in TRANSFER_RECIPE}
    settings.update(augmentation)
    config = TrainConfig(image_size=size, batch_size=batch_size, crop_pct=crop_pct, **settings)
    if training and batch_size > len(paths):
        mixing = config.mixup > 0 or config.cutmix > 0
        lowered = len(paths) - (len(paths) % 2 if mixing else 0)
        warnings.warn(
            f"{directory}: batch_size {batch_size} is larger than its {len(paths)} images; using batches of {lowered}.",
            stacklevel=2,
        )
        config = TrainConfig(image_size=size, batch_size=lowered, crop_pct=crop_pct, **settings)
    if training and seed is not None:
        tf.random.set_seed(seed)
    images = data.image_dataset(paths, labels, shuffle=training, decoders=decoders)
    if training:
        dataset = train_pipeline(images, config, len(class_names), config.batch_size)
    else:
        dataset = eval_pipeline(images, config, len(class_names), config.batch_size)
    return dataset, list(class_names)
