"""Fine-tune Sequencer2D-S on CIFAR-10 with the official transfer-learning recipe.

    python examples/cifar10_finetune.py                       # 200 epochs at 224 px
    python examples/cifar10_finetune.py --epochs 10 --batch-size 64 --weights none

The recipe (``keras_sequencer.training.TRANSFER_RECIPE``, the official repo's CIFAR-10
command): AdamW lr 1e-4, weight decay 1e-4, cosine schedule with 5 warmup epochs
from 1e-6 (fewer when ``--epochs`` is smaller), gradient clipping 1.0, drop path
0.1, RandAugment m9, label smoothing 0.1, mixup 0.8 / cutmix 1.0, mixed
precision. CIFAR-10 comes from TensorFlow Datasets, downloaded on first use into
``--data-dir`` (TFDS's default folder without it); offline, prepare it elsewhere
with ``tfds build cifar10 --data_dir DIR`` and pass ``--data-dir DIR``. Every
visible GPU is used (see ``keras_sequencer.training.distribute``); ``--batch-size`` is per
device. The output folder receives ``best.keras``, ``history.csv`` and
``curves.png`` (with matplotlib); run the same command again after an
interruption to resume from the last finished epoch. Needs
``pip install "keras-sequencer[train]"``.
"""

import argparse
import os
import sys

if __name__ == "__main__":  # allow running from a source checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_sequencer import training  # noqa: E402

PROG = os.path.basename(__file__)


def parse_args(argv=None):
    recipe = training.TRANSFER_RECIPE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=recipe["epochs"])
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"], help="per device")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--data-dir", default=None, help="TensorFlow Datasets data dir (holds or receives cifar10/)")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'none' (random init) or a weights path")
    parser.add_argument("--output-dir", default="output/cifar10_finetune")
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"default: the recipe's {recipe['warmup_epochs']}, at most --epochs",
    )
    parser.add_argument("--no-amp", action="store_true", help="train in float32")
    return parser.parse_args(argv)


def build_config(args):
    """The recipe with this run's settings (a recipe warmup longer than the run is
    shortened to it, with a notice)."""
    warmup_epochs = args.warmup_epochs
    if warmup_epochs is None:
        warmup_epochs = training.capped_warmup(training.TRANSFER_RECIPE["warmup_epochs"], args.epochs, prog=PROG)
    return training.TrainConfig(
        **{
            **training.TRANSFER_RECIPE,
            "epochs": args.epochs,
            "cooldown_epochs": 0,  # --epochs is the whole run
            "warmup_epochs": warmup_epochs,
            "batch_size": args.batch_size,
            "image_size": (args.image_size, args.image_size),
            "weights": None if args.weights.lower() == "none" else args.weights,
            "amp": not args.no_amp,
            "output": args.output_dir,
        }
    )


def main(argv=None):
    args = parse_args(argv)
    config = build_config(args)
    model, history = training.run(config, args.data_dir, dataset="tfds/cifar10")
    best = max(history.history["val_accuracy"])
    print(f"best validation accuracy {best:.4f}; checkpoint {args.output_dir}/best.keras")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, ImportError, OSError, training.NonFiniteLossError) as error:
        # one line: a missing package, no network, a bad flag or file
        sys.exit(f"{PROG}: error: {' '.join(str(error).split())}")
