"""``keras-sequencer validate DATA_DIR``: top-1/top-5 accuracy, as timm's ``validate.py``.

The folder, ``--model``, ``--weights`` and ``--input-size`` are checked before
the model is built. Files that cannot be decoded are left out of the
accuracy, each named on one line on stderr (and in the results file); the
exit status is then 1.
"""

import json

from keras_sequencer.cli.common import (
    CLIError,
    add_model_arguments,
    check_model,
    check_weights,
    report,
    require_directory,
    require_module,
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
        help="input size, channels first as in timm (default: 3 and the model's input size)",
    )
    parser.add_argument("--crop-pct", type=float, default=0.875, help="default: %(default)s")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default: 1000)")
    parser.add_argument("--amp", action="store_true", help="run with the mixed_float16 policy")
    parser.add_argument("--results-file", default=None, metavar="PATH", help="write the results as JSON here")
    parser.set_defaults(func=run)


def run(args):
    """Checks the inputs, builds the model, evaluates; returns the exit code."""
    import keras

    from keras_sequencer.registry import create_model
    from keras_sequencer.validation import image_folder, validate

    require_module("PIL", "pillow", "images", COMMAND)
    variant = check_model(args.model, args.weights)
    if args.input_size is None:
        args.input_size = [3, variant.input_size, variant.input_size]
    channels, height, width = args.input_size
    if channels != 3:
        raise CLIError(f"--input-size must have 3 channels (RGB); got {channels}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1; got {args.batch_size}")
    if not 0 < args.crop_pct <= 1:
        raise CLIError(f"--crop-pct must be in (0, 1]; got {args.crop_pct}")
    require_directory(args.data_dir, "DATA_DIR")
    weights = check_weights(args.weights)
    samples, _ = image_folder(args.data_dir)

    previous_policy = keras.config.dtype_policy()
    if args.amp:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model = create_model(
            args.model,
            weights=weights,
            classes=args.num_classes,
            classifier_activation="softmax",
            input_shape=(height, width, 3),
        )
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
        model=args.model,
        weights=str(args.weights),
        **results,
        param_count=round(model.count_params() / 1e6, 2),
        img_size=height,
        input_size=[channels, height, width],
        crop_pct=args.crop_pct,
        interpolation="bicubic",
        amp=args.amp,
        backend=keras.backend.backend(),
    )
    print(
        f"{args.model}: top-1 {results['top1']:.3f}  top-5 {results['top5']:.3f}  "
        f"({results['images']} images, {results['images_per_sec']:.1f} images/s)"
    )
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump(results, f, indent=2)
    if results["unreadable"]:
        report(COMMAND, f"{len(results['unreadable'])} of {len(samples)} images could not be read")
        return 1
    return 0
