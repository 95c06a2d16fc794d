"""ImageNet-style evaluation: ``keras-sequencer validate DATA_DIR`` (timm's ``validate.py``).

Reads ``DATA_DIR/val/<class>/*`` (or ``DATA_DIR/<class>/*``). Class folders
named by ImageNet-1k WordNet ids (``n01440764``...) get their ImageNet class
index; any other names are indexed in sorted order, as torchvision's
``ImageFolder``. Images go through timm's eval transform
(:func:`keras_sequencer.preprocessing.load_image` + ``preprocess_input``).
"""

import json
import os
import time

import numpy as np

from keras_sequencer.imagenet import add_model_arguments, build_model, imagenet_classes
from keras_sequencer.preprocessing import IMAGE_EXTENSIONS, load_image, preprocess_input


def image_folder(data_dir):
    """Lists ``(path, label)`` of an ImageNet-style folder, and the class names.

    Returns:
        ``(samples, class_names)``: samples sorted by path; ``class_names[label]``.
    """
    root = os.path.join(data_dir, "val") if os.path.isdir(os.path.join(data_dir, "val")) else data_dir
    if not os.path.isdir(root):
        raise ValueError(f"{data_dir!r} is not a directory.")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        raise ValueError(f"{root!r} has no class folders (expected {root}/<wnid>/*.JPEG).")
    wnids = [wnid for wnid, _ in imagenet_classes()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if all(folder in index for folder in folders):
        labels, class_names = {f: index[f] for f in folders}, wnids
    else:
        labels, class_names = {f: i for i, f in enumerate(folders)}, folders
    samples = []
    for folder in folders:
        for dirpath, _, files in sorted(os.walk(os.path.join(root, folder))):
            samples += [
                (os.path.join(dirpath, f), labels[folder])
                for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
    if not samples:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}.")
    return samples, class_names


def validate(model, data_dir, batch_size=16, image_size=224, crop_pct=0.875):
    """Top-1 / top-5 accuracy (%) of ``model`` (ImageNet-1k scores) on ``data_dir``.

    Returns:
        dict with ``top1``, ``top5``, ``top1_err``, ``top5_err``, ``images``,
        ``images_per_sec`` (loading + inference) and ``seconds``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    samples, class_names = image_folder(data_dir)
    classes = model.outputs[0].shape[-1]
    if max(label for _, label in samples) >= classes:
        raise ValueError(
            f"{data_dir!r} has classes up to index {max(l for _, l in samples)} "
            f"but the model has {classes} outputs."
        )
    top1 = top5 = 0
    start = time.perf_counter()
    for begin in range(0, len(samples), batch_size):
        batch = samples[begin : begin + batch_size]
        images = np.stack([load_image(path, image_size, crop_pct) for path, _ in batch])
        if begin and len(batch) < batch_size:  # pad the last batch: no new trace/compile
            images = np.concatenate([images, np.zeros((batch_size - len(batch), *images.shape[1:]), "float32")])
        scores = np.asarray(model.predict_on_batch(preprocess_input(images)), dtype="float32")[: len(batch)]
        labels = np.array([label for _, label in batch])
        ranked = np.argsort(-scores, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(ranked[:, 0] == labels))
        top5 += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
    seconds = time.perf_counter() - start
    n = len(samples)
    return dict(
        top1=100.0 * top1 / n,
        top1_err=100.0 - 100.0 * top1 / n,
        top5=100.0 * top5 / n,
        top5_err=100.0 - 100.0 * top5 / n,
        images=n,
        images_per_sec=n / seconds,
        seconds=seconds,
    )


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "validate",
        help="top-1/top-5 accuracy on an ImageNet-style folder (as timm's validate.py)",
        description="Evaluate on DATA_DIR/val/<wnid>/*.JPEG (or class folders in DATA_DIR) "
        "with timm's eval preprocessing; prints top-1/top-5 and images/s, writes JSON.",
    )
    parser.add_argument("data_dir", help="ImageNet-style folder")
    add_model_arguments(parser)
    parser.add_argument("-b", "--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--input-size", type=int, nargs=3, default=(3, 224, 224), metavar=("C", "H", "W"),
        help="input size, channels first as in timm (default: 3 224 224)",
    )
    parser.add_argument("--crop-pct", type=float, default=0.875, help="default: %(default)s")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default: 1000)")
    parser.add_argument("--amp", action="store_true", help="run with the mixed_float16 policy")
    parser.add_argument("--results-file", default=None, help="write the results as JSON here")
    parser.set_defaults(func=_validate_command)


def _validate_command(args):
    import keras

    channels, height, width = args.input_size
    if channels != 3:
        raise ValueError(f"--input-size must have 3 channels (RGB); got {channels}.")
    previous_policy = keras.config.dtype_policy()
    if args.amp:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(args.model, args.weights, args.num_classes, (height, width))
        results = validate(model, args.data_dir, args.batch_size, (height, width), args.crop_pct)
    finally:
        keras.config.set_dtype_policy(previous_policy)
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
    return 0
