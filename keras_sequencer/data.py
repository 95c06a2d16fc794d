"""Training data: ImageNet-style folders and TensorFlow Datasets, as ``tf.data``.

Every loader returns a :class:`DataSplits` whose ``train`` / ``val`` are
unbatched ``tf.data.Dataset``\\ s of ``(image uint8 (H, W, 3), label int32)``;
:mod:`keras_sequencer.training` adds augmentation and batching. ``tf.data``
feeds ``model.fit`` on every Keras backend.

A folder is checked before training starts, so bad input fails at once with the
offending path: a missing ``train``/``val`` folder, a split with no class
folders or a class folder with no images, different class folders in ``train``
and ``val``, and unreadable files (not an image, empty, no permission). A file
that passes those checks but cannot be decoded (truncated or corrupt image data)
surfaces during training; :func:`find_undecodable` then names it.
"""

import dataclasses
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# File signatures of the formats tf.io.decode_image reads.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
TRAIN_SPLITS = ("train",)
VAL_SPLITS = ("val", "validation")


@dataclasses.dataclass
class DataSplits:
    """``train``/``val``: unbatched ``(uint8 image, int32 label)`` datasets."""

    train: object
    val: object
    class_names: list
    train_size: int
    val_size: int
    # Image files behind ``train``/``val`` (folders only), for naming a file that
    # fails to decode mid-training (see :func:`find_undecodable`).
    files: list = dataclasses.field(default_factory=list)

    @property
    def num_classes(self):
        return len(self.class_names)


def _check_image(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        raise ValueError(f"Cannot read image {path}: {error.strerror or error}.") from None
    if not head.startswith(_SIGNATURES):
        raise ValueError(
            f"{path} is not a readable image (expected JPEG, PNG, BMP or GIF data"
            f"{'; the file is empty' if not head else ''})."
        )


def scan_split(split_dir):
    """Lists a ``split/class_name/image`` folder.

    Returns:
        ``(paths, labels, class_names)``: image paths, their class index (classes
        sorted by folder name) and the class folder names.
    """
    if not os.path.isdir(split_dir):
        raise ValueError(f"{split_dir} is not a directory.")
    class_names = sorted(
        entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(
            f"{split_dir} has no class folders; expected {split_dir}/<class_name>/<image files>."
        )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            os.path.join(root, file)
            for root, _, names in os.walk(class_dir)
            for file in names
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"{class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)} files)."
            )
        for path in files:
            _check_image(path)
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels, class_names


def _find_split(root, names):
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise ValueError(
        f"{root} has no {' or '.join(repr(n) for n in names)} folder; expected an "
        "ImageNet-style layout root/train/<class>/<images> and root/val/<class>/<images>."
    )


def _decode(path):
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def image_dataset(paths, labels, shuffle=False):
    """Decodes image files into an unbatched ``(uint8 (H, W, 3), int32)`` dataset
    (``shuffle``: in a new order every epoch)."""
    import tensorflow as tf

    def load(path, label):
        return _decode(path), label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    )
    if shuffle:
        dataset = dataset.shuffle(len(paths), reshuffle_each_iteration=True)
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def find_undecodable(paths):
    """The files among ``paths`` that ``tf.io.decode_image`` cannot decode.

    Decodes every file (in parallel, skipping failures), so it is meant for
    after a decode error: ``tf.data`` reports those without the file name.
    """
    import tensorflow as tf

    decoded = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
        .enumerate()
        .map(lambda index, path: (index, tf.shape(_decode(path))[0]), num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    readable = {int(index) for index, _ in decoded.as_numpy_iterator()}
    return [path for index, path in enumerate(paths) if index not in readable]


def load_image_folder(root):
    """Reads ``root/train`` and ``root/val`` (or ``root/validation``) class folders."""
    if not os.path.isdir(root):
        raise ValueError(f"Data folder {root} does not exist.")
    train_dir, val_dir = _find_split(root, TRAIN_SPLITS), _find_split(root, VAL_SPLITS)
    train_paths, train_labels, train_classes = scan_split(train_dir)
    val_paths, val_labels, val_classes = scan_split(val_dir)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ValueError(
            f"The class folders of {train_dir} and {val_dir} differ: "
            f"only in train: {only_train or 'none'}; only in val: {only_val or 'none'}."
        )
    return DataSplits(
        image_dataset(train_paths, train_labels, shuffle=True),
        image_dataset(val_paths, val_labels),
        train_classes,
        len(train_paths),
        len(val_paths),
        files=train_paths + val_paths,
    )


def load_tfds(name, data_dir=None, train_split="train", val_split=None):
    """Loads a TensorFlow Datasets image classification set.

    ``val_split`` defaults to ``"validation"`` if the dataset has one, else
    ``"test"`` (CIFAR-10, for example).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise ValueError(f"Unknown TensorFlow Datasets name {name!r}: {error}") from None
    builder.download_and_prepare()
    splits = builder.info.splits  # empty when only the code is known (tfds mock data)
    if val_split is None:
        val_split = "validation" if "validation" in splits else "test"
    for split in (train_split, val_split):
        if splits and split not in splits:
            raise ValueError(f"{name} has no split {split!r}; it has {sorted(splits)}.")
    features = builder.info.features
    if "label" not in features or "image" not in features:
        raise ValueError(f"{name} is not an image classification dataset (image, label).")
    train = builder.as_dataset(split=train_split, as_supervised=True, shuffle_files=True)
    val = builder.as_dataset(split=val_split, as_supervised=True)

    def size(split, dataset):
        if split in splits:
            return splits[split].num_examples
        count = int(dataset.cardinality())
        return count if count >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))

    return DataSplits(
        train.shuffle(2048, reshuffle_each_iteration=True),
        val,
        list(features["label"].names),
        size(train_split, train),
        size(val_split, val),
    )


def load(data, dataset=""):
    """Loads ``data`` as the ``train`` command's ``DATA`` / ``--dataset`` describe.

    ``dataset`` ``""``/``"folder"``: ``data`` is an ImageNet-style folder (or, if
    no such folder exists, a TFDS name); ``"tfds/NAME"`` or timm's
    ``"torch/NAME"``: TFDS dataset ``NAME`` stored under the directory ``data``.
    """
    if dataset in ("", "folder", "imagefolder"):
        if os.path.isdir(data) or os.sep in data:
            return load_image_folder(data)
        return load_tfds(data)
    prefix, _, name = dataset.partition("/")
    if prefix in ("tfds", "torch") and name:
        return load_tfds(name, data_dir=data)
    raise ValueError(
        f"Unsupported --dataset {dataset!r}; use '' (image folder), 'tfds/NAME' or 'torch/NAME' "
        "(read from TensorFlow Datasets)."
    )


def from_arrays(train, val, class_names=None):
    """:class:`DataSplits` from in-memory ``(images, labels)`` pairs.

    Images ``(N, H, W, 3)`` with values in ``[0, 255]`` (uint8 or float), labels
    integer class indices; ``class_names`` defaults to ``"0", "1", ...``.
    """
    import numpy as np
    import tensorflow as tf

    (x_train, y_train), (x_val, y_val) = train, val
    if class_names is None:
        class_names = [str(i) for i in range(int(max(np.max(y_train), np.max(y_val))) + 1)]
    for name, images, labels in (("train", x_train, y_train), ("val", x_val, y_val)):
        if np.ndim(images) != 4 or np.shape(images)[-1] != 3 or len(images) != len(labels):
            raise ValueError(
                f"{name} images must be (N, H, W, 3) with one label each; got "
                f"{np.shape(images)} images and {np.shape(labels)} labels."
            )
    return DataSplits(
        tf.data.Dataset.from_tensor_slices((x_train, np.asarray(y_train, "int32"))).shuffle(
            len(x_train), reshuffle_each_iteration=True
        ),
        tf.data.Dataset.from_tensor_slices((x_val, np.asarray(y_val, "int32"))),
        list(class_names),
        len(x_train),
        len(x_val),
    )
