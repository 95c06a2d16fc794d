"""Training Sequencer2D with ``model.fit``: the official (timm) recipe in Keras.

The pieces map onto maintained Keras / TensorFlow components:

======================================  ===============================================
timm (official repo)                    here
======================================  ===============================================
``--opt adamw``, ``--weight-decay``     ``keras.optimizers.AdamW``; 1-D weights (biases,
                                        norms) excluded from decay, as timm does
``--sched cosine`` + warmup/cooldown    ``keras.optimizers.schedules.CosineDecay`` with
                                        ``warmup_target`` (per step; holds ``min_lr``
                                        through the cooldown epochs)
``--clip-grad``                         ``global_clipnorm``
``--smoothing``                         ``CategoricalCrossentropy(label_smoothing=...)``
``--mixup`` / ``--cutmix``              ``keras.layers.MixUp`` / ``CutMix``, one of them
                                        per batch (timm's switch probability 0.5)
``--aa rand-m9-...``                    ``keras.layers.RandAugment`` per image
``--reprob`` / ``--remode``             ``keras.layers.RandomErasing``
random resized crop, flip, crop-pct     ``tf.image`` ops in the ``tf.data`` pipeline
``--native-amp`` / ``--amp``            ``mixed_float16`` policy (loss scaling by Keras)
``--drop-path``                         the model's ``drop_path_rate``
``--pretrained``                        ``weights="imagenet"``
======================================  ===============================================

Written here: the mapping itself, the per-batch MixUp/CutMix switch, the
``--aa`` string parser, the non-finite-loss stop with a message and the
training-curve PNG. The input pipeline is ``tf.data``, which ``fit`` accepts on
every backend. :mod:`keras_sequencer.distribute` spreads the work over devices.
"""

import csv
import dataclasses
import math
import os

import keras
import numpy as np

from keras_sequencer import data as data_lib
from keras_sequencer import distribute
from keras_sequencer.models import IMAGENET_MEAN, IMAGENET_STD, MODEL_CONFIGS, Sequencer2D

REMODES = {"pixel": None, "const": 0.0}  # timm --remode -> RandomErasing fill_value


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (field names follow timm's flags).

    ``batch_size`` is per replica (as timm's ``-b`` is per GPU); the global batch
    is ``batch_size * num_replicas``. ``epochs`` counts the cosine schedule,
    ``cooldown_epochs`` more are trained at ``min_lr``.
    """

    model: str = "sequencer2d_s"
    arch: dict = None  # Sequencer2D kwargs instead of MODEL_CONFIGS[model]
    weights: str = None  # None, "imagenet" or a weights/checkpoint path
    num_classes: int = None  # default: the data's
    image_size: tuple = (224, 224)
    crop_pct: float = 0.875
    batch_size: int = 128
    workers: int = 4
    epochs: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_lr: float = 1e-4
    warmup_epochs: int = 3
    cooldown_epochs: int = 10
    weight_decay: float = 0.05
    clip_grad: float = None
    drop_path: float = 0.0
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_switch_prob: float = 0.5
    aa: str = None
    reprob: float = 0.0
    remode: str = "pixel"
    hflip: float = 0.5
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    amp: bool = False
    seed: int = 42
    output: str = "output/train"
    verbose: object = "auto"

    def __post_init__(self):
        self.image_size = tuple(int(s) for s in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width); got {self.image_size}.")
        if self.arch is None and self.model not in MODEL_CONFIGS:
            raise ValueError(
                f"Unknown model {self.model!r}; expected one of {sorted(MODEL_CONFIGS)}."
            )
        if self.remode not in REMODES:
            raise ValueError(
                f"Unsupported remode {self.remode!r}; keras.layers.RandomErasing offers "
                f"{sorted(REMODES)} (timm's 'rand', one random colour per patch, is not available)."
            )
        for name in ("reprob", "hflip", "smoothing", "drop_path", "mixup_switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}.")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1]; got {self.crop_pct}.")
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs})."
            )
        if min(self.batch_size, self.epochs, self.workers) < 1:
            raise ValueError("batch_size, epochs and workers must be positive.")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_lr < 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive; min_lr, warmup_lr, weight_decay >= 0.")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("mixup and cutmix (Beta distribution alphas) must be >= 0.")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip_grad must be positive; got {self.clip_grad}.")
        parse_auto_augment(self.aa)


# The official transfer-learning recipe (third seed command: CIFAR-10 from ImageNet).
TRANSFER_RECIPE = dict(
    model="sequencer2d_s",
    weights="imagenet",
    batch_size=128,
    epochs=200,
    lr=1e-4,
    weight_decay=1e-4,
    warmup_lr=1e-6,
    warmup_epochs=5,
    clip_grad=1.0,
    drop_path=0.1,
    aa="rand-m9-mstd0.5-inc1",
    remode="pixel",
    smoothing=0.1,
    mixup=0.8,
    cutmix=1.0,
    amp=True,
)


def parse_auto_augment(aa):
    """timm's ``--aa rand-m9-n2-mstd0.5-inc1`` -> ``keras.layers.RandAugment`` kwargs.

    ``m`` (magnitude 0-10) becomes ``factor=m/10`` and ``n`` ``num_ops``. Keras
    samples each op's strength uniformly in ``[0, factor]``, which stands in for
    timm's magnitude noise ``mstd``; its ops all grow with the magnitude, as
    timm's ``inc1`` set does. Returns ``None`` for no augmentation.
    """
    if aa in (None, "", "none"):
        return None
    parts = aa.split("-")
    if parts[0] != "rand":
        raise ValueError(
            f"Unsupported --aa {aa!r}: only RandAugment ('rand-m9-mstd0.5-inc1' style) "
            "maps to a Keras layer; AutoAugment/AugMix policies are not available."
        )
    magnitude, num_ops = 9.0, 2
    for part in parts[1:]:
        key = part.rstrip("0123456789.")
        value = part[len(key):]
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"Cannot read {part!r} in --aa {aa!r}.") from None
        if key == "m":
            magnitude = number
        elif key == "n":
            num_ops = int(number)
        elif key == "mstd":
            if number < 0:
                raise ValueError(f"mstd must be >= 0 in --aa {aa!r}.")
        elif key == "inc":
            if number != 1:
                raise ValueError(
                    f"--aa {aa!r}: keras.layers.RandAugment only has increasing-severity "
                    "ops (timm's inc1)."
                )
        else:
            raise ValueError(
                f"Unsupported RandAugment option {key!r} in --aa {aa!r}; "
                "supported: m (magnitude), n (ops), mstd, inc1."
            )
    if not 0 <= magnitude <= 10 or num_ops < 1:
        raise ValueError(f"--aa {aa!r}: magnitude must be in [0, 10] and n >= 1.")
    return dict(factor=magnitude / 10.0, num_ops=num_ops)


# ---------------------------------------------------------------- input pipeline


def _normalize(images):
    mean = np.array(IMAGENET_MEAN, "float32") * 255.0
    std = np.array(IMAGENET_STD, "float32") * 255.0
    return (images - mean) / std


def train_pipeline(dataset, config, num_classes, global_batch_size):
    """Augmented, batched training data: ``(images float32 normalised, one-hot labels)``.

    Per image: random resized crop (``scale``, ``ratio``), horizontal flip,
    RandAugment; per batch: normalisation, random erasing, MixUp or CutMix.
    """
    import tensorflow as tf

    height, width = config.image_size
    rand_augment = parse_auto_augment(config.aa)
    rand_augment = rand_augment and keras.layers.RandAugment(
        value_range=(0, 255), seed=config.seed, **rand_augment
    )

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
        if rand_augment:
            image = rand_augment(image)
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
        images = _normalize(images)
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
        return _normalize(image), tf.one_hot(label, num_classes)

    def trim(images, labels):
        keep = tf.shape(images)[0] // batch_multiple * batch_multiple
        return images[:keep], labels[:keep]

    batches = dataset.map(prepare, num_parallel_calls=config.workers).batch(
        global_batch_size, drop_remainder=drop_remainder
    )
    if batch_multiple > 1 and not drop_remainder:
        batches = batches.map(trim).filter(lambda images, _: tf.shape(images)[0] > 0)
    return batches.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- model, optimizer


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warmup ``warmup_lr -> lr`` over ``warmup_epochs``, cosine to ``min_lr`` at
    the end of ``epochs``, then ``min_lr`` (the cooldown)."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    decay_steps = max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch)
    kwargs = dict(decay_steps=decay_steps, alpha=config.min_lr / config.lr)
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            config.warmup_lr, warmup_target=config.lr, warmup_steps=warmup_steps, **kwargs
        )
    return keras.optimizers.schedules.CosineDecay(config.lr, **kwargs)


def build_optimizer(config, model, steps_per_epoch):
    """AdamW with the schedule, global-norm clipping and no decay on 1-D weights."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        global_clipnorm=config.clip_grad,
    )
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) <= 1]
    )
    return optimizer


def build_model(config, num_classes):
    """The Sequencer2D of ``config`` with a ``num_classes`` softmax head."""
    arch = config.arch or MODEL_CONFIGS[config.model]
    return Sequencer2D(
        **arch,
        weights=config.weights,
        classes=num_classes,
        input_shape=(*config.image_size, 3),
        drop_path_rate=config.drop_path,
        name=config.model,
    )


# ---------------------------------------------------------------- callbacks


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteLossError` naming the epoch and batch.

    Unlike ``keras.callbacks.TerminateOnNaN`` the run fails loudly, and the last
    epoch's backup stays in place for a restart with other settings.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch "
                f"{batch + 1}; stopping. Lower the learning rate, enable gradient clipping "
                "(--clip-grad) or check the data for NaN/inf values."
            )


class TrainingCurves(keras.callbacks.Callback):
    """After every epoch, plots the CSV history (all runs, resumed ones too) to a PNG."""

    def __init__(self, csv_path, png_path):
        super().__init__()
        self.csv_path, self.png_path = csv_path, png_path

    def on_epoch_end(self, epoch, logs=None):
        plot_history(self.csv_path, self.png_path)


def read_history(csv_path):
    """The ``CSVLogger`` file as ``{column: [float, ...]}``."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    def number(text):
        try:
            return float(text)
        except ValueError:  # "NA": a metric missing that epoch
            return float("nan")

    return {key: [number(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_history(csv_path, png_path):
    """Loss and accuracy per epoch (train and validation) from the CSV history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(csv_path)
    epochs = [e + 1 for e in history.get("epoch", [])]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            if prefix + metric in history:
                axis.plot(epochs, history[prefix + metric], marker="o", label=prefix + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)


def make_callbacks(config, output_dir):
    """Best checkpoint, backup for resuming, CSV history, curve PNG, NaN stop."""
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "history.csv")
    best = None  # keep the best of an interrupted run's epochs when resuming
    if os.path.exists(csv_path):
        previous = [v for v in read_history(csv_path).get("val_accuracy", []) if v == v]
        best = max(previous) if previous else None
    return [
        StopOnNonFiniteLoss(),
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "best.keras"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(csv_path, append=True),
        TrainingCurves(csv_path, os.path.join(output_dir, "curves.png")),
    ]


# ---------------------------------------------------------------- training


def fit(config, data, callbacks=(), distribution=None):
    """Trains on ``data`` (a :class:`keras_sequencer.data.DataSplits`).

    Writes to ``config.output``: ``best.keras`` (best validation accuracy),
    ``history.csv``, ``curves.png`` and ``backup/`` (removed when training
    completes). Re-running an interrupted run with the same output resumes at
    its last finished epoch.

    Returns:
        ``(model, history)``.
    """
    distribution = distribution or distribute.setup_distribution()
    num_classes = config.num_classes or data.num_classes
    if config.num_classes and config.num_classes != data.num_classes:
        raise ValueError(
            f"num_classes is {config.num_classes} but the data has {data.num_classes} classes."
        )
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
    train = train_pipeline(data.train, config, num_classes, global_batch)
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
                _build_for_multi_worker(model, train)
            history = _fit_naming_bad_images(
                model,
                data,
                train,
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


def _build_for_multi_worker(model, dataset):
    """Workaround for Keras 3.15's TF trainer under ``MultiWorkerMirroredStrategy``:
    before training, ``fit`` eagerly reduces an ``(x, y)`` tuple of per-replica
    batches, which that strategy rejects ("Attempt to convert a value (PerReplica...")).
    Build the model, loss, metrics and optimizer from the dataset's element spec
    instead, and skip that step."""
    model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def run(config, data, dataset=""):
    """Loads ``data`` (folder or TFDS, see :func:`keras_sequencer.data.load`) and trains."""
    distribution = distribute.setup_distribution()  # first: multi-worker TF needs it so
    print(f"keras-sequencer: {keras.backend.backend()} backend, {distribution.description}")
    splits = data_lib.load(data, dataset)
    print(
        f"keras-sequencer: {splits.train_size} training / {splits.val_size} validation "
        f"images, {splits.num_classes} classes"
    )
    return fit(config, splits, distribution=distribution)


# ---------------------------------------------------------------- command line


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a Sequencer2D (timm's train.py flags)",
        description=(
            "Train a Sequencer2D with the official repo's (timm's) flags. DATA is an "
            "ImageNet-style folder (DATA/train/<class>/*, DATA/val/<class>/*), a TensorFlow "
            "Datasets name, or the TFDS data dir with --dataset tfds/NAME or torch/NAME. "
            "-b is per device. Flags or values that cannot be honoured are errors."
        ),
    )
    defaults = TrainConfig()
    add = parser.add_argument
    add("data", metavar="DATA")
    add("--dataset", default="", help="'' (folder), tfds/NAME or torch/NAME (read from TFDS)")
    add("--model", default=defaults.model, choices=sorted(MODEL_CONFIGS))
    add("--pretrained", action="store_true", help="start from the ImageNet weights")
    add("--initial-checkpoint", default=None, metavar="PATH", help="start from these weights")
    add("--num-classes", type=int, default=None)
    add("--img-size", type=int, default=None)
    add("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"))
    add("--crop-pct", type=float, default=defaults.crop_pct)
    add("-b", "--batch-size", type=int, default=defaults.batch_size, help="per device")
    add("-j", "--workers", type=int, default=defaults.workers, help="tf.data parallel calls")
    add("--opt", default="adamw", choices=["adamw"])
    add("--epochs", type=int, default=defaults.epochs)
    add("--sched", default="cosine", choices=["cosine"])
    add("--lr", type=float, default=defaults.lr)
    add("--min-lr", type=float, default=defaults.min_lr)
    add("--warmup-lr", type=float, default=defaults.warmup_lr)
    add("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    add("--cooldown-epochs", type=int, default=defaults.cooldown_epochs)
    add("--weight-decay", type=float, default=defaults.weight_decay)
    add("--clip-grad", type=float, default=None, help="global gradient norm")
    add("--drop-path", type=float, default=defaults.drop_path)
    add("--smoothing", type=float, default=defaults.smoothing)
    add("--mixup", type=float, default=defaults.mixup)
    add("--cutmix", type=float, default=defaults.cutmix)
    add("--aa", default=None, help="RandAugment, e.g. rand-m9-mstd0.5-inc1")
    add("--reprob", type=float, default=defaults.reprob)
    add("--remode", default=defaults.remode, choices=sorted(REMODES))
    add("--hflip", type=float, default=defaults.hflip)
    add("--scale", type=float, nargs=2, default=list(defaults.scale))
    add("--ratio", type=float, nargs=2, default=list(defaults.ratio))
    add("--amp", "--native-amp", dest="amp", action="store_true", help="mixed_float16")
    add("--seed", type=int, default=defaults.seed)
    add("--output", default=defaults.output, help="checkpoints, history, curves")
    parser.set_defaults(func=_command)
    return parser


def config_from_args(args):
    """A :class:`TrainConfig` from parsed ``train`` flags (ValueError if inconsistent)."""
    image_size = None
    if args.input_size is not None:
        channels, height, width = args.input_size
        if channels != 3:
            raise ValueError(f"--input-size must have 3 channels (RGB); got {channels}.")
        image_size = (height, width)
    if args.img_size is not None:
        if image_size is not None and image_size != (args.img_size, args.img_size):
            raise ValueError(
                f"--img-size {args.img_size} contradicts --input-size {args.input_size}."
            )
        image_size = (args.img_size, args.img_size)
    if args.pretrained and args.initial_checkpoint:
        raise ValueError("Use either --pretrained or --initial-checkpoint, not both.")
    return TrainConfig(
        model=args.model,
        weights="imagenet" if args.pretrained else args.initial_checkpoint,
        num_classes=args.num_classes,
        image_size=image_size or TrainConfig.image_size,
        crop_pct=args.crop_pct,
        batch_size=args.batch_size,
        workers=args.workers,
        epochs=args.epochs,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=args.warmup_epochs,
        cooldown_epochs=args.cooldown_epochs,
        weight_decay=args.weight_decay,
        clip_grad=args.clip_grad,
        drop_path=args.drop_path,
        smoothing=args.smoothing,
        mixup=args.mixup,
        cutmix=args.cutmix,
        aa=args.aa,
        reprob=args.reprob,
        remode=args.remode,
        hflip=args.hflip,
        scale=tuple(args.scale),
        ratio=tuple(args.ratio),
        amp=args.amp,
        seed=args.seed,
        output=args.output,
    )


def _command(args):
    import sys

    try:
        run(config_from_args(args), args.data, args.dataset)
    except (ValueError, NonFiniteLossError) as error:
        print(f"keras-sequencer train: error: {error}", file=sys.stderr)
        return 1
    return 0
