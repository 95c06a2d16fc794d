"""keras_sequencer.training.loop: build_model (initialisation from scratch only, mixed
precision head), fit on bad data, and learning the digits from scratch."""

import keras
import numpy as np
import pytest

from keras_sequencer import training
from keras_sequencer.models import Sequencer2D
from keras_sequencer.training import data
from tests.helpers import TINY_TRAIN_ARCH, random_images, tiny_arch, tiny_config, to_numpy


def test_mixed_precision_keeps_the_head_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = Sequencer2D(**TINY_TRAIN_ARCH, classes=3, input_shape=(16, 16, 3))
        model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
        assert model.get_layer("stages_0_blocks_0").compute_dtype == "float16"
        assert model.get_layer("head").compute_dtype == "float32"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        images = np.random.RandomState(0).rand(4, 16, 16, 3).astype("float32")
        # (training under mixed_float16 runs in the slow cifar10 example test)
        probs = keras.ops.convert_to_numpy(model(images))
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.slow
def test_truncated_image_stops_training_naming_the_file(tmp_path):
    from tests.helpers import make_image_folder, truncate_into_jpeg

    make_image_folder(str(tmp_path / "data"), per_class=8, size=(20, 20))
    truncated = tmp_path / "data" / "train" / "cat" / "5.jpg"
    truncate_into_jpeg(truncated)
    splits = data.load_image_folder(str(tmp_path / "data"))
    with pytest.raises(ValueError, match=f"Cannot decode image {truncated} "):
        training.fit(tiny_config(tmp_path / "out", batch_size=4, epochs=1, warmup_epochs=0), splits)


DIGITS_ARCH = tiny_arch(1, blocks=2, first_patch=8, width=48, hidden=16, mlp_ratio=2.0)


@pytest.mark.slow
def test_learns_digits_from_scratch(tmp_path):
    """A Sequencer2D trained from scratch (the original initialisation, no augmentation)
    reaches >= 92% on held-out digits (chance: 10%; it lands at 95-97% on the
    machines we test on, the margin absorbs the CPU's float differences)."""
    import time

    from keras_sequencer import datasets

    (x_train, y_train), (x_val, y_val) = datasets.load_digits(32)
    to_uint8 = lambda x: (x * 255).round().astype("uint8")  # noqa: E731
    splits = data.from_arrays((to_uint8(x_train), y_train), (to_uint8(x_val), y_val))
    # Keras' torch backend runs keras.layers.LSTM step by step on CPU; the fused path
    # (same weights, exact parity, tests/kernels/test_fused.py) keeps this run short there.
    arch = dict(DIGITS_ARCH, implementation="fused") if keras.backend.backend() == "torch" else DIGITS_ARCH
    config = training.TrainConfig(
        model="digits",
        arch=arch,
        image_size=(32, 32),
        crop_pct=1.0,
        batch_size=32,
        workers=2,
        epochs=12,
        lr=4e-3,
        warmup_lr=1e-4,
        warmup_epochs=1,
        cooldown_epochs=0,
        sched_on_updates=True,
        weight_decay=0.05,
        smoothing=0.1,
        hflip=0.0,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        color_jitter=0.0,
        output=str(tmp_path),
        verbose=0,
    )
    start = time.time()
    model, _ = training.fit(config, splits)
    images = training.eval_pipeline(splits.val, config, 10, 256)
    predictions = np.argmax(model.predict(images, verbose=0), -1)
    accuracy = float(np.mean(predictions == y_val))
    print(f"digits: validation accuracy {accuracy:.4f} in {time.time() - start:.0f} s")
    assert accuracy >= 0.92


def test_build_model_initialises_only_from_scratch(tmp_path):
    config = dict(model="tiny", arch=TINY_TRAIN_ARCH, image_size=(16, 16), output=str(tmp_path), seed=0)
    scratch = training.build_model(training.TrainConfig(**config), 4)
    assert not to_numpy(scratch.get_layer("head").kernel).any()
    keras_default = training.build_model(training.TrainConfig(**config, init="keras"), 4)
    assert to_numpy(keras_default.get_layer("head").kernel).any()
    path = str(tmp_path / "w.weights.h5")
    keras_default.save_weights(path)
    loaded = training.build_model(training.TrainConfig(**dict(config, weights=path)), 4)
    x = random_images(2, 16, 16)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(keras_default(x)))


def test_build_model_draws_the_initial_weights_from_the_seed(tmp_path):
    """From scratch the weights depend on ``seed`` alone (not on what ran before),
    for either ``init``, and the build leaves Python's random stream as it was."""
    import random

    config = dict(model="tiny", arch=TINY_TRAIN_ARCH, image_size=(16, 16), output=str(tmp_path))
    for init in ("original", "keras"):
        first = training.build_model(training.TrainConfig(**config, init=init, seed=3), 4)
        random.random()  # moves the global streams
        keras.utils.set_random_seed(7)
        state = random.getstate()
        second = training.build_model(training.TrainConfig(**config, init=init, seed=3), 4)
        assert random.getstate() == state
        other = training.build_model(training.TrainConfig(**config, init=init, seed=4), 4)
        for a, b in zip(first.weights, second.weights):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=f"{init}: {a.path}")
        kernel = lambda model: to_numpy(model.get_layer("stem").kernel)  # noqa: E731
        assert not np.array_equal(kernel(first), kernel(other)), init
