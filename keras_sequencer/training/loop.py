"""The training run: model by name, ``compile``, ``fit`` inside the
data-parallel strategy's scope, and the whole run from a data path (:func:`run`)."""

import contextlib
import dataclasses
import os
import random
import shutil

import keras

from keras_sequencer import keras_patches, optional, registry
from keras_sequencer.models import Sequencer2D
from keras_sequencer.training import data as data_lib
from keras_sequencer.training import distribute
from keras_sequencer.training.backup import read_state
from keras_sequencer.training.callbacks import make_callbacks, read_history
from keras_sequencer.training.optim import build_optimizer
from keras_sequencer.training.pipeline import eval_pipeline, train_pipeline


def build_model(config, num_classes):
    """The model of ``config`` with a ``num_classes`` softmax head.

    ``config.model`` is built by :func:`keras_sequencer.registry.create_model`
    (any registered name), or, with ``config.arch``, ``Sequencer2D(**config.arch)``
    named ``config.model``; input ``(*config.image_size, 3)``. From scratch
    (``config.weights`` None) it is built with ``initialization=config.init``
    (``"original"``: the original's initial weights, see
    :mod:`keras_sequencer.initializers`), drawn from ``config.seed``: the same
    seed gives the same weights. With ``config.weights`` the layers keep
    Keras's initializers (a head of another size stays as Keras starts it).
    """
    options = dict(
        weights=config.weights,
        classes=num_classes,
        input_shape=(*config.image_size, 3),
        drop_path_rate=config.drop_path,
        initialization="keras" if config.weights is not None else config.init,
    )
    with _seeded_python_random(config.seed):
        if config.arch:
            return Sequencer2D(**config.arch, name=config.model, **options)
        return registry.create_model(config.model, **options)


@contextlib.contextmanager
def _seeded_python_random(seed):
    """Python's ``random`` seeded with ``seed`` inside, restored after: Keras
    draws the seed of each unseeded initializer and seed generator from it
    when the layer is made, so a model built inside starts from weights fixed
    by ``seed`` alone, and nothing else's random stream is moved."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def check_requirements(dataset=None):
    """Fails at once, before any work, when a package a run needs is missing:
    TensorFlow (the ``tf.data`` input pipeline, on every backend) and, for a
    TFDS ``dataset``, tensorflow-datasets. One line naming the extra to install
    (:class:`keras_sequencer.optional.MissingPackageError`)."""
    optional.require("tensorflow", "Training (its tf.data input pipeline)")
    if dataset:
        optional.require("tensorflow_datasets", f"The TensorFlow Datasets set {dataset!r}")


def fit(config, data, callbacks=(), distribution=None):
    """Trains on ``data`` (a :class:`keras_sequencer.training.data.DataSplits`).

    Writes to ``config.output``: ``best.keras`` (best validation accuracy; the
    model's ``class_names`` are the data's), ``history.csv``, ``curves.png``
    (when matplotlib is installed) and ``backup/`` (removed when training
    completes). Re-running an interrupted run with the same output resumes at
    its last finished epoch; re-running a finished one trains nothing and
    returns its ``best.keras`` (a ``ValueError`` if it ran another number of
    epochs); ``config.restart`` trains from the start instead. A batch larger
    than the training set is lowered to it, with a notice. With several torch
    processes (:class:`keras_sequencer.distribute.TorchDataParallel`) each trains on
    its slice of every global batch, so ``data`` must be shuffled alike in all of
    them: made after ``keras.utils.set_random_seed``, as :func:`run` does.

    Returns:
        ``(model, history)``; ``history`` is ``None`` when the run had finished.
    """
    check_requirements()
    distribution = distribution or distribute.setup_distribution()
    num_classes = config.num_classes or data.num_classes
    if config.num_classes and config.num_classes != data.num_classes:
        raise ValueError(f"num_classes is {config.num_classes} but the data has {data.num_classes} classes.")
    config = fit_batch_to_data(config, data.train_size, distribution.num_replicas)
    global_batch = config.batch_size * distribution.num_replicas
    steps_per_epoch = data.train_size // global_batch
    output_dir = config.output
    if not distribution.is_chief:  # other workers write to a scratch folder
        output_dir = os.path.join(config.output, f".worker_{distribution.worker_index}")
    if config.restart:
        clear_run(output_dir)
    else:
        finished = finished_epochs(output_dir)
        total = config.epochs + config.cooldown_epochs
        if finished == total:
            print(
                f"keras-sequencer: {os.path.abspath(config.output)} holds a finished run of {total} epochs; "
                "not training again (restart=True / --restart trains from the start there)."
            )
            return keras.saving.load_model(os.path.join(config.output, "best.keras")), None
        if finished is not None:
            raise ValueError(
                f"{os.path.abspath(config.output)} holds a finished run of {finished} epochs, not the "
                f"{total} asked for; pass --restart (restart=True) to train from the start there, "
                "replacing it, or choose another output folder."
            )
    keras.utils.set_random_seed(config.seed)
    train = train_pipeline(data.train, config, num_classes, global_batch, repeat=True)
    torch_parallel = distribution.strategy if isinstance(distribution.strategy, distribute.TorchDataParallel) else None
    if torch_parallel:  # each process trains on its slice; all validate on every image
        train = torch_parallel.shard(train, global_batch)
    on_jax = keras.backend.backend() == "jax"
    val = eval_pipeline(
        data.val,
        config,
        num_classes,
        config.batch_size if torch_parallel else global_batch,
        batch_multiple=distribution.num_replicas if on_jax else 1,
        drop_remainder=on_jax and distribution.num_workers > 1,
    )
    previous_policy = keras.config.dtype_policy()
    if config.amp:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with distribution.scope():
            model = build_model(config, num_classes)
            model.class_names = list(data.class_names) if len(data.class_names) == num_classes else None
            model.compile(
                optimizer=build_optimizer(config, model, steps_per_epoch),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.smoothing),
                metrics=["accuracy"],
            )
            if torch_parallel:
                torch_parallel.prepare(model)
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


def fit_batch_to_data(config, train_size, num_replicas=1):
    """``config``, with ``batch_size`` lowered (and a notice printed) when the global
    batch ``batch_size * num_replicas`` is larger than the ``train_size`` training
    images: to the largest that fits (even, when MixUp/CutMix pair the images)."""
    if config.batch_size * num_replicas <= train_size:
        return config
    batch = train_size // num_replicas
    if (config.mixup > 0 or config.cutmix > 0) and batch * num_replicas % 2:
        batch -= 1
    if batch < 1:
        raise ValueError(
            f"The {train_size} training images are fewer than the {num_replicas} replicas "
            "(at least one image each per step); add images or train on fewer devices."
        )
    print(
        f"keras-sequencer: batch size lowered from {config.batch_size} to {batch} per device: "
        f"the training set has only {train_size} images (-b / batch_size chooses it)."
    )
    return dataclasses.replace(config, batch_size=batch)


RUN_FILES = ("best.keras", "history.csv", "curves.png")


def finished_epochs(output_dir):
    """The epochs of a finished run in ``output_dir`` (``history.csv`` written and no
    backup of an unfinished one left), or ``None``."""
    history_path = os.path.join(output_dir, "history.csv")
    if not os.path.exists(history_path) or read_state(os.path.join(output_dir, "backup")):
        return None
    if not os.path.exists(os.path.join(output_dir, "best.keras")):
        return None
    epochs = read_history(history_path).get("epoch", [])
    return int(max(epochs)) + 1 if epochs else None


def clear_run(output_dir):
    """Removes a previous run's files (checkpoint, history, curves, backup) from ``output_dir``."""
    for name in RUN_FILES:
        path = os.path.join(output_dir, name)
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(output_dir, "backup"), ignore_errors=True)


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
    """Loads ``data`` (folder or TFDS, see :func:`keras_sequencer.training.data.load`) and trains;
    prints the backend, the data and the output folder."""
    check_requirements(data_lib.tfds_name(data, dataset))
    distribution = distribute.setup_distribution()  # first: multi-worker TF needs it so
    print(f"keras-sequencer: {keras.backend.backend()} backend, {distribution.description}")
    # seeded before the data's shuffle is made: the same image order in every worker
    keras.utils.set_random_seed(config.seed)
    splits = data_lib.load(data, dataset)
    print(
        f"keras-sequencer: {splits.train_size} training / {splits.val_size} validation "
        f"images, {splits.num_classes} classes"
    )
    print(f"keras-sequencer: writing checkpoints, history and curves to {os.path.abspath(config.output)}")
    cooldown = f", then {config.cooldown_epochs} cooldown epochs at --min-lr" if config.cooldown_epochs else ""
    print(
        f"keras-sequencer: {config.epochs + config.cooldown_epochs} epochs: {config.warmup_epochs} of warmup, "
        f"the cosine schedule over {config.epochs}{cooldown}"
    )
    return fit(config, splits, distribution=distribution)
