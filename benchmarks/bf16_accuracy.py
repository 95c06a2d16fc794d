"""How far ``mixed_bfloat16`` is from float32 on a trained model.

Trains the CIFAR-scale model (``sequencer2d_cifar_small``, 32x32) briefly on
scikit-learn's digits in float32, then evaluates the validation split with the
same weights under float32 and under ``mixed_bfloat16``, for each
implementation given, and prints per implementation: the largest and the mean
absolute logit difference, the largest logit magnitude, the top-1 agreement
between the two precisions and each precision's accuracy.

    KERAS_BACKEND=jax python benchmarks/bf16_accuracy.py --epochs 3
    KERAS_BACKEND=torch python benchmarks/bf16_accuracy.py --model tiny --epochs 1 --limit 64

Prints one JSON line (also written to ``--output`` when given).
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402

from keras_sequencer import create_model  # noqa: E402
from keras_sequencer.datasets import load_digits  # noqa: E402
from keras_sequencer.models import Sequencer2D  # noqa: E402

# a small stand-in for quick runs (--model tiny)
TINY = dict(
    layers=(1, 1, 1, 1),
    patch_sizes=(4, 2, 1, 1),
    embed_dims=(16, 24, 24, 24),
    hidden_sizes=(4, 6, 6, 6),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)


def build(model_name, implementation):
    kwargs = dict(input_shape=(32, 32, 3), classes=10, classifier_activation=None, implementation=implementation)
    if model_name == "tiny":
        return Sequencer2D(**TINY, **kwargs)
    return create_model(model_name, **kwargs)


def compare(logits32, logits16, labels):
    """Error and agreement of ``logits16`` against ``logits32`` ``(N, classes)``."""
    diff = np.abs(logits16.astype("float64") - logits32.astype("float64"))
    top32, top16 = logits32.argmax(-1), logits16.argmax(-1)
    return {
        "max_abs_logit_error": float(diff.max()),
        "mean_abs_logit_error": float(diff.mean()),
        "max_abs_logit": float(np.abs(logits32).max()),
        "top1_agreement": float((top32 == top16).mean()),
        "accuracy_float32": float((top32 == labels).mean()),
        "accuracy_bfloat16": float((top16 == labels).mean()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_cifar_small", help="a registry name or 'tiny'")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="use only this many training/validation images")
    parser.add_argument("--implementations", default="auto,keras")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    (x, y), (x_val, y_val) = load_digits(image_size=32)
    if args.limit:
        x, y, x_val, y_val = x[: args.limit], y[: args.limit], x_val[: args.limit], y_val[: args.limit]
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    trained = build(args.model, "auto")
    trained.compile(
        optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    trained.fit(x, y, batch_size=args.batch, epochs=args.epochs, verbose=0)
    weights = trained.get_weights()
    report = {
        "backend": keras.backend.backend(),
        "model": args.model,
        "epochs": args.epochs,
        "validation_images": int(len(x_val)),
        "results": {},
    }
    for implementation in args.implementations.split(","):
        logits = {}
        for policy in ("float32", "mixed_bfloat16"):
            keras.config.set_dtype_policy(policy)
            model = build(args.model, implementation)
            model.set_weights(weights)
            logits[policy] = np.asarray(model.predict(x_val, batch_size=args.batch, verbose=0), "float32")
            resolved = sorted(set(model.implementations.values()))
        keras.config.set_dtype_policy("float32")
        result = compare(logits["float32"], logits["mixed_bfloat16"], y_val)
        report["results"][implementation] = dict(result, runs=resolved)
    line = json.dumps(report)
    print(line)
    if args.output:
        with open(args.output, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
