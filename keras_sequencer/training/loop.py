"""The training run: model by name, ``compile``, ``fit`` inside the
data-parallel strategy's scope, and the whole run from a data path (:func:`run`)."""

import os

import keras

from keras_sequencer import data as data_lib
from keras_sequencer import distribute, keras_patches, optional, registry
from keras_sequencer.initializers import apply_original_initialization
from keras_sequencer.models import Sequencer2D
from keras_sequencer.training.callbacks import make_callbacks
from keras_sequencer.training.optim import build_optimizer
from keras_sequencer.training.pipeline import eval_pipeline, train_pipeline


def build_model(config, num_classes):
    """The model of ``config`` with a ``num_classes`` softmax head.

    ``config.model`` is built by :func:`keras_sequencer.registry.create_model`
    (any registered name), or, with ``config.arch``, ``Sequencer2D(**config.arch)``
    named ``config.model``; input ``(*config.image_size, 3)``. From scratch
    (``config.weights`` None) with ``config.init == "original"`` the weights
    start as the original's (:func:`keras_sequencer.initializers.apply_original_initialization`).
    """
    options = dict(
        weights=config.weights,
        classes=num_classes,
        input_shape=(*config.image_size, 3),
        drop_path_rate=config.drop_path,
    )
    if config.arch:
        model = Sequencer2D(**config.arch, name=config.model, **options)
    else:
        model = registry.create_model(config.model, **options)
    if config.weights is None and config.init == "original":
        apply_original_initialization(model, seed=config.seed)
    return model


def check_requirements(dataset=None):
    """Fails at once, before any work, when a package a run needs is missing:
    TensorFlow (the ``tf.data`` input pipeline, on every backend) and, for a
    TFDS ``dataset``, tensorflow-datasets. One line naming the extra to install
    (:class:`keras_sequencer.optional.MissingPackageError`)."""
    optional.require("tensorflow", "Training (its tf.data input pipeline)")
    if dataset:
        optional.require("tensorflow_datasets", f"The TensorFlow Datasets set {dataset!r}")


def fit(config, data, callbacks=(), distribution=None):
    """Trains on ``data`` (a :class:`keras_sequencer.data.DataSplits`).

    Writes to ``config.output``: ``best.keras`` (best validation accuracy),
    ``history.csv``, ``curves.png`` (when matplotlib is installed) and
    ``backup/`` (removed when training completes). Re-running an interrupted
    run with the same output resumes at its last finished epoch.

    Returns:
        ``(model, history)``.
    """
    check_requirements()
    distribution = distribution or distribute.setup_distribution()
    num_classes = config.num_classes or data.num_classes
    if config.num_classes and config.num_classes != data.num_classes:
        raise ValueError(f"num_classes is {config.num_classes} but the data has {data.num_classes} classes.")
    global_batch = config.batch_size * distribution.num_replicas
    steps_per_epoch = data.train_size // global_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"The global batch ({config.batch_size} x {distribution.num_replicas} replicas) "
            f"is larger than the {data.train_size} training images."
        )
    output_dir = config.output
    if not distribution.is_chief:  # other workers write to a scratch folder
        output_dir = os.path.join(config.output, f".worker_{distribution.worker_index}")
    keras.utils.set_random_seed(config.seed)
    train = train_pipeline(data.train, config, num_classes, global_batch, repeat=True)
    on_jax = keras.backend.backend() == "jax"
    val = eval_pipeline(
        data.val,
        config,
        num_classes,
        global_batch,
        batch_multiple=distribution.num_replicas if on_jax else 1,
        drop_remainder=on_jax and distribution.num_workers > 1,
    )
    previous_policy = keras.config.dtype_policy()
    if config.amp:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with distribution.scope():
            model = build_model(config, num_classes)
            model.compile(
                optimizer=build_optimizer(config, model, steps_per_epoch),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.smoothing),
                metrics=["accuracy"],
            )
            if distribution.num_workers > 1 and keras.backend.backend() == "tensorflow":
                keras_patches.tf_multi_worker_symbolic_build(model, train)
            history = _fit_naming_bad_images(
                model,
                data,
                train,
                steps_per_epoch=steps_per_epoch,
                validation_data=val,
                epochs=config.epochs + config.cooldown_epochs,
                callbacks=[*make_callbacks(config, output_dir), *callbacks],
                verbose=config.verbose,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model, history


def _fit_naming_bad_images(model, data, train, **kwargs):
    """``model.fit(train, **kwargs)``; if an image fails to decode, raises a
    ``ValueError`` naming the file(s) (``tf.data`` does not say which file)."""
    import tensorflow as tf

    try:
        return model.fit(train, **kwargs)
    except tf.errors.OpError:
        bad = data_lib.find_undecodable(data.files) if data.files else []
        if not bad:
            raise
        raise ValueError(
            f"Cannot decode image {bad[0]} (truncated or corrupt image data)"
            + (f"; {len(bad) - 1} more such files: {bad[1:6]}" if len(bad) > 1 else "")
            + "."
        ) from None


def run(config, data, dataset=""):
    """Loads ``data`` (folder or TFDS, see :func:`keras_sequencer.data.load`) and trains;
    prints the backend, the data and the output folder."""
    check_requirements(data_lib.tfds_name(data, dataset))
    distribution = distribute.setup_distribution()  # first: multi-worker TF needs it so
    print(f"keras-sequencer: {keras.backend.backend()} backend, {distribution.description}")
    splits = data_lib.load(data, dataset)
    print(
        f"keras-sequencer: {splits.train_size} training / {splits.val_size} validation "
        f"images, {splits.num_classes} classes"
    )
    print(f"keras-sequencer: writing checkpoints, history and curves to {os.path.abspath(config.output)}")
    return fit(config, splits, distribution=distribution)
