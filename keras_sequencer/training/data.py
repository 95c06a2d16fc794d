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

A folder's images are the files with a suffix of
:data:`keras_sequencer.preprocessing.IMAGE_EXTENSIONS` (the package's one
list). JPEG, PNG, BMP and GIF are decoded by ``tf.io.decode_image``; WebP,
TIFF and PPM/PGM, which it cannot read, by Pillow (through
``tf.numpy_function``, 16-bit images scaled to 8 bits as
:func:`keras_sequencer.preprocessing.to_rgb` does).

A TensorFlow Datasets set that is not on disk yet is downloaded once; without
network that fails at once with one line naming the folder TFDS reads
(:func:`tfds_builder`).
"""

import dataclasses
import os
import socket
import urllib.parse

import numpy as np

from keras_sequencer import optional
from keras_sequencer.preprocessing import IMAGE_EXTENSIONS, to_rgb

# File signatures of the formats tf.io.decode_image reads.
TF_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
# Formats of IMAGE_EXTENSIONS that only Pillow reads: TIFF, PPM/PGM (binary and ASCII).
PIL_SIGNATURES = (b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
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


def is_webp(head):
    """Whether a file's first 12 bytes ``head`` are a WebP (RIFF ... WEBP) header."""
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def image_decoder(path):
    """``"tf"`` (``tf.io.decode_image``) or ``"pil"`` (Pillow) for the image at
    ``path``, from its first bytes; ``ValueError`` naming the file if it is
    unreadable or no image format the package reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as error:
        raise ValueError(f"Cannot read image {path}: {error.strerror or error}.") from None
    if head.startswith(TF_SIGNATURES):
        return "tf"
    if head.startswith(PIL_SIGNATURES) or is_webp(head):
        return "pil"
    raise ValueError(
        f"{path} is not a readable image (expected JPEG, PNG, BMP, GIF, WebP, TIFF or PPM data"
        f"{'; the file is empty' if not head else ''})."
    )


def scan_split(split_dir):
    """Lists a ``split/class_name/image`` folder.

    Returns:
        ``(paths, labels, class_names)``: image paths, their class index (classes
        sorted by folder name) and the class folder names.
    """
    paths, labels, class_names, _ = scan_split_with_decoders(split_dir)
    return paths, labels, class_names


def scan_split_with_decoders(split_dir):
    """:func:`scan_split` plus each image's decoder (:func:`image_decoder`)."""
    if not os.path.isdir(split_dir):
        raise ValueError(f"{split_dir} is not a directory.")
    class_names = sorted(
        entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(f"{split_dir} has no class folders; expected {split_dir}/<class_name>/<image files>.")
    paths, labels, decoders = [], [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            os.path.join(root, file)
            for root, _, names in os.walk(class_dir)
            for file in names
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(f"{class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)} files).")
        decoders.extend(image_decoder(path) for path in files)
        paths.extend(files)
        labels.extend([label] * len(files))
    if "pil" in decoders:
        first = paths[decoders.index("pil")]
        optional.require("PIL", f"Reading {first} (WebP, TIFF and PPM images are decoded by Pillow)")
    return paths, labels, class_names, decoders


def _find_split(root, names):
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise ValueError(
        f"{root} has no {' or '.join(repr(n) for n in names)} folder; expected an "
        "ImageNet-style layout root/train/<class>/<images> and root/val/<class>/<images>."
    )


def decode_with_pil(path):
    """Decodes the image file ``path`` (``bytes`` or ``str``) with Pillow:
    uint8 ``(H, W, 3)``."""
    from PIL import Image

    path = path.decode() if isinstance(path, bytes) else path
    with Image.open(path) as image:
        return np.asarray(to_rgb(image), dtype=np.uint8)


def decode(path, decoder="tf"):
    """Reads and decodes one image file in a ``tf.data`` function:
    uint8 ``(H, W, 3)``; ``decoder`` ``"tf"`` or ``"pil"`` (may be a tensor)."""
    import tensorflow as tf

    def with_tf():
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def with_pil():
        image = tf.numpy_function(decode_with_pil, [path], tf.uint8, stateful=False)
        image.set_shape((None, None, 3))
        return image

    if isinstance(decoder, str):
        return with_pil() if decoder == "pil" else with_tf()
    return tf.cond(tf.equal(decoder, "pil"), with_pil, with_tf)


def image_dataset(paths, labels, shuffle=False, decoders=None):
    """Decodes image files into an unbatched ``(uint8 (H, W, 3), int32)`` dataset
    (``shuffle``: in a new order every epoch). ``decoders``: each file's
    :func:`image_decoder` (default: read from the files' first bytes)."""
    import tensorflow as tf

    if decoders is None:
        decoders = [image_decoder(path) for path in paths]
    if "pil" in decoders:
        columns = (
            tf.constant(paths, tf.string),
            tf.constant(labels, tf.int32),
            tf.constant(decoders, tf.string),
        )

        def load(path, label, decoder):
            return decode(path, decoder), label

    else:  # every file tf.io reads: no per-file branch
        columns = (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))

        def load(path, label):
            return decode(path), label

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(paths), reshuffle_each_iteration=True)
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def find_undecodable(paths):
    """The files among ``paths`` that cannot be decoded.

    Decodes every file (in parallel, skipping failures), so it is meant for
    after a decode error: ``tf.data`` reports those without the file name.
    """
    import tensorflow as tf

    decoders = []
    for path in paths:
        try:
            decoders.append(image_decoder(path))
        except ValueError:
            decoders.append("none")
    decoded = (
        tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(decoders, tf.string)))
        .enumerate()
        .filter(lambda index, item: tf.not_equal(item[1], "none"))
        .map(
            lambda index, item: (index, tf.shape(decode(item[0], item[1]))[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()
    )
    readable = {int(index) for index, _ in decoded.as_numpy_iterator()}
    return [path for index, path in enumerate(paths) if index not in readable]


def load_image_folder(root):
    """Reads ``root/train`` and ``root/val`` (or ``root/validation``) class folders."""
    if not os.path.isdir(root):
        raise ValueError(f"Data folder {root} does not exist.")
    train_dir, val_dir = _find_split(root, TRAIN_SPLITS), _find_split(root, VAL_SPLITS)
    train_paths, train_labels, train_classes, train_decoders = scan_split_with_decoders(train_dir)
    val_paths, val_labels, val_classes, val_decoders = scan_split_with_decoders(val_dir)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ValueError(
            f"The class folders of {train_dir} and {val_dir} differ: "
            f"only in train: {only_train or 'none'}; only in val: {only_val or 'none'}."
        )
    return DataSplits(
        image_dataset(train_paths, train_labels, shuffle=True, decoders=train_decoders),
        image_dataset(val_paths, val_labels, decoders=val_decoders),
        train_classes,
        len(train_paths),
        len(val_paths),
        files=train_paths + val_paths,
    )


def download_hosts_reachable(urls, timeout=5.0):
    """Whether a TCP connection to the host of one of ``urls`` opens within
    ``timeout`` seconds (the check before a TFDS download; offline, TFDS
    itself retries each request for minutes)."""
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            continue
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


def _tfds_missing_module(error):
    return optional.MissingPackageError(
        f"TensorFlow Datasets needs the {error.name} package ({error}); install it with: "
        f"{optional.install_hint(error.name)}."
    )


def tfds_builder(name, data_dir=None):
    """The TensorFlow Datasets builder of ``name``, prepared under ``data_dir``
    (TFDS's default folder when None), downloading it if it is not there yet.

    Raises:
        ValueError: unknown name, or the set is not on disk and cannot be
            downloaded (no network): one line naming the folder TFDS reads and
            how to point at a prepared copy (``--data-dir``).
        keras_sequencer.optional.MissingPackageError: tensorflow-datasets or
            one of its dependencies is not installed.
    """
    tfds = optional.require("tensorflow_datasets", f"The TensorFlow Datasets set {name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ModuleNotFoundError as error:
        raise _tfds_missing_module(error) from None
    except Exception as error:  # DatasetNotFoundError and friends
        raise ValueError(f"Unknown TensorFlow Datasets name {name!r}: {error}") from None
    try:
        urls = list(builder.url_infos or {})
    except ModuleNotFoundError:  # its checksum list unreadable: no probe (the download says)
        urls = []
    where = f"{builder.data_path}"
    if urls and not os.path.isdir(where) and not download_hosts_reachable(urls):
        host = urllib.parse.urlsplit(urls[0]).hostname
        raise ValueError(
            f"TensorFlow Datasets {name!r} is not in {where} and cannot be downloaded "
            f"(no connection to {host}); prepare it on a machine with network "
            f"(`tfds build {name} --data_dir DIR`), copy DIR over and pass it with --data-dir DIR "
            f"(keras-sequencer train: DATA with --dataset tfds/{name})."
        )
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as error:
        raise _tfds_missing_module(error) from None
    except OSError as error:
        raise ValueError(
            f"Cannot download and prepare TensorFlow Datasets {name!r} into {where}: "
            f"{' '.join(str(error).split())[:300]}; pass a folder holding the prepared set "
            "with --data-dir."
        ) from None
    return builder


def load_tfds(name, data_dir=None, train_split="train", val_split=None):
    """Loads a TensorFlow Datasets image classification set (see :func:`tfds_builder`).

    ``val_split`` defaults to ``"validation"`` if the dataset has one, else
    ``"test"`` (CIFAR-10, for example).
    """
    builder = tfds_builder(name, data_dir)
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


def tfds_name(data, dataset=""):
    """The TensorFlow Datasets name that ``load(data, dataset)`` reads, or
    ``None`` for an image folder."""
    if dataset in ("", "folder", "imagefolder"):
        return None if os.path.isdir(data) or os.sep in data else data
    prefix, _, name = dataset.partition("/")
    if prefix in ("tfds", "torch") and name:
        return name
    raise ValueError(
        f"Unsupported --dataset {dataset!r}; use '' (image folder), 'tfds/NAME' or 'torch/NAME' "
        "(read from TensorFlow Datasets)."
    )


def load(data, dataset=""):
    """Loads ``data`` as the ``train`` command's ``DATA`` / ``--dataset`` describe.

    ``dataset`` ``""``/``"folder"``: ``data`` is an ImageNet-style folder (or, if
    no such folder exists, a TFDS name); ``"tfds/NAME"`` or timm's
    ``"torch/NAME"``: TFDS dataset ``NAME`` stored under the directory ``data``.
    """
    name = tfds_name(data, dataset)
    if name is None:
        return load_image_folder(data)
    return load_tfds(name, data_dir=None if dataset in ("", "folder", "imagefolder") else data)


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
