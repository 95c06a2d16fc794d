"""int8 quantization of a Sequencer model: accuracy, logit error, file size
and CPU latency before and after ``model.quantize("int8")``.

A registered CIFAR-scale model (default ``sequencer2d_cifar_small``, 32x32)
is trained offline on scikit-learn's digits
(:func:`keras_sequencer.datasets.load_digits`, upsampled to 32x32), then
measured as float32 and again after quantizing it in place; the quantized
model is saved and reloaded and must give the same logits. Runs on the
Keras backend of ``KERAS_BACKEND`` and prints a markdown table (and
``--json`` writes the numbers):

    KERAS_BACKEND=torch python benchmarks/quantization.py --epochs 5
    KERAS_BACKEND=jax python benchmarks/quantization.py --epochs 1 --limit 256 --repeats 3  # smoke run

Latency is the median over ``--repeats`` timed ``predict_on_batch`` calls
(after one warm-up) at each ``--batch-sizes``; file sizes are of the
``.keras`` and ``.weights.h5`` files of the uncompiled model (no optimizer
state).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

if __name__ == "__main__":  # allow running from a source checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_cifar_small")
    parser.add_argument("--implementation", default="auto", choices=("auto", "keras", "fused"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many training / validation images (smoke runs)"
    )
    parser.add_argument("--batch-sizes", default="1,8", help="latency batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    return parser.parse_args(argv)


def train(args):
    """The model trained on digits, and the validation split ``(x, y)``."""
    import keras

    import keras_sequencer
    from keras_sequencer.datasets import load_digits

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_val, y_val) = load_digits(image_size=32, seed=args.seed)
    if args.limit:
        x_train, y_train, x_val, y_val = (a[: args.limit] for a in (x_train, y_train, x_val, y_val))
    model = keras_sequencer.create_model(
        args.model, classes=10, classifier_activation=None, implementation=args.implementation
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    # What is deployed: the trained weights in an uncompiled model (a compiled
    # one would also save its optimizer's state).
    deployed = keras_sequencer.create_model(
        args.model, classes=10, classifier_activation=None, implementation=args.implementation
    )
    deployed.set_weights(model.get_weights())
    return deployed, x_val, y_val


def file_sizes(model, directory, stem):
    """``(bytes of stem.keras, bytes of stem.weights.h5)``; the ``.keras`` path."""
    keras_path = os.path.join(directory, f"{stem}.keras")
    weights_path = os.path.join(directory, f"{stem}.weights.h5")
    model.save(keras_path)
    model.save_weights(weights_path)
    return os.path.getsize(keras_path), os.path.getsize(weights_path), keras_path


def latency_ms(model, images, batch_sizes, repeats):
    """Median milliseconds of one ``predict_on_batch`` call per batch size."""
    result = {}
    for batch in batch_sizes:
        x = images[:batch]
        model.predict_on_batch(x)  # compile / warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        result[batch] = 1000.0 * float(np.median(times))
    return result


def measure(model, x_val, y_val, args, directory, stem):
    logits = np.asarray(model.predict(x_val, batch_size=64, verbose=0))
    keras_bytes, weights_bytes, keras_path = file_sizes(model, directory, stem)
    return {
        "logits": logits,
        "accuracy": float((logits.argmax(-1) == y_val).mean()),
        "keras_bytes": keras_bytes,
        "weights_bytes": weights_bytes,
        "latency_ms": latency_ms(model, x_val, args.batch_sizes, args.repeats),
        "path": keras_path,
    }


def format_table(before, after, batch_sizes):
    """The markdown table: one row per quantity, float32 / int8 / change."""
    mb = 1024 * 1024
    rows = [
        (
            "top-1 accuracy (digits val)",
            f"{before['accuracy']:.4f}",
            f"{after['accuracy']:.4f}",
            f"{after['accuracy'] - before['accuracy']:+.4f}",
        ),
        (
            ".keras size (MiB)",
            f"{before['keras_bytes'] / mb:.2f}",
            f"{after['keras_bytes'] / mb:.2f}",
            f"{after['keras_bytes'] / before['keras_bytes']:.2f}x",
        ),
        (
            ".weights.h5 size (MiB)",
            f"{before['weights_bytes'] / mb:.2f}",
            f"{after['weights_bytes'] / mb:.2f}",
            f"{after['weights_bytes'] / before['weights_bytes']:.2f}x",
        ),
    ]
    for batch in batch_sizes:
        b, a = before["latency_ms"][batch], after["latency_ms"][batch]
        rows.append((f"CPU latency, batch {batch} (ms)", f"{b:.2f}", f"{a:.2f}", f"{a / b:.2f}x"))
    lines = ["| | float32 | int8 | change |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    import keras

    model, x_val, y_val = train(args)
    with tempfile.TemporaryDirectory() as directory:
        before = measure(model, x_val, y_val, args, directory, "float32")
        with warnings.catch_warnings():  # one warning per layer Keras leaves float
            warnings.simplefilter("ignore")
            model.quantize("int8")
        after = measure(model, x_val, y_val, args, directory, "int8")
        reloaded = np.asarray(keras.saving.load_model(after["path"]).predict(x_val, batch_size=64, verbose=0))
    error = np.abs(after["logits"] - before["logits"])
    summary = {
        "model": args.model,
        "backend": keras.backend.backend(),
        "implementation": args.implementation,
        "epochs": args.epochs,
        "validation_images": int(len(y_val)),
        "max_logit_error": float(error.max()),
        "mean_logit_error": float(error.mean()),
        "logit_scale": float(np.abs(before["logits"]).max()),
        "top1_agreement": float((after["logits"].argmax(-1) == before["logits"].argmax(-1)).mean()),
        "reload_max_difference": float(np.abs(reloaded - after["logits"]).max()),
    }
    for key in ("accuracy", "keras_bytes", "weights_bytes", "latency_ms"):
        summary[f"{key}_float32"], summary[f"{key}_int8"] = before[key], after[key]
    print(
        f"\n{args.model} on {summary['backend']} ({args.implementation}), {args.epochs} epochs on digits,"
        f" {len(y_val)} validation images"
    )
    print(format_table(before, after, args.batch_sizes))
    print(
        f"\nlogit error |int8 - float32|: max {summary['max_logit_error']:.4f}, mean "
        f"{summary['mean_logit_error']:.4f} (largest |logit| {summary['logit_scale']:.2f}); top-1 "
        f"agreement {summary['top1_agreement']:.4f}; reloaded .keras max difference "
        f"{summary['reload_max_difference']:.1e}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return summary


if __name__ == "__main__":
    main()
