"""``keras-sequencer predict IMAGE...``: the top classes of image files.

The model is a registered name with ``--weights`` (ImageNet, or a weights file
of any number of classes: ``--num-classes``, read off the file by default), or
a saved ``.keras`` model (``--weights`` or ``--model``; what ``train``
writes), which brings its input size and class names. The labels printed are
the model's class names, ImageNet's for a 1000-class model without names, or
the class indices; a ``--num-classes`` the weights do not have is an error.

Images go through timm's eval transform (:func:`keras_sequencer.load_image`:
bicubic resize, center crop; EXIF orientation ignored as timm does) at the
model's input size. Every readable file is classified; each file that cannot
be read is named on one line on stderr with the reason, and the exit status
is 1 at the end if any failed. Missing files, a bad ``--model`` or
``--weights`` are reported before the model is built.
"""

import os

from keras_sequencer import optional
from keras_sequencer.cli.common import (
    CLIError,
    add_model_arguments,
    as_probabilities,
    check_model,
    check_weights,
    checkpoint_classes,
    model_input_size,
    report,
    saved_model_path,
)
from keras_sequencer.preprocessing import image_error_reason

COMMAND = "predict"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="classify images with an ImageNet model or your trained one (top labels and probabilities)",
        description="Classify images with timm's evaluation preprocessing "
        "(bicubic resize to 256, center crop 224 for the 224 models) and print the top classes: "
        "ImageNet's, or the class names of a model trained with `keras-sequencer train` "
        "(--weights runs/x/best.keras). Unreadable files are named on stderr; the others are still classified.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_arguments(parser)
    parser.add_argument("--top", type=int, default=5, help="classes to print per image (default: 5)")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs of a --weights file (default: read off the file; 1000 for imagenet)",
    )
    parser.add_argument("--crop-pct", type=float, default=0.875, help="center crop fraction (default: 0.875)")
    parser.add_argument("-b", "--batch-size", type=int, default=16, help="images per model call (default: 16)")
    parser.set_defaults(func=run)


def unreadable_reason(path, debug=False):
    """Why ``path`` cannot be opened as an image (a short phrase), or ``None``.

    Reads only the file header; a file whose pixel data is broken (truncated)
    passes and fails later, in :func:`keras_sequencer.load_image`. With
    ``debug`` the decoder's exception is raised instead.
    """
    from PIL import Image

    if not os.path.exists(path):
        return "no such file"
    if os.path.isdir(path):
        return "is a directory, expected an image file"
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (the header is parsed on open)
    except Exception as error:  # noqa: BLE001 (any decoder failure is a bad file)
        if debug:
            raise
        return image_error_reason(error)
    return None


def run(args):
    """Checks the inputs, then classifies the readable images; returns the exit code."""
    import numpy as np

    optional.require_installed(("PIL",))
    if args.top < 1:
        raise CLIError(f"--top must be at least 1; got {args.top}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1; got {args.batch_size}")
    if not 0 < args.crop_pct <= 1:
        raise CLIError(f"--crop-pct must be in (0, 1]; got {args.crop_pct}")
    saved = saved_model_path(args)
    if saved is None:
        variant = check_model(args.model, args.weights)
        weights = check_weights(args.weights)
        classes = checkpoint_classes(weights, args.num_classes)
    elif args.num_classes is not None:
        raise CLIError(f"--num-classes applies to a weights file; {saved} keeps its classifier")

    failed = 0

    def fail(path, reason):
        nonlocal failed
        failed += 1
        report(COMMAND, f"{path}: {reason}")

    readable = []
    for path in args.images:
        reason = unreadable_reason(path, debug=args.debug)
        if reason is None:
            readable.append(path)
        else:
            fail(path, reason)
    if readable:
        from keras_sequencer.imagenet import imagenet_classes
        from keras_sequencer.preprocessing import load_image, preprocess_input

        if saved is None:
            from keras_sequencer.registry import create_model

            model = create_model(args.model, weights=weights, classes=classes, classifier_activation="softmax")
            size = model_input_size(model, variant.input_size)
        else:
            from keras_sequencer.weights import load_model

            model = load_model(saved)
            size = model_input_size(model, 224)
        labels = class_labels(model)
        for begin in range(0, len(readable), args.batch_size):
            paths, images = [], []
            for path in readable[begin : begin + args.batch_size]:
                try:
                    images.append(load_image(path, size, args.crop_pct))
                except Exception as error:  # noqa: BLE001 (named and skipped)
                    if args.debug:
                        raise
                    fail(path, image_error_reason(error))
                else:
                    paths.append(path)
            if not paths:
                continue
            probs = as_probabilities(model, model.predict(preprocess_input(np.stack(images)), verbose=0))
            for path, row in zip(paths, probs):
                print(path)
                for index in np.argsort(-row, kind="stable")[: args.top]:
                    label = labels[index] if labels is not None else str(index)
                    if labels is None and len(row) == 1000:
                        label = "  ".join(imagenet_classes()[index])
                    print(f"  {row[index]:8.4f}  {label}")
    if failed:
        report(COMMAND, f"{failed} of {len(args.images)} images could not be read")
        return 1
    return 0


def class_labels(model):
    """The labels of ``model``'s outputs: its ``class_names``, else ``None`` (ImageNet's
    ``wnid  names`` for 1000 outputs, the index otherwise)."""
    names = getattr(model, "class_names", None)
    outputs = model.outputs[0].shape[-1]
    if names is not None and len(names) == outputs:
        return [str(name) for name in names]
    return None
