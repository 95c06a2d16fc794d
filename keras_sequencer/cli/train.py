"""``keras-sequencer train``: timm's ``train.py`` flags -> :mod:`keras_sequencer.training`.

The parser only maps flags to a :class:`~keras_sequencer.training.TrainConfig`
(:func:`keras_sequencer.training.config_from_args`) and calls
:func:`keras_sequencer.training.run`; flags or values that cannot be honoured
are argparse errors or one-line errors.
"""

from keras_sequencer import training, variants
from keras_sequencer.cli.common import CLIError, require_file


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a Sequencer model (timm's train.py flags)",
        description=(
            "Train a Sequencer model with the official repo's (timm's) flags. DATA is an "
            "ImageNet-style folder (DATA/train/<class>/*, DATA/val/<class>/*), a TensorFlow "
            "Datasets name, or the TFDS data dir with --dataset tfds/NAME or torch/NAME. "
            "-b is per device. Flags or values that cannot be honoured are errors."
        ),
    )
    defaults = training.TrainConfig()
    add = parser.add_argument
    add("data", metavar="DATA")
    add("--dataset", default="", help="'' (folder), tfds/NAME or torch/NAME (read from TFDS)")
    add(
        "--model",
        default=defaults.model,
        choices=variants.list_models(),
        metavar="NAME",
        help="any registered model name (keras_sequencer.list_models()); default: %(default)s",
    )
    add("--pretrained", action="store_true", help="start from the ImageNet weights")
    add("--initial-checkpoint", default=None, metavar="PATH", help="start from these weights")
    add("--num-classes", type=int, default=None)
    add(
        "--img-size",
        "--image-size",
        dest="img_size",
        type=int,
        default=None,
        help="square input size (default: the model's, 224 or 32 for the CIFAR models)",
    )
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
    add(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"default: {defaults.warmup_epochs}, at most --epochs",
    )
    add("--cooldown-epochs", type=int, default=defaults.cooldown_epochs)
    add(
        "--sched-on-updates",
        action="store_true",
        help="change the learning rate every update (default: once per epoch, as timm)",
    )
    add("--weight-decay", type=float, default=defaults.weight_decay)
    add("--clip-grad", type=float, default=None, help="global gradient norm")
    add(
        "--drop-path",
        type=float,
        default=defaults.drop_path,
        help="drop-path rate of the last block (0 in the first, linear in between)",
    )
    add(
        "--init",
        default=defaults.init,
        choices=training.INITIALIZATIONS,
        help="initialisation from scratch: the original's or Keras's defaults",
    )
    add("--smoothing", type=float, default=defaults.smoothing)
    add("--mixup", type=float, default=defaults.mixup, help="MixUp Beta alpha (0: off)")
    add("--cutmix", type=float, default=defaults.cutmix, help="CutMix Beta alpha (0: off)")
    add("--mixup-prob", type=float, default=defaults.mixup_prob, help="probability a batch is mixed")
    add(
        "--mixup-switch-prob",
        type=float,
        default=defaults.mixup_switch_prob,
        help="probability of CutMix when both are on",
    )
    add("--mixup-mode", default=defaults.mixup_mode, choices=training.MIXUP_MODES)
    add("--aa", default=None, help="RandAugment, e.g. rand-m9-mstd0.5-inc1")
    add(
        "--color-jitter",
        type=float,
        default=defaults.color_jitter,
        help="brightness/contrast/saturation jitter, used only without --aa",
    )
    add("--reprob", type=float, default=defaults.reprob, help="random erasing probability")
    add("--remode", default=defaults.remode, choices=training.ERASE_MODES)
    add("--recount", type=int, default=defaults.recount, help="random erasing boxes, at most")
    add(
        "--train-interpolation",
        default=defaults.train_interpolation,
        choices=training.INTERPOLATIONS,
    )
    add("--hflip", type=float, default=defaults.hflip)
    add("--scale", type=float, nargs=2, default=list(defaults.scale))
    add("--ratio", type=float, nargs=2, default=list(defaults.ratio))
    add("--amp", "--native-amp", dest="amp", action="store_true", help="mixed_float16")
    add("--seed", type=int, default=defaults.seed)
    add("--output", default=defaults.output, help="checkpoints, history, curves")
    parser.set_defaults(func=command)
    return parser


def command(args):
    """Runs ``keras-sequencer train``; errors are one line (see :mod:`keras_sequencer.cli`)."""
    if args.initial_checkpoint:
        require_file(args.initial_checkpoint, "--initial-checkpoint")
    try:
        training.run(training.config_from_args(args), args.data, args.dataset)
    except training.NonFiniteLossError as error:
        raise CLIError(str(error)) from None
    return 0
