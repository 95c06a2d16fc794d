"""Training input pipeline: the package's ``tf.data`` pipeline against timm's loader.

    python benchmarks/input_pipeline.py --num-images 640 --batch 64 --rounds 3 --threads 1,2

Both engines read the same JPEG files (``--images DIR``, an ImageFolder with
``DIR/train/<class>/`` and ``DIR/val/<class>/``; by default ``--num-images``
synthetic 500x375 JPEGs, smooth random images so their sizes are like photos'),
for each recipe:

- ``a``: random resized crop + horizontal flip;
- ``b``: ``a`` + RandAugment m9 (mstd 0.5) + random erasing 0.25 (pixel mode);
- ``c``: ``b`` + MixUp 0.8 / CutMix 1.0 on the batch.

The package side is what ``keras-sequencer train`` runs:
:func:`keras_sequencer.training.data.load` then
:func:`keras_sequencer.training.train_pipeline` (``--aa rand-m9-mstd0.5-inc1``,
the published recipe). timm's is ``create_transform(is_training=True)`` in a
torch ``DataLoader`` (+ ``timm.data.Mixup`` on each batch for ``c``) with
``rand-m9-mstd0.5`` (timm's ``inc1`` posterize fails on Pillow >= 10).

``--threads 1`` measures one core: ``tf.data`` with a private thread pool of
one thread and no intra-op parallelism; torch with ``num_workers=0`` and
``torch.set_num_threads(1)``. ``--threads N`` (N > 1): ``tf.data`` with N
threads and N parallel calls; ``DataLoader(num_workers=N)``.

Each round makes a fresh iterator of each engine (alternating which goes
first, so load from other jobs hits both alike), reads one epoch and times it
after the first ``--warmup`` batches; every batch is materialised (numpy). The
table gives, as medians over the rounds, images/s (wall clock) and images per
CPU second (the CPU time of the process and, with psutil installed, of its
``DataLoader`` workers: steadier than the wall clock when other jobs share the
machine), the ratios ours/timm, and how many cores each engine needs to feed 1
and 8 GPUs at ``--gpu-rate`` images/s each (462: timm's Sequencer2D-S training
rate with AMP on an RTX 3090), from its images per CPU second.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {
    "a": "crop + flip",
    "b": "crop + flip + RandAugment m9 + erasing 0.25",
    "c": "b + MixUp 0.8 / CutMix 1.0",
}
GPU_RATE = 462.0  # images/s of one RTX 3090 training Sequencer2D-S with AMP (timm's figure)


# ------------------------------------------------------------------ images --
def write_images(root, count, size=(500, 375), classes=4, seed=0):
    """``count`` smooth random JPEGs of ``size`` (width, height) in
    ``root/train/c<k>/`` (and one per class in ``root/val``), the same for a
    given ``seed``."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    width, height = size
    for split, number in (("train", count), ("val", classes)):
        for index in range(number):
            folder = os.path.join(root, split, f"c{index % classes}")
            os.makedirs(folder, exist_ok=True)
            coarse = rng.randint(0, 256, (height // 25 + 1, width // 25 + 1, 3)).astype("uint8")
            smooth = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), dtype="float32")
            pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:06d}.jpg"), quality=90)
    return root


# ----------------------------------------------------------------- engines --
def ours(root, recipe, batch, threads):
    """A function making a fresh epoch iterator of the package's pipeline, and
    the number of images per epoch."""
    import tensorflow as tf

    from keras_sequencer.training import TrainConfig, data, train_pipeline

    splits = data.load(root)
    config = TrainConfig(
        image_size=(224, 224),
        workers=threads,
        aa="rand-m9-mstd0.5-inc1" if recipe != "a" else None,
        color_jitter=0.0,
        reprob=0.25 if recipe != "a" else 0.0,
        mixup=0.8 if recipe == "c" else 0.0,
        cutmix=1.0 if recipe == "c" else 0.0,
    )
    dataset = train_pipeline(splits.train, config, splits.num_classes, batch)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    dataset = dataset.with_options(options)
    return dataset.as_numpy_iterator, splits.train_size


def timm_loader(root, recipe, batch, threads):
    """timm's loader with the same recipe: the same interface as :func:`ours`."""
    import torch
    from timm.data import ImageDataset, Mixup, create_transform

    torch.set_num_threads(1 if threads == 1 else threads)
    transform = create_transform(
        224,
        is_training=True,
        auto_augment="rand-m9-mstd0.5" if recipe != "a" else None,
        color_jitter=0.0,
        re_prob=0.25 if recipe != "a" else 0.0,
        re_mode="pixel",
        interpolation="random",
    )
    dataset = ImageDataset(os.path.join(root, "train"), transform=transform)
    workers = 0 if threads == 1 else threads
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        # workers start with each epoch and end with it (their start falls in the untimed
        # warm-up batches), so none is alive while the other engine is timed
        persistent_workers=False,
        multiprocessing_context="spawn" if workers else None,  # TensorFlow's threads make fork unsafe
    )
    classes = len(dataset.reader.class_to_idx)
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=classes) if recipe == "c" else None

    def epoch():
        for images, labels in loader:
            if mix is not None:
                images, labels = mix(images, labels)
            yield images.numpy(), labels.numpy()

    return epoch, len(dataset)


ENGINES = {"timm": timm_loader, "ours": ours}


def cpu_seconds():
    """CPU seconds used so far by this process and its child processes
    (``DataLoader`` workers): the ended ones from ``os.times``, the live ones
    when psutil is installed."""
    ended = os.times()
    total = time.process_time() + ended.children_user + ended.children_system
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def time_epoch(make_iterator, warmup):
    """``(images, wall seconds, CPU seconds)`` of one epoch after its first
    ``warmup`` batches."""
    images, start, cpu = 0, time.perf_counter(), cpu_seconds()
    for index, (batch, _) in enumerate(make_iterator()):
        assert batch.size > 0  # materialised
        if index >= warmup:
            images += len(batch)
        elif index == warmup - 1:
            start, cpu = time.perf_counter(), cpu_seconds()
    if not images:
        raise SystemExit(f"--warmup {warmup} leaves no batch to time: give more images or a smaller --batch.")
    return images, time.perf_counter() - start, cpu_seconds() - cpu


def measure(root, recipe, batch, threads, rounds, warmup):
    """Each engine's rounds: ``{engine: [{"wall": images/s, "cpu": images per
    CPU second}, ...]}``."""
    epochs = {name: make(root, recipe, batch, threads)[0] for name, make in ENGINES.items()}
    rates = {name: [] for name in ENGINES}
    for round_index in range(rounds):
        order = list(ENGINES) if round_index % 2 == 0 else list(ENGINES)[::-1]
        for name in order:
            images, seconds, cpu = time_epoch(epochs[name], warmup)
            rates[name].append(dict(wall=images / seconds, cpu=images / max(cpu, 1e-9)))
    return rates


# ------------------------------------------------------------------- table --
def rows_from_rates(results, gpu_rate=GPU_RATE, gpus=(1, 8)):
    """Table rows from ``{(recipe, threads): {engine: [{"wall", "cpu"}, ...]}}``
    (:func:`measure`): median images/s and images per CPU second over the
    rounds, the ratios ours/timm, and the cores each engine needs to feed
    ``gpus`` GPUs (``gpus * gpu_rate / images per CPU second``)."""
    rows = []
    for (recipe, threads), rates in results.items():
        row = dict(recipe=recipe, threads=threads)
        for engine in ("timm", "ours"):
            row[engine] = statistics.median(r["wall"] for r in rates[engine])
            row[f"{engine}_cpu"] = statistics.median(r["cpu"] for r in rates[engine])
        row["ratio"], row["ratio_cpu"] = row["ours"] / row["timm"], row["ours_cpu"] / row["timm_cpu"]
        for count in gpus:
            row[f"cores_{count}"] = tuple(count * gpu_rate / row[f"{e}_cpu"] for e in ("timm", "ours"))
        rows.append(row)
    return rows


def format_table(rows, gpus=(1, 8)):
    cores = " | ".join(f"cores for {n} GPU{'s' * (n > 1)} (timm / ours)" for n in gpus)
    lines = [
        "| recipe | threads | timm img/s | ours img/s | ours/timm | timm img/CPU-s | ours img/CPU-s "
        f"| ours/timm per CPU-s | {cores} |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(gpus),
    ]
    for row in rows:
        need = " | ".join("{:.1f} / {:.1f}".format(*row[f"cores_{n}"]) for n in gpus)
        lines.append(
            f"| {row['recipe']} | {row['threads']} | {row['timm']:.1f} | {row['ours']:.1f} | {row['ratio']:.2f}x "
            f"| {row['timm_cpu']:.1f} | {row['ours_cpu']:.1f} | {row['ratio_cpu']:.2f}x | {need} |"
        )
    return "\n".join(lines)


def machine():
    """``lscpu``'s model name, the core count and the library versions."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown"
    import PIL
    import tensorflow as tf
    import timm
    import torch

    versions = dict(python=platform.python_version(), tensorflow=tf.__version__, torch=torch.__version__)
    versions.update(timm=timm.__version__, pillow=PIL.__version__)
    return dict(cpu=model, cores=os.cpu_count(), versions=versions)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", help="ImageFolder with train/<class>/ and val/<class>/ (default: synthetic)")
    parser.add_argument("--num-images", type=int, default=256, help="synthetic 500x375 JPEGs to write")
    parser.add_argument("--recipes", default="a,b,c", help="comma-separated of a, b, c")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches at the start of each epoch")
    parser.add_argument("--gpu-rate", type=float, default=GPU_RATE, help="images/s one GPU consumes")
    parser.add_argument("--output", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or not args.recipes:
        parser.error(f"--recipes: unknown {unknown or args.recipes}; choose from {', '.join(RECIPES)}.")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads needs comma-separated integers, got {args.threads!r}.")
    if min(args.threads) < 1 or args.batch < 2 or args.batch % 2 or args.rounds < 1 or args.warmup < 0:
        parser.error("--threads >= 1, an even --batch >= 2, --rounds >= 1 and --warmup >= 0.")
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import timm  # noqa: F401  (torch before TensorFlow: the other order crashes)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.images or write_images(scratch, args.num_images)
        results = {}
        for threads in args.threads:
            for recipe in args.recipes:
                results[(recipe, threads)] = measure(root, recipe, args.batch, threads, args.rounds, args.warmup)
                print(f"recipe {recipe}, {threads} thread(s): {results[(recipe, threads)]}", flush=True)
    info = machine()
    rows = rows_from_rates(results, args.gpu_rate)
    table = format_table(rows)
    print(f"\nCPU: {info['cpu']} ({info['cores']} cores); {json.dumps(info['versions'])}")
    print(f"Recipes: {'; '.join(f'{k}: {v}' for k, v in RECIPES.items() if k in args.recipes)}")
    print(f"batch {args.batch}, {args.rounds} round(s), medians; cores at {args.gpu_rate:g} img/s per GPU\n")
    print(table)
    if args.output:
        runs = [dict(recipe=r, threads=t, rates=v) for (r, t), v in results.items()]
        with open(args.output, "w") as f:
            json.dump(dict(args=vars(args), machine=info, runs=runs, rows=rows, table=table), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
