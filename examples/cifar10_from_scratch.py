"""Train the CIFAR-scale models from scratch on 4 classes, as the CIFAR-10
re-implementation of Sequencer does: Sequencer2D Small, Sequencer2D Medium and
the vanilla 1-D BiLSTM baseline (``keras_sequencer.list_models()`` names
``sequencer2d_cifar_small``, ``sequencer2d_cifar_medium``, ``vanilla_bilstm_cifar``).

Prints a table of average validation loss and accuracy per model, writes it to
``results.json`` / ``results.md`` and saves ``loss.png`` and ``accuracy.png`` curves.

    python examples/cifar10_from_scratch.py --epochs 10                # CIFAR-10 (tfds)
    python examples/cifar10_from_scratch.py --dataset digits --epochs 5  # offline

``--dataset digits`` uses scikit-learn's bundled 8x8 digits (upsampled to 32x32,
see ``keras_sequencer.datasets.load_digits``) and needs no download. CIFAR-10
comes from TensorFlow Datasets, downloaded on first use into ``--data-dir``;
offline, prepare it elsewhere (``tfds build cifar10 --data_dir DIR``) and pass
``--data-dir DIR``. Needs ``pip install "keras-sequencer[train]"``; without
matplotlib the curves are skipped (one warning).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

if __name__ == "__main__":  # allow running from a source checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_sequencer import optional  # noqa: E402
from keras_sequencer.training import data as data_lib  # noqa: E402

PROG = os.path.basename(__file__)

MODELS = {
    "small": "sequencer2d_cifar_small",
    "medium": "sequencer2d_cifar_medium",
    "vanilla": "vanilla_bilstm_cifar",
}
TITLES = {
    "small": "Sequencer2D Small",
    "medium": "Sequencer2D Medium",
    "vanilla": "Vanilla BiLSTM",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument(
        "--classes", default="0,1,2,3", help="the class ids kept (CIFAR-10: 0 airplane, 1 automobile, 2 bird, 3 cat)"
    )
    parser.add_argument(
        "--models", default="small,medium,vanilla", help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many training / validation images (quick runs)"
    )
    parser.add_argument("--data-dir", default=None, help="TensorFlow Datasets data dir (holds or receives cifar10/)")
    parser.add_argument("--output-dir", default="cifar10_from_scratch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.classes = [int(c) for c in args.classes.split(",")]
    args.models = [m.strip() for m in args.models.split(",")]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(MODELS)}")
    if len(set(args.classes)) != len(args.classes) or not all(0 <= c <= 9 for c in args.classes):
        parser.error(f"--classes must be distinct ids in 0..9; got {args.classes}")
    return args


def _keep(images, labels, classes, limit):
    """Keeps ``classes`` (relabelled 0..len-1), at most ``limit`` examples."""
    mask = np.isin(labels, classes)
    images, labels = images[mask], labels[mask]
    labels = np.searchsorted(np.array(sorted(classes)), labels).astype("int32")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images.astype("float32"), labels


def _to_numpy(examples):
    images, labels = [], []
    for image, label in examples:
        images.append(image)
        labels.append(label)
    return np.stack(images) / 255.0, np.asarray(labels)


def load_data(args):
    """``(x_train, y_train), (x_val, y_val)``: 32x32x3 float images in [0, 1]."""
    if args.dataset == "digits":
        from keras_sequencer.datasets import load_digits

        (x_train, y_train), (x_val, y_val) = load_digits(image_size=32, channels=3, seed=args.seed)
    else:
        import tensorflow_datasets as tfds

        builder = data_lib.tfds_builder("cifar10", args.data_dir)  # one line if offline
        splits = [builder.as_dataset(split=s, as_supervised=True) for s in ("train", "test")]
        (x_train, y_train), (x_val, y_val) = [_to_numpy(split) for split in tfds.as_numpy(splits)]
    return (_keep(x_train, y_train, args.classes, args.limit), _keep(x_val, y_val, args.classes, args.limit))


def train(key, args, data):
    import keras

    import keras_sequencer

    (x_train, y_train), (x_val, y_val) = data
    keras.utils.set_random_seed(args.seed)
    model = keras_sequencer.create_model(MODELS[key], classes=len(args.classes), input_shape=x_train.shape[1:])
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.time()
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=args.batch_size, verbose=2
    )
    loss, accuracy = model.evaluate(x_val, y_val, batch_size=args.batch_size, verbose=0)
    return dict(
        model=MODELS[key],
        title=TITLES[key],
        params=model.count_params(),
        loss=float(loss),
        accuracy=float(accuracy),
        seconds=round(time.time() - start, 1),
        history={k: [float(v) for v in values] for k, values in history.history.items()},
    )


def save_curves(results, output_dir):
    """``loss.png`` and ``accuracy.png``: train (solid) and validation (dashed)
    per model, every epoch a marker (so one epoch shows as points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric, label in (("loss", "loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for result in results:
            history = result["history"]
            epochs = np.arange(1, len(history[metric]) + 1)
            (line,) = ax.plot(epochs, history[metric], marker="o", label=f"{result['title']} (train)")
            ax.plot(
                epochs,
                history[f"val_{metric}"],
                "--",
                marker="s",
                color=line.get_color(),
                label=f"{result['title']} (validation)",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = os.path.join(output_dir, f"{metric}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def format_table(results):
    rows = ["| Model | Params | Average loss | Accuracy |", "| --- | ---: | ---: | ---: |"]
    rows += [f"| {r['title']} | {r['params']:,} | {r['loss']:.4f} | {100 * r['accuracy']:.2f}% |" for r in results]
    return "\n".join(rows)


def check_packages(args):
    """Before any work: the packages this run needs (one line naming the extra if
    one is missing); whether the curves can be drawn (else one warning)."""
    if args.dataset == "digits":
        optional.require("sklearn", "--dataset digits (scikit-learn's bundled digits)")
    else:
        optional.require("tensorflow_datasets", "--dataset cifar10 (TensorFlow Datasets)")
    return optional.available("matplotlib", skipped=f"the curves {os.path.join(args.output_dir, '*.png')}")


def main(argv=None):
    args = parse_args(argv)
    plots = check_packages(args)
    print(f"{PROG}: writing results to {os.path.abspath(args.output_dir)}")
    data = load_data(args)
    (x_train, y_train), (x_val, _) = data
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"No images of classes {args.classes} in the {args.dataset} splits.")
    print(
        f"{args.dataset}: classes {args.classes}, {len(x_train)} train / {len(x_val)} "
        f"validation images of {x_train.shape[1:]}"
    )
    results = [train(key, args, data) for key in args.models]
    os.makedirs(args.output_dir, exist_ok=True)
    table = format_table(results)
    print(table)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(dict(args={k: v for k, v in vars(args).items()}, results=results), f, indent=1)
    if plots:
        save_curves(results, args.output_dir)
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, ImportError, OSError) as error:  # one line: missing package, no network
        sys.exit(f"{PROG}: error: {' '.join(str(error).split())}")
