"""``keras-sequencer export MODEL``: writes a model as ONNX, a TensorFlow
SavedModel or LiteRT, then runs the artefact with its own runtime
(onnxruntime, ``tf.saved_model.load``, the LiteRT interpreter) on a sample
batch and prints where it wrote, its size and the largest difference from
the Keras model's output.

``MODEL`` is a registered name (built with ``--weights``) or a ``.keras``
file. The flags, the files and the packages the format needs are checked
before a model is built; the artefact takes any batch size at a fixed
spatial size (``--input-size``, else the model's own, else the registered
input size), or at any size (``--input-size any``; ONNX and SavedModel).
See :mod:`keras_sequencer.export`.
"""

import os

from keras_sequencer import optional
from keras_sequencer.cli.common import (
    CLIError,
    check_model,
    check_weights,
    require_file,
)

COMMAND = "export"
FORMATS = ("onnx", "tf_saved_model", "litert")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="export a model to ONNX, a TensorFlow SavedModel or LiteRT and check it",
        description="Export a registered model (with --weights) or a .keras file to ONNX, "
        "a TensorFlow SavedModel or LiteRT, from any Keras backend. The artefact takes any "
        "batch size at a fixed image size (or any size: --input-size any); it is run once "
        "by its own runtime and compared with the Keras model.",
    )
    parser.add_argument("model", metavar="MODEL", help="a registered model name or a .keras file")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="imagenet|PATH",
        help="for a model name: 'imagenet' (the default where published), a "
        ".weights.h5/.safetensors/.pth file, or a saved .keras model (what train writes; "
        "the same as giving it as MODEL); for a .keras MODEL: a .weights.h5 to load into it",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="artefact format")
    parser.add_argument(
        "--output",
        required=True,
        metavar="PATH",
        help="the .onnx / .tflite file or the SavedModel directory to write",
    )
    parser.add_argument(
        "--include-preprocessing",
        action="store_true",
        help="for a model name: the artefact takes raw [0, 255] RGB images and normalises them itself",
    )
    parser.add_argument(
        "--input-size",
        nargs="+",
        metavar="N",
        help="image size: N (square), HEIGHT WIDTH, or 'any' for a free size (onnx, "
        "tf_saved_model) (default: the model's own size, else the registered input size)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="for a model name: classifier outputs of the --weights checkpoint (default: the name's own)",
    )
    parser.set_defaults(func=run)


def check_arguments(args):
    """Every check that needs no model: returns ``(variant or None, weights, size)``."""
    from keras_sequencer.export import EXPORT_PACKAGES, RUNTIME_PACKAGES

    needed = dict.fromkeys((*EXPORT_PACKAGES[args.format], RUNTIME_PACKAGES[args.format]))
    optional.require_installed(needed, f"--format {args.format}", extra="export")  # all at once: one extra
    size = None
    if args.input_size == ["any"]:
        if args.format == "litert":
            raise CLIError("--input-size any: litert artefacts take a fixed size; give N or HEIGHT WIDTH")
        size = (None, None)
    elif args.input_size is not None:
        given = " ".join(args.input_size)
        if len(args.input_size) not in (1, 2) or not all(v.isdigit() for v in args.input_size):
            raise CLIError(f"--input-size takes N or HEIGHT WIDTH (or 'any'); got {given}")
        if min(int(v) for v in args.input_size) < 1:
            raise CLIError(f"--input-size must be positive; got {given}")
        size = tuple(int(v) for v in args.input_size) * (2 if len(args.input_size) == 1 else 1)
    if args.classes is not None and args.classes < 1:
        raise CLIError(f"--classes must be at least 1; got {args.classes}")
    output = os.path.abspath(args.output)
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise CLIError(f"--output {args.output}: folder {parent} does not exist")
    if args.format != "tf_saved_model" and os.path.isdir(output):
        raise CLIError(f"--output {args.output}: is a directory, expected a file path")
    if args.weights is not None and args.weights.endswith(".keras"):  # a saved model as --weights
        if os.path.exists(args.model) and not args.model.endswith(".keras"):
            raise CLIError(f"{args.model}: expected a registered model name or a .keras file")
        if args.model.endswith(".keras"):
            raise CLIError(f"give one saved model: MODEL {args.model} or --weights {args.weights}")
        args.model, args.weights = args.weights, None
    if args.model.endswith(".keras"):
        require_file(args.model)
        if args.include_preprocessing:
            raise CLIError(
                "--include-preprocessing applies to a model name; a .keras file keeps "
                "the preprocessing it was built with"
            )
        if args.classes is not None:
            raise CLIError("--classes applies to a model name; a .keras file keeps its classifier")
        if args.weights is not None:
            if not args.weights.endswith(".weights.h5"):
                raise CLIError(f"--weights {args.weights}: a .keras model loads .weights.h5 files")
            require_file(args.weights, "--weights")
        return None, args.weights, size
    if os.path.exists(args.model):
        raise CLIError(f"{args.model}: expected a registered model name or a .keras file")
    variant = check_model(args.model, args.weights)
    weights = args.weights
    if weights is None:
        if not variant.pretrained:
            raise CLIError(f"--model {args.model} has no published ImageNet weights; give --weights PATH")
        weights = "imagenet"
    return variant, check_weights(weights), size


def build_model(args, variant, weights):
    """The Keras model to export (the name built with its weights, or the
    ``.keras`` file loaded)."""
    if variant is None:
        from keras_sequencer.weights import load_model

        model = load_model(args.model)
        if weights is not None:
            model.load_weights(weights)
        return model
    from keras_sequencer.registry import create_model

    options = {} if args.classes is None else {"classes": args.classes}
    return create_model(args.model, weights=weights, include_preprocessing=args.include_preprocessing, **options)


def human_size(size):
    """Bytes as ``"12.3 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000.0
    return f"{size:.1f} GB"


def run(args):
    """Checks, builds, exports, runs the artefact and prints the report."""
    variant, weights, size = check_arguments(args)
    import keras

    from keras_sequencer.export import (
        artefact_size,
        describe_shape,
        export_input_shape,
        export_model,
        max_difference,
        sample_images,
    )

    model = build_model(args, variant, weights)
    shape = export_input_shape(model, size)
    export_model(model, args.output, format=args.format, input_shape=size)
    preprocessing = any(type(layer).__name__ == "Rescaling" for layer in model.layers)
    # A free size is checked at the model's registered (or own) size.
    sample_shape = export_input_shape(model) if None in shape else shape
    images = sample_images(sample_shape, batch=2, include_preprocessing=preprocessing)
    difference = max_difference(model, args.output, args.format, images)
    print(f"wrote {args.format} to {args.output} ({human_size(artefact_size(args.output))})")
    free = [str(sample_shape[axis]) for axis, size in enumerate(shape) if size is None]
    checked = f" at {'x'.join(free)}" if free else ""
    print(
        f"input (batch, {describe_shape(shape)}) float32; max abs difference from "
        f"Keras ({keras.backend.backend()}) on a batch of 2{checked}: {difference:.3g}"
    )
    return 0
