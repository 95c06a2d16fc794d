"""keras_sequencer.keras_patches: the Keras-private names each patch touches.

Each test checks the private attribute, its signature and that Keras calls it the
way the patch relies on, so that a Keras release that changes them fails here,
by name, rather than in a training run.
"""

import inspect
import re

import keras
import numpy as np
import pytest

from keras_sequencer import keras_patches

BACKEND = keras.backend.backend()


def test_installed_keras_is_a_verified_version():
    """A new Keras: re-check the private names below, then widen VERIFIED."""
    for patch, spec in keras_patches.VERIFIED.items():
        assert keras_patches.version_matches(spec, keras.__version__), (
            f"Keras {keras.__version__} is outside {spec}, where the {patch} patch was verified"
        )


@pytest.mark.parametrize(
    "version, expected",
    [
        ("3.15.0", True),
        ("3.15.1", True),
        ("3.15.2.dev20260101", True),
        ("3.14.9", False),
        ("3.16.0", False),
        ("3.16.0rc1", False),
        ("4.0", False),
    ],
)
def test_version_matches(version, expected):
    assert keras_patches.version_matches(">=3.15,<3.16", version) is expected


def test_unverified_version_skips_with_one_warning(monkeypatch):
    monkeypatch.setattr(keras_patches, "_WARNED", set())
    with pytest.warns(UserWarning, match=r"Keras 9\.0\.0 is outside .* jax_trainer_jit patch"):
        assert not keras_patches.applies("jax_trainer_jit", version="9.0.0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert not keras_patches.applies("jax_trainer_jit", version="9.0.0")
    assert keras_patches.applies("jax_trainer_jit", version="3.15.1")


# ----------------------------------------------------------------- JAX trainer jit


def _jax_trainer():
    pytest.importorskip("jax")
    from keras.src.backend.jax import trainer

    return trainer


def test_jax_trainer_jits_through_its_module_global():
    import jax

    trainer = _jax_trainer()
    assert trainer.jit is jax.jit  # (nnx.jit with Flax NNX, where the patch stands aside)
    assert "compiler_options" in inspect.signature(jax.jit).parameters
    for name in ("make_predict_function", "make_test_function"):
        source = inspect.getsource(getattr(trainer.JAXTrainer, name))
        assert re.search(r"(?<![.\w])jit\(", source), f"JAXTrainer.{name} no longer calls jit(...)"


def test_jax_trainer_jit_swaps_and_restores():
    import jax

    trainer = _jax_trainer()
    with keras_patches.jax_trainer_jit({"some_option": ""}) as applied:
        assert applied
        assert trainer.jit.func is jax.jit
        assert trainer.jit.keywords == {"compiler_options": {"some_option": ""}}
    assert trainer.jit is jax.jit


def test_jax_trainer_jit_stands_aside_off_the_verified_versions(monkeypatch):
    import jax

    trainer = _jax_trainer()
    monkeypatch.setattr(keras, "__version__", "9.0.0")
    monkeypatch.setattr(keras_patches, "_WARNED", {"jax_trainer_jit"})  # warned already
    with keras_patches.jax_trainer_jit({"some_option": ""}) as applied:
        assert not applied and trainer.jit is jax.jit


# ------------------------------------------------- TF reduce_per_replica (multi-worker)


def _tf_trainer():
    pytest.importorskip("tensorflow")
    from keras.src.backend.tensorflow import trainer

    return trainer


def test_tf_reduce_per_replica_signature_and_callers():
    trainer = _tf_trainer()
    assert list(inspect.signature(trainer.reduce_per_replica).parameters) == [
        "values",
        "strategy",
        "reduction",
    ]
    assert list(inspect.signature(trainer._collective_all_reduce_multi_worker).parameters) == ["strategy"]
    # train and test steps reduce their logs through the module-level name (what is patched)
    source = inspect.getsource(trainer.TensorFlowTrainer._make_function)
    assert re.search(r"(?<![.\w])reduce_per_replica\(\s*outputs,[^)]*reduction=\"auto\"", source)


def test_tf_scalar_mean_patch_delegates_outside_multi_worker(monkeypatch):
    import tensorflow as tf

    trainer = _tf_trainer()
    original = trainer.reduce_per_replica
    monkeypatch.setattr(trainer, "reduce_per_replica", original)  # restored after the test
    assert keras_patches.install_tf_multi_worker_scalar_mean()
    patched = trainer.reduce_per_replica
    assert patched is not original and patched.keras_sequencer_patch
    assert keras_patches.install_tf_multi_worker_scalar_mean()  # idempotent
    assert trainer.reduce_per_replica is patched
    values = {"loss": tf.constant(2.5), "accuracy": tf.constant([1.0, 0.0])}
    reduced = patched(values, tf.distribute.get_strategy(), "auto")
    assert float(reduced["loss"]) == 2.5
    np.testing.assert_array_equal(reduced["accuracy"].numpy(), [1.0, 0.0])


# ------------------------------------------------ _symbolic_build (multi-worker TF fit)


def test_symbolic_build_signatures():
    from keras.src.trainers.trainer import Trainer

    assert list(inspect.signature(Trainer._symbolic_build).parameters) == [
        "self",
        "iterator",
        "data_batch",
    ]
    trainer = _tf_trainer()
    maybe = trainer.TensorFlowTrainer._maybe_symbolic_build
    assert list(inspect.signature(maybe).parameters) == ["self", "iterator", "data_batch"]
    assert "self._maybe_symbolic_build(" in inspect.getsource(trainer.TensorFlowTrainer.fit)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow trainer's build step")
def test_symbolic_build_from_the_element_spec():
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile(optimizer="adamw", loss="categorical_crossentropy", metrics=["accuracy"])
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.zeros((8, 4), "float32"), np.eye(3, dtype="float32")[np.arange(8) % 3])
    ).batch(4)
    assert keras_patches.tf_multi_worker_symbolic_build(model, dataset)
    assert model.optimizer.built and model._compile_metrics.built
    model._maybe_symbolic_build(data_batch="not used")  # turned off
    model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow trainer's build step")
def test_sequencer_models_build_before_the_train_function_is_traced():
    """Without a strategy Keras creates the optimizer's and the metrics' variables
    while tracing the train function, which tf.function then traces again; a
    SequencerModel has them built first, so nothing is created inside a function,
    and fit still trains on every batch (the batch the build read is not lost)."""
    import tensorflow as tf

    from keras_sequencer import Sequencer2D
    from tests.helpers import TINY_TRAIN_ARCH, random_images

    def variables_created_in_functions(model, train):
        created = []

        def creator(next_creator, **kwargs):
            if tf.inside_function():
                created.append(kwargs.get("name"))
            return next_creator(**kwargs)

        model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        with tf.variable_creator_scope(creator):
            train(model)
        return created

    x, y = random_images(6, 16, 16), np.array([0, 1, 2, 0, 1, 2])
    sequencer = Sequencer2D(**TINY_TRAIN_ARCH, classes=3, input_shape=(16, 16, 3))
    plain = keras.Model(sequencer.inputs, sequencer.outputs)  # the same layers, Keras's own trainer
    assert variables_created_in_functions(plain, lambda m: m.train_on_batch(x, y))  # Keras's behaviour
    for train in (lambda m: m.train_on_batch(x, y), lambda m: m.fit(x, y, batch_size=2, epochs=1, verbose=0)):
        model = keras.models.clone_model(sequencer)
        assert variables_created_in_functions(model, train) == []
    assert int(model.optimizer.iterations.numpy()) == 3  # fit: 3 batches of 2
    assert variables_created_in_functions(model, lambda m: m.evaluate(x, y, verbose=0)) == []
