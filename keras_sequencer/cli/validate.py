"""``keras-sequencer validate DATA_DIR``: top-1/top-5 accuracy, as timm's ``validate.py``.

The model is a registered name with ``--weights``, or a saved ``.keras``
model (``--weights`` or ``--model``; what ``train`` writes), whose class names
then give the folders' labels. The folder, ``--model``, ``--weights`` and
``--input-size`` are checked before the model is built. Files that cannot be decoded are left out of the
accuracy, each named on one line on stderr (and in the results file); the
exit status is then 1.
"""

import json

from keras_sequencer import optional
from keras_sequencer.cli.common import (
    CLIError,
    add_model_arguments,
    check_model,
    check_weights,
    checkpoint_classes,
    model_input_size,
    report,
    require_directory,
    saved_model_path,
)

COMMAND = "validate"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        COMMAND,
        help="top-1/top-5 accuracy on an ImageNet-style folder (as timm's validate.py)",
        description="Evaluate on DATA_DIR/val/<wnid>/*.JPEG (or class folders in DATA_DIR) "
        "with timm's eval preprocessing; prints top-1/top-5 and images/s, writes JSON.",
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="ImageNet-style folder")
    add_model_arguments(parser)
    parser.add_argument("-b", "--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="input size, channels first as in timm (default: 3 and the model's input size; a saved model's own)",
    )
    parser.add_argument("--crop-pct", type=float, default=0.875, help="default: %(default)s")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs of a --weights file (default: read off the file; 1000 for imagenet)",
    )
    parser.add_argument("--amp", action="store_true", help="run with the mixed_float16 policy")
    parser.add_argument("--results-file", default=None, metavar="PATH", help="write the results as JSON here")
    parser.set_defaults(func=run)


def run(args):
    """Checks the inputs, builds the model, evaluates; returns the exit code."""
    import keras

    from keras_sequencer.evaluation import image_folder, validate
    from keras_sequencer.registry import create_model

    optional.require_installed(("PIL",))
    saved = saved_model_path(args)
    if saved is None:
        variant = check_model(args.model, args.weights)
        if args.input_size is None:
            args.input_size = [3, variant.input_size, variant.input_size]
    elif args.num_classes is not None:
        raise CLIError(f"--num-classes applies to a weights file; {saved} keeps its classifier")
    if args.input_size is not None and args.input_size[0] != 3:
        raise CLIError(f"--input-size must have 3 channels (RGB); got {args.input_size[0]}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1; got {args.batch_size}")
    if not 0 < args.crop_pct <= 1:
        raise CLIError(f"--crop-pct must be in (0, 1]; got {args.crop_pct}")
    require_directory(args.data_dir, "DATA_DIR")
    if saved is None:
        weights = check_weights(args.weights)
        classes = checkpoint_classes(weights, args.num_classes)
    samples, folder_classes = image_folder(args.data_dir)

    previous_policy = keras.config.dtype_policy()
    if args.amp:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        if saved is None:
            model = create_model(
                args.model,
                weights=weights,
                classes=classes,
                classifier_activation="softmax",
                input_shape=tuple(args.input_size[1:]) + (3,),
            )
        else:
            from keras_sequencer.weights import load_model

            model = load_model(saved)
            if args.input_size is None:
                args.input_size = [3, *model_input_size(model, 224)]
            samples = relabel(samples, folder_classes, getattr(model, "class_names", None), args.data_dir, saved)
        _, height, width = args.input_size
        results = validate(
            model,
            args.data_dir,
            args.batch_size,
            (height, width),
            args.crop_pct,
            samples=samples,
            skip_unreadable=not args.debug,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    for bad in results["unreadable"]:
        report(COMMAND, f"{bad['path']}: {bad['error']}")
    results = dict(
        model=model.name if saved else args.model,
        weights=str(saved or args.weights),
        **results,
        param_count=round(model.count_params() / 1e6, 2),
        img_size=height,
        input_size=[3, height, width],
        crop_pct=args.crop_pct,
        interpolation="bicubic",
        amp=args.amp,
        backend=keras.backend.backend(),
    )
    print(
        f"{results['model']}: top-1 {results['top1']:.3f}  top-5 {results['top5']:.3f}  "
        f"({results['images']} images, {results['images_per_sec']:.1f} images/s)"
    )
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump(results, f, indent=2)
    if results["unreadable"]:
        report(COMMAND, f"{len(results['unreadable'])} of {len(samples)} images could not be read")
        return 1
    return 0


def relabel(samples, folder_classes, class_names, data_dir, saved):
    """``samples`` labelled by ``class_names`` (a saved model's, in its output order)
    instead of the folders' sorted order; a folder that is not one of them is a
    :class:`CLIError`. Without class names the labels stay as they are."""
    if class_names is None:
        return samples
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(folder_classes) - set(index))
    if unknown:
        raise CLIError(
            f"DATA_DIR {data_dir} has class folders {unknown} that {saved} was not trained on "
            f"(its classes: {', '.join(class_names)})"
        )
    return [(path, index[folder_classes[label]]) for path, label in samples]
