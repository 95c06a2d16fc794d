"""``keras-sequencer train``: timm's ``train.py`` flags -> :mod:`keras_sequencer.training`.

The parser only maps flags to a :class:`~keras_sequencer.training.TrainConfig`
(:func:`keras_sequencer.training.config_from_args`) and calls
:func:`keras_sequencer.training.run`; flags or values that cannot be honoured
are argparse errors or one-line errors. The flags are grouped as in timm's
``train.py``, and ``--help`` shows every default. It imports no Keras or
TensorFlow until the arguments are parsed.
"""

from keras_sequencer import variants
from keras_sequencer.cli.common import CLIError, DefaultsHelpFormatter, require_file
from keras_sequencer.training.config import (
    ADAM_EPS_MODES,
    DEFAULT_WARMUP_EPOCHS,
    INITIALIZATIONS,
    INTERPOLATIONS,
    RNN_BIAS_STEPS,
    TrainConfig,
)
from keras_sequencer.training.mix import MODES as MIXUP_MODES
from keras_sequencer.training.transforms import ERASE_MODES

COMMAND = "train"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="train or fine-tune a Sequencer model (timm's train.py flags)",
        formatter_class=DefaultsHelpFormatter,
        description=(
            "Train a Sequencer model with the official repo's (timm's) flags. DATA is an "
            "ImageNet-style folder (DATA/train/<class>/*, DATA/val/<class>/*), a TensorFlow "
            "Datasets name, or the TFDS data dir with --dataset tfds/NAME or torch/NAME. "
            "It trains --epochs epochs, plus --cooldown-epochs at --min-lr. Flags or values "
            "that cannot be honoured are errors."
        ),
    )
    defaults = TrainConfig()
    group = parser.add_argument_group("Dataset parameters")
    add = group.add_argument
    add("data", metavar="DATA", help="image folder, TFDS name or TFDS data dir")
    add("--dataset", default="", help="'' (folder), tfds/NAME or torch/NAME (read from TFDS)")

    group = parser.add_argument_group("Model parameters")
    add = group.add_argument
    add(
        "--model",
        default=defaults.model,
        choices=variants.list_models(),
        metavar="NAME",
        help="any registered model name (keras_sequencer.list_models())",
    )
    add("--pretrained", action="store_true", help="start from the ImageNet weights (default: from scratch)")
    add("--initial-checkpoint", default=None, metavar="PATH", help="start from these weights (default: none)")
    add("--num-classes", type=int, default=None, help="classifier outputs (default: the data's classes)")
    add(
        "--img-size",
        "--image-size",
        dest="img_size",
        type=int,
        default=None,
        help="square input size (default: the model's, 224 or 32 for the CIFAR models)",
    )
    add(
        "--input-size",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="input size, channels first as in timm (default: 3 and --img-size)",
    )
    add("--crop-pct", type=float, default=defaults.crop_pct, help="evaluation centre crop fraction")
    add(
        "-b",
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="batch per device; lowered, with a notice, when the training set is smaller",
    )
    add(
        "--init",
        default=defaults.init,
        choices=INITIALIZATIONS,
        help="initialisation from scratch: the original's or Keras's defaults",
    )

    group = parser.add_argument_group("Optimizer parameters")
    add = group.add_argument
    add("--opt", default="adamw", choices=["adamw"], help="optimizer")
    add("--weight-decay", type=float, default=defaults.weight_decay, help="weight decay")
    add("--clip-grad", type=float, default=None, help="global gradient norm clipping (default: off)")
    add(
        "--rnn-bias-step",
        default=defaults.rnn_bias_step,
        choices=RNN_BIAS_STEPS,
        help="torch: an LSTM's one bias moves as PyTorch's b_ih + b_hh do (twice Adam's step); keras: once",
    )
    add(
        "--adam-eps",
        default=defaults.adam_eps,
        choices=ADAM_EPS_MODES,
        help="torch: AdamW's eps added to the bias-corrected sqrt(v), as timm's AdamW; keras: to the uncorrected one",
    )

    group = parser.add_argument_group("Learning rate schedule parameters")
    add = group.add_argument
    add("--sched", default="cosine", choices=["cosine"], help="schedule")
    add("--sched-on-updates", action="store_true", help="change the rate every update (default: once per epoch)")
    add("--lr", type=float, default=defaults.lr, help="peak learning rate")
    add("--warmup-lr", type=float, default=defaults.warmup_lr, help="learning rate at the start of the warmup")
    add("--min-lr", type=float, default=defaults.min_lr, help="learning rate at the end, and in the cooldown")
    add("--epochs", type=int, default=defaults.epochs, help="epochs of the cosine schedule")
    add(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"linear warmup epochs (default: {DEFAULT_WARMUP_EPOCHS}, at most --epochs)",
    )
    add(
        "--cooldown-epochs",
        type=int,
        default=defaults.cooldown_epochs,
        help="epochs at --min-lr after --epochs (current timm's default; the official recipe ran 10)",
    )

    group = parser.add_argument_group("Augmentation and regularization parameters")
    add = group.add_argument
    add("--scale", type=float, nargs=2, default=list(defaults.scale), help="random-resized-crop area range")
    add("--ratio", type=float, nargs=2, default=list(defaults.ratio), help="random-resized-crop aspect range")
    add("--hflip", type=float, default=defaults.hflip, help="horizontal flip probability")
    add(
        "--color-jitter",
        type=float,
        default=defaults.color_jitter,
        help="brightness/contrast/saturation jitter, used only without --aa",
    )
    add("--aa", default=None, help="RandAugment, e.g. rand-m9-mstd0.5-inc1 (default: off)")
    add("--reprob", type=float, default=defaults.reprob, help="random erasing probability")
    add("--remode", default=defaults.remode, choices=ERASE_MODES, help="random erasing fill")
    add("--recount", type=int, default=defaults.recount, help="random erasing boxes, at most")
    add("--mixup", type=float, default=defaults.mixup, help="MixUp Beta alpha (0: off)")
    add("--cutmix", type=float, default=defaults.cutmix, help="CutMix Beta alpha (0: off)")
    add("--mixup-prob", type=float, default=defaults.mixup_prob, help="probability a batch is mixed")
    add(
        "--mixup-switch-prob",
        type=float,
        default=defaults.mixup_switch_prob,
        help="probability of CutMix when both are on",
    )
    add("--mixup-mode", default=defaults.mixup_mode, choices=MIXUP_MODES, help="one lambda per batch or per image")
    add("--smoothing", type=float, default=defaults.smoothing, help="label smoothing")
    add(
        "--train-interpolation",
        default=defaults.train_interpolation,
        choices=INTERPOLATIONS,
        help="random-resized-crop interpolation",
    )
    add(
        "--drop-path",
        type=float,
        default=defaults.drop_path,
        help="drop-path rate of the last block (0 in the first, linear in between)",
    )

    group = parser.add_argument_group("Miscellaneous parameters")
    add = group.add_argument
    add("--seed", type=int, default=defaults.seed, help="random seed")
    add("-j", "--workers", type=int, default=defaults.workers, help="tf.data parallel calls")
    add("--amp", "--native-amp", dest="amp", action="store_true", help="mixed_float16 (default: float32)")
    add("--output", default=defaults.output, help="folder for the checkpoint, history and curves")
    add(
        "--restart",
        action="store_true",
        help="train from the start in an --output folder that holds a finished or interrupted run "
        "(default: resume an interrupted run, stop at a finished one)",
    )
    parser.set_defaults(func=command)
    return parser


def command(args):
    """Runs ``keras-sequencer train``; errors are one line (see :mod:`keras_sequencer.cli`)."""
    from keras_sequencer import training

    if args.initial_checkpoint:
        require_file(args.initial_checkpoint, "--initial-checkpoint")
    try:
        training.run(training.config_from_args(args), args.data, args.dataset)
    except training.NonFiniteLossError as error:
        raise CLIError(str(error)) from None
    return 0
