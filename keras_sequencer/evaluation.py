"""ImageNet-style evaluation, as timm's ``validate.py`` (``keras-sequencer validate DATA_DIR``).

Reads ``DATA_DIR/val/<class>/*`` (or ``DATA_DIR/<class>/*``). Class folders
named by ImageNet-1k WordNet ids (``n01440764``...) get their ImageNet class
index; any other names are indexed in sorted order, as torchvision's
``ImageFolder``. Images go through timm's eval transform
(:func:`keras_sequencer.preprocessing.load_image` + ``preprocess_input``).
A file that cannot be decoded is left out of the accuracy and named in the
results (``unreadable``) instead of stopping the evaluation.
"""

import os
import time

import numpy as np

from keras_sequencer.imagenet import imagenet_classes
from keras_sequencer.preprocessing import IMAGE_EXTENSIONS, image_error_reason, load_image, preprocess_input


def image_folder(data_dir):
    """Lists ``(path, label)`` of an ImageNet-style folder, and the class names.

    Returns:
        ``(samples, class_names)``: samples sorted by path; ``class_names[label]``.
    """
    root = os.path.join(data_dir, "val") if os.path.isdir(os.path.join(data_dir, "val")) else data_dir
    if not os.path.isdir(root):
        raise ValueError(f"{data_dir!r} is not a directory.")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        raise ValueError(f"{root!r} has no class folders (expected {root}/<wnid>/*.JPEG).")
    wnids = [wnid for wnid, _ in imagenet_classes()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if all(folder in index for folder in folders):
        labels, class_names = {f: index[f] for f in folders}, wnids
    else:
        labels, class_names = {f: i for i, f in enumerate(folders)}, folders
    samples = []
    for folder in folders:
        for dirpath, _, files in sorted(os.walk(os.path.join(root, folder))):
            samples += [
                (os.path.join(dirpath, f), labels[folder])
                for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
    if not samples:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}.")
    return samples, class_names


def validate(model, data_dir, batch_size=16, image_size=224, crop_pct=0.875, samples=None, skip_unreadable=True):
    """Top-1 / top-5 accuracy (%) of ``model`` (ImageNet-1k scores) on ``data_dir``.

    Args:
        model: a Keras model mapping ``(batch, height, width, 3)`` normalised
            images to class scores.
        data_dir: ImageNet-style folder (see :func:`image_folder`).
        batch_size: images per model call; a short batch is padded to it once a
            full one ran (no new trace/compilation).
        image_size: int or ``(height, width)`` of the center crop.
        crop_pct: center crop fraction of timm's eval transform.
        samples: ``(path, label)`` pairs already listed by :func:`image_folder`
            (default: list ``data_dir``).
        skip_unreadable: leave out (and name in the results) files that cannot
            be decoded; ``False`` raises the decoder's error instead.

    Returns:
        dict with ``top1``, ``top5``, ``top1_err``, ``top5_err``, ``images``
        (evaluated), ``images_per_sec`` (loading + inference), ``seconds`` and
        ``unreadable``: a list of ``{"path", "error"}`` for the files left out.

    Raises:
        ValueError: bad folder or arguments, labels beyond the model's classes,
            or no readable image at all.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    if samples is None:
        samples, _ = image_folder(data_dir)
    classes = model.outputs[0].shape[-1]
    largest = max(label for _, label in samples)
    if largest >= classes:
        raise ValueError(f"{data_dir!r} has classes up to index {largest} but the model has {classes} outputs.")
    top1 = top5 = evaluated = 0
    unreadable = []
    full_batch_ran = False
    start = time.perf_counter()
    for begin in range(0, len(samples), batch_size):
        images, labels = [], []
        for path, label in samples[begin : begin + batch_size]:
            try:
                images.append(load_image(path, image_size, crop_pct))
            except Exception as error:  # noqa: BLE001 (any decoder failure: a bad file)
                if not skip_unreadable:
                    raise
                unreadable.append(dict(path=path, error=image_error_reason(error)))
            else:
                labels.append(label)
        if not images:
            continue
        count = len(images)
        images = np.stack(images)
        if full_batch_ran and count < batch_size:  # pad: no new trace/compile
            images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), "float32")])
        full_batch_ran = full_batch_ran or count == batch_size
        scores = np.asarray(model.predict_on_batch(preprocess_input(images)), dtype="float32")[:count]
        labels = np.array(labels)
        ranked = np.argsort(-scores, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(ranked[:, 0] == labels))
        top5 += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
        evaluated += count
    seconds = time.perf_counter() - start
    if not evaluated:
        raise ValueError(f"None of the {len(samples)} images under {data_dir!r} could be read.")
    return dict(
        top1=100.0 * top1 / evaluated,
        top1_err=100.0 - 100.0 * top1 / evaluated,
        top5=100.0 * top5 / evaluated,
        top5_err=100.0 - 100.0 * top5 / evaluated,
        images=evaluated,
        images_per_sec=evaluated / seconds,
        seconds=seconds,
        unreadable=unreadable,
    )
