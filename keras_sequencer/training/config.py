"""What a training run needs: :class:`TrainConfig`, the transfer recipe, and the
``train`` command's flags turned into a config (:func:`config_from_args`)."""

import dataclasses

from keras_sequencer import variants
from keras_sequencer.training.augment import parse_auto_augment
from keras_sequencer.training.mix import MODES as MIXUP_MODES
from keras_sequencer.training.transforms import ERASE_MODES

INTERPOLATIONS = ("random", "bilinear", "bicubic")
# rnn_bias_step: "torch" steps an LSTM's (a SimpleRNN's) one Keras bias as the sum of
# PyTorch's b_ih + b_hh moves, twice Adam's step (keras_sequencer.optimizers.RecipeAdamW); "keras" once.
RNN_BIAS_STEPS = ("torch", "keras")
# adam_eps: "torch" adds AdamW's eps to the bias-corrected sqrt(v), as PyTorch's AdamW
# (keras_sequencer.optimizers.RecipeAdamW); "keras" to the uncorrected one, as Keras's.
ADAM_EPS_MODES = ("torch", "keras")
# The builders' ``initialization`` values (keras_sequencer.initializers.INITIALIZATIONS),
# the original's first (the default); listed here so that the command line needs no Keras.
INITIALIZATIONS = ("original", "keras")
# Warmup epochs when none are given (shortened to a shorter run).
DEFAULT_WARMUP_EPOCHS = 3


def model_names():
    """Every model name ``--model`` / ``TrainConfig.model`` accepts (sorted)."""
    return variants.list_models()


def model_input_size(name):
    """The (square) input size model ``name`` is defined for."""
    return variants.get_variant(name).input_size


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (field names follow timm's flags).

    ``model`` is any registered model name (:func:`keras_sequencer.list_models`);
    ``arch`` (Sequencer2D keyword arguments) builds that architecture instead,
    named ``model``. ``batch_size`` is per replica (as timm's ``-b`` is per
    GPU); the global batch is ``batch_size * num_replicas`` (lowered to the
    training set's size, with a notice, when it is larger). ``epochs`` counts
    the cosine schedule, ``cooldown_epochs`` (0 by default, as in current timm;
    the official recipe ran timm 0.5.4's 10) more are trained at ``min_lr``;
    ``warmup_epochs`` defaults to :data:`DEFAULT_WARMUP_EPOCHS`, shortened to
    ``epochs`` when the run is shorter (a value given explicitly must fit). The
    learning rate changes once per epoch, or every update with
    ``sched_on_updates`` (timm's ``--sched-on-updates``).

    ``restart``: train from the start in an ``output`` folder that holds a
    finished or interrupted run, replacing its files; without it an
    interrupted run resumes and a finished one is not trained again.

    The augmentation and regularisation fields have timm's meaning (see
    :func:`keras_sequencer.training.train_pipeline`): ``drop_path`` is the rate
    of the last block (0 in the first, linear in between, as the original);
    ``color_jitter`` applies only without ``aa``; ``mixup_prob`` is the
    probability that a batch is mixed at all. ``init``: the model's
    ``initialization`` when it is trained from scratch (``weights`` None):
    ``"original"`` (the original's, :mod:`keras_sequencer.initializers`) or
    ``"keras"`` (Keras's defaults); ``seed`` fixes the initial weights.
    ``rnn_bias_step``: ``"torch"`` moves each LSTM's one bias as timm's
    ``b_ih + b_hh`` move (:class:`~keras_sequencer.optimizers.RecipeAdamW`),
    ``"keras"`` as one bias. ``adam_eps``: ``"torch"`` adds AdamW's epsilon
    where timm's (PyTorch's) AdamW adds it, ``"keras"`` where Keras's does.
    """

    model: str = "sequencer2d_s"
    arch: dict = None  # Sequencer2D kwargs instead of the registered architecture
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
    warmup_epochs: int = None  # default: DEFAULT_WARMUP_EPOCHS, at most epochs
    cooldown_epochs: int = 0
    sched_on_updates: bool = False
    weight_decay: float = 0.05
    clip_grad: float = None
    rnn_bias_step: str = "torch"
    adam_eps: str = "torch"
    drop_path: float = 0.0
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_switch_prob: float = 0.5
    mixup_prob: float = 1.0
    mixup_mode: str = "batch"
    aa: str = None
    color_jitter: float = 0.4
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    train_interpolation: str = "random"
    init: str = "original"
    hflip: float = 0.5
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    amp: bool = False
    seed: int = 42
    output: str = "output/train"
    restart: bool = False
    verbose: object = "auto"

    def __post_init__(self):
        self.image_size = tuple(int(s) for s in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width); got {self.image_size}.")
        if self.arch is None:
            variants.get_variant(self.model)  # an unknown name: ValueError with close names
        choices = (
            ("remode", ERASE_MODES),
            ("mixup_mode", MIXUP_MODES),
            ("train_interpolation", INTERPOLATIONS),
            ("init", INITIALIZATIONS),
            ("rnn_bias_step", RNN_BIAS_STEPS),
            ("adam_eps", ADAM_EPS_MODES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"Unsupported {name} {getattr(self, name)!r}; supported: {', '.join(allowed)}.")
        if self.recount < 1:
            raise ValueError(f"recount must be >= 1; got {self.recount}.")
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0; got {self.color_jitter}.")
        probabilities = ("reprob", "hflip", "smoothing", "drop_path", "mixup_switch_prob", "mixup_prob")
        for name in probabilities:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}.")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1]; got {self.crop_pct}.")
        if self.warmup_epochs is None and self.epochs >= 1:
            self.warmup_epochs = min(DEFAULT_WARMUP_EPOCHS, self.epochs)
        if self.cooldown_epochs < 0 or (self.warmup_epochs or 0) < 0:
            raise ValueError("warmup_epochs and cooldown_epochs must be >= 0.")
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs}).")
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


def capped_warmup(warmup_epochs, epochs, flag="--warmup-epochs", prog="keras-sequencer train"):
    """``min(warmup_epochs, epochs)`` for a warmup the user did not choose (a
    default or a recipe's); prints one notice line when it shortens it."""
    if warmup_epochs <= epochs:
        return warmup_epochs
    print(f"{prog}: warmup shortened to the run's {epochs} epoch(s) ({flag} defaults to {warmup_epochs}).")
    return epochs


def config_from_args(args):
    """A :class:`TrainConfig` from parsed ``train`` flags (ValueError if inconsistent).

    Without ``--img-size``/``--input-size`` the model's own input size is used
    (224 for the ImageNet models, 32 for the CIFAR ones); without
    ``--warmup-epochs`` the default warmup is capped at ``--epochs``.
    """
    image_size = None
    if args.input_size is not None:
        channels, height, width = args.input_size
        if channels != 3:
            raise ValueError(f"--input-size must have 3 channels (RGB); got {channels}.")
        image_size = (height, width)
    if args.img_size is not None:
        if image_size is not None and image_size != (args.img_size, args.img_size):
            raise ValueError(f"--img-size {args.img_size} contradicts --input-size {args.input_size}.")
        image_size = (args.img_size, args.img_size)
    if image_size is None:
        size = model_input_size(args.model)
        image_size = (size, size)
    if args.pretrained and args.initial_checkpoint:
        raise ValueError("Use either --pretrained or --initial-checkpoint, not both.")
    warmup_epochs = args.warmup_epochs
    if warmup_epochs is None:
        warmup_epochs = capped_warmup(DEFAULT_WARMUP_EPOCHS, args.epochs)
    return TrainConfig(
        model=args.model,
        weights="imagenet" if args.pretrained else args.initial_checkpoint,
        num_classes=args.num_classes,
        image_size=image_size,
        crop_pct=args.crop_pct,
        batch_size=args.batch_size,
        workers=args.workers,
        epochs=args.epochs,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=warmup_epochs,
        cooldown_epochs=args.cooldown_epochs,
        sched_on_updates=args.sched_on_updates,
        weight_decay=args.weight_decay,
        clip_grad=args.clip_grad,
        rnn_bias_step=args.rnn_bias_step,
        adam_eps=args.adam_eps,
        drop_path=args.drop_path,
        smoothing=args.smoothing,
        mixup=args.mixup,
        cutmix=args.cutmix,
        mixup_prob=args.mixup_prob,
        mixup_switch_prob=args.mixup_switch_prob,
        mixup_mode=args.mixup_mode,
        aa=args.aa,
        color_jitter=args.color_jitter,
        reprob=args.reprob,
        remode=args.remode,
        recount=args.recount,
        train_interpolation=args.train_interpolation,
        init=args.init,
        hflip=args.hflip,
        scale=tuple(args.scale),
        ratio=tuple(args.ratio),
        amp=args.amp,
        seed=args.seed,
        output=args.output,
        restart=args.restart,
    )
