"""Small datasets that ship with packages, for offline tests and examples."""

import numpy as np

from keras_sequencer import optional


def load_digits(image_size=32, channels=3, validation_fraction=0.25, seed=0):
    """scikit-learn's bundled 8x8 handwritten digits, upsampled for Sequencer.

    Pixels are scaled to ``[0, 1]``, upsampled by nearest-neighbour repetition to
    ``image_size`` (a multiple of 8) and repeated over ``channels``. The split is
    a fixed, stratified shuffle (``seed``), so results are comparable across runs.

    Returns:
        ``(x_train, y_train), (x_val, y_val)`` with images ``(N, S, S, channels)``
        float32 and integer labels 0-9.
    """
    sklearn_datasets = optional.require("sklearn.datasets", "load_digits (scikit-learn's digits)")

    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8; got {image_size}.")
    data = sklearn_datasets.load_digits()
    images = (data.images / 16.0).astype("float32")
    factor = image_size // 8
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    images = np.repeat(images[..., None], channels, axis=-1)
    labels = data.target.astype("int32")
    rng = np.random.RandomState(seed)
    val_index = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        val_index.extend(members[: int(round(len(members) * validation_fraction))])
    is_val = np.zeros(len(labels), bool)
    is_val[val_index] = True
    return (images[~is_val], labels[~is_val]), (images[is_val], labels[is_val])
