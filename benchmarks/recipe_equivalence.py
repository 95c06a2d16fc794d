"""The training recipe, ``keras-sequencer train`` against a reference loop of timm's own parts.

Both engines train Sequencer2D from scratch on the same ImageNet-style folder
(scikit-learn's digits at 32 px: 1,347 training / 450 validation images, 10
classes) with the same settings: batch 32, AdamW (lr 1e-3, weight decay 0.05),
cosine schedule with one warmup epoch from 1e-6 to 1e-3 and floor 1e-5, label
smoothing 0.1, and per recipe

- ``a``: random resized crop + flip (+ timm's default colour jitter 0.4);
- ``b``: ``a`` + RandAugment ``--aa`` (default ``rand-m9-mstd0.5``) + random erasing 0.25;
- ``c``: ``b`` + MixUp 0.8 / CutMix 1.0.

keras-sequencer runs :func:`keras_sequencer.training.fit` (what ``keras-sequencer
train`` runs) on the current Keras backend. The reference is built from timm's
components: ``create_transform``, ``create_model``, ``create_optimizer_v2``,
``CosineLRScheduler`` (stepped per epoch, as timm's ``train.py`` does by
default), ``Mixup``, ``SoftTargetCrossEntropy`` / ``LabelSmoothingCrossEntropy``.
timm's own ``sequencer2d_s`` uses one drop-path rate in every block, so the
benchmark trains without drop path (``--drop-path`` 0).

The model is ``--model`` (a name both libraries register, default
``sequencer2d_s``) or ``--arch small``: a 32 px Sequencer2D (:data:`ARCHS`) that
both engines train to high accuracy on digits in tens of epochs.

Writes ``results.json`` (per engine, recipe and seed: validation top-1 after
every epoch), ``curves.png`` (mean curve per engine, one panel per recipe) and
prints markdown tables of the best and of the last epoch's validation accuracy,
mean +- std over the seeds. ``--load`` reports several ``results.json`` together
without training: the two engines can run side by side, one process each.
``--smoke`` runs one epoch of one seed on a few batches with a tiny model, only
to check that everything runs.

Usage::

    KERAS_BACKEND=jax python benchmarks/recipe_equivalence.py --arch small --epochs 20 --seeds 0 1 2
    python benchmarks/recipe_equivalence.py --smoke

    # side by side on two cores, then one report
    KERAS_BACKEND=jax python benchmarks/recipe_equivalence.py --arch small --engines keras-sequencer --output out/k &
    KERAS_BACKEND=jax python benchmarks/recipe_equivalence.py --arch small --engines timm --threads 1 --output out/t
    python benchmarks/recipe_equivalence.py --load out/t/results.json out/k/results.json --output out
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from throughput import machine_info  # noqa: E402

RECIPES = {
    "a": dict(aa=None, reprob=0.0, mixup=0.0, cutmix=0.0),
    "b": dict(aa="AA", reprob=0.25, mixup=0.0, cutmix=0.0),
    "c": dict(aa="AA", reprob=0.25, mixup=0.8, cutmix=1.0),
}
RECIPE_NAMES = {
    "a": "(a) crop + flip",
    "b": "(b) + RandAugment m9 + erasing 0.25",
    "c": "(c) + MixUp 0.8 / CutMix 1.0",
}
# Architectures built the same way by both engines (``Sequencer2D(**arch)`` and
# timm's ``Sequencer2d(**arch)``), chosen with ``--arch`` instead of a registered
# ``--model``. "small": a 32 px model (patch 4: an 8x8 token grid, then 4x4) that
# reaches high accuracy on digits within tens of epochs, so that the comparison is
# of trained models rather than of the first noisy epochs. "tiny": --smoke.
ARCHS = {
    "small": dict(
        layers=(2, 2), patch_sizes=(4, 2), embed_dims=(64, 128), hidden_sizes=(16, 32), mlp_ratios=(3.0, 3.0)
    ),
    "tiny": dict(layers=(1, 1), patch_sizes=(7, 2), embed_dims=(16, 24), hidden_sizes=(4, 6), mlp_ratios=(2.0, 2.0)),
}
SETTINGS = dict(
    batch_size=32,
    lr=1e-3,
    weight_decay=0.05,
    warmup_lr=1e-6,
    warmup_epochs=1,
    min_lr=1e-5,
    smoothing=0.1,
    image_size=32,
)
# The benchmark's target: each recipe's mean best validation top-1 within this many
# points of timm's.
TARGET_POINTS = 1.0


def write_digits_folder(root, train_limit=None, val_limit=None, image_size=32):
    """``root/{train,val}/<digit>/<index>.png`` from scikit-learn's digits at
    ``image_size`` px (RGB, uint8); the package's fixed 1,347 / 450 split
    (with a limit: that many, every class kept)."""
    from PIL import Image

    from keras_sequencer import datasets

    (x_train, y_train), (x_val, y_val) = datasets.load_digits(image_size)
    for split, images, labels, limit in (
        ("train", x_train, y_train, train_limit),
        ("val", x_val, y_val, val_limit),
    ):
        labels = np.asarray(labels)
        # A limit keeps every class: images in round-robin order over the classes.
        rank = np.array([np.sum(labels[:i] == labels[i]) for i in range(len(labels))])
        keep = np.lexsort((labels, rank))[:limit]
        for index in keep:
            image, label = images[index], labels[index]
            folder = os.path.join(root, split, str(int(label)))
            os.makedirs(folder, exist_ok=True)
            pixels = (np.asarray(image) * 255).round().clip(0, 255).astype("uint8")
            if pixels.ndim == 2 or pixels.shape[-1] == 1:
                pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, -1)
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.png"))
    return root


def recipe_config(recipe, seed, args, output):
    """keras-sequencer's :class:`~keras_sequencer.training.TrainConfig` of ``recipe``."""
    from keras_sequencer import training

    options = dict(arch=ARCHS[args.arch]) if args.arch else {}
    return training.TrainConfig(
        model=args.arch or args.model,
        image_size=(SETTINGS["image_size"],) * 2,
        crop_pct=1.0,
        batch_size=SETTINGS["batch_size"],
        workers=2,
        epochs=args.epochs,
        lr=SETTINGS["lr"],
        min_lr=SETTINGS["min_lr"],
        warmup_lr=SETTINGS["warmup_lr"],
        warmup_epochs=min(SETTINGS["warmup_epochs"], args.epochs),
        cooldown_epochs=0,
        weight_decay=SETTINGS["weight_decay"],
        smoothing=SETTINGS["smoothing"],
        drop_path=args.drop_path,
        aa=args.aa if recipe["aa"] else None,
        reprob=recipe["reprob"],
        mixup=recipe["mixup"],
        cutmix=recipe["cutmix"],
        seed=seed,
        adam_eps=args.adam_eps,
        output=output,
        verbose=0,
        **options,
    )


def run_keras(folder, recipe, seed, args, output):
    """Validation top-1 per epoch of :func:`keras_sequencer.training.fit`; with
    ``--swap-batches``, of its model, optimizer and loss trained on timm's batches."""
    import keras

    from keras_sequencer import training
    from keras_sequencer.training import data

    keras.backend.clear_session()
    config = recipe_config(recipe, seed, args, output)
    if args.swap_batches:
        return run_keras_on_timm_batches(folder, recipe, seed, args, config)
    _, history = training.fit(config, data.load(folder))
    return [float(v) for v in history.history["val_accuracy"]]


def run_keras_on_timm_batches(folder, recipe, seed, args, config):
    """The ablation ``--swap-batches`` for keras-sequencer: ``fit``'s model
    (``build_model``), optimizer (``build_optimizer``, its schedule stepped per
    epoch) and loss, trained with ``train_on_batch`` on the batches of timm's
    loader and ``Mixup`` (:func:`timm_data`, seeded as timm's loop) and validated
    on timm's validation loader (the same pixels as keras-sequencer's: the
    images are already 32 px)."""
    import keras
    import torch

    from keras_sequencer.training.loop import build_model
    from keras_sequencer.training.optim import build_optimizer

    train_loader, val_loader, targets = timm_data(folder, recipe, seed, args)
    keras.utils.set_random_seed(seed)
    model = build_model(config, 10)
    model.compile(optimizer=build_optimizer(config, model, len(train_loader)), loss="categorical_crossentropy")
    curve = []
    for _ in range(args.epochs):
        for step, (images, labels) in enumerate(train_loader):
            if args.max_batches and step >= args.max_batches:
                break
            images, labels = targets(images, labels)
            if labels.ndim == 1:  # LabelSmoothingCrossEntropy's targets
                labels = smoothed(torch.nn.functional.one_hot(labels, 10))
            model.train_on_batch(images.permute(0, 2, 3, 1).numpy(), labels.numpy())
        correct = 0
        for images, labels in val_loader:
            scores = model.predict_on_batch(images.permute(0, 2, 3, 1).numpy())
            correct += int((np.argmax(scores, -1) == labels.numpy()).sum())
        curve.append(correct / len(val_loader.dataset))
    return curve


def smoothed(one_hot):
    """Label smoothing of one-hot (or mixed) targets over the 10 classes, as timm's
    ``mixup_target`` and ``LabelSmoothingCrossEntropy`` apply it."""
    smoothing = SETTINGS["smoothing"]
    return one_hot * (1.0 - smoothing) + smoothing / 10


def timm_data(folder, recipe, seed, args):
    """timm's side of the data, seeded by ``seed`` (torch, numpy, random):
    ``(train_loader, val_loader, targets)``; ``targets(images, labels)`` gives
    the batch as timm's loss sees it: MixUp/CutMix's soft targets (label smoothing
    included) or the labels."""
    import random

    import torch
    from timm.data import Mixup, create_transform
    from torchvision.datasets import ImageFolder

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    size = SETTINGS["image_size"]
    train_tf = create_transform(
        size,
        is_training=True,
        auto_augment=args.aa if recipe["aa"] else None,
        re_prob=recipe["reprob"],
        re_mode="pixel",
        color_jitter=0.4,
        interpolation="random",
    )
    eval_tf = create_transform(size, is_training=False, crop_pct=1.0, interpolation="bicubic")
    train_set = ImageFolder(os.path.join(folder, "train"), transform=train_tf)
    val_set = ImageFolder(os.path.join(folder, "val"), transform=eval_tf)
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=SETTINGS["batch_size"], shuffle=True, drop_last=True, generator=generator
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=128)
    smoothing = SETTINGS["smoothing"]
    mixer = (recipe["mixup"] > 0 or recipe["cutmix"] > 0) and Mixup(
        mixup_alpha=recipe["mixup"],
        cutmix_alpha=recipe["cutmix"],
        prob=1.0,
        switch_prob=0.5,
        mode="batch",
        label_smoothing=smoothing,
        num_classes=10,
    )

    def targets(images, labels):
        return mixer(images, labels) if mixer else (images, labels)

    return train_loader, val_loader, targets


def keras_batches(folder, recipe, seed, args):
    """The ablation ``--swap-batches`` for timm: an iterator over keras-sequencer's
    training batches (``train_pipeline`` as ``fit`` builds it, seeded by ``seed``),
    as torch tensors, NCHW, with the soft targets timm's ``SoftTargetCrossEntropy``
    takes (label smoothing applied to the one-hot or mixed labels), and the number
    of batches per epoch."""
    import keras
    import torch

    from keras_sequencer.training import data
    from keras_sequencer.training.pipeline import train_pipeline

    config = recipe_config(recipe, seed, args, None)
    keras.utils.set_random_seed(seed)
    splits = data.load(folder)
    batches = train_pipeline(splits.train, config, 10, SETTINGS["batch_size"], repeat=True).as_numpy_iterator()

    def torch_batches():
        for images, labels in batches:
            images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            yield images, torch.from_numpy(smoothed(labels))

    return torch_batches(), splits.train_size // SETTINGS["batch_size"]


def run_timm(folder, recipe, seed, args):
    """Validation top-1 per epoch of a loop made of timm's components; with
    ``--swap-batches``, trained on keras-sequencer's batches (:func:`keras_batches`)."""
    import timm
    import torch
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    train_loader, val_loader, targets = timm_data(folder, recipe, seed, args)
    if args.swap_batches:
        swapped, steps_per_epoch = keras_batches(folder, recipe, seed, args)
    if args.arch:
        model = timm.models.sequencer.Sequencer2d(num_classes=10, drop_path_rate=args.drop_path, **ARCHS[args.arch])
    else:
        model = timm.create_model(args.model, num_classes=10, drop_path_rate=args.drop_path)
    optimizer = create_optimizer_v2(model, "adamw", lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=args.epochs,
        lr_min=SETTINGS["min_lr"],
        warmup_lr_init=SETTINGS["warmup_lr"],
        warmup_t=min(SETTINGS["warmup_epochs"], args.epochs),
    )
    soft_loss, hard_loss = SoftTargetCrossEntropy(), LabelSmoothingCrossEntropy(SETTINGS["smoothing"])
    curve, updates = [], 0
    for epoch in range(args.epochs):
        model.train()
        epoch_batches = (
            (next(swapped) for _ in range(steps_per_epoch))
            if args.swap_batches
            else (targets(images, labels) for images, labels in train_loader)
        )
        for step, (images, labels) in enumerate(epoch_batches):
            if args.max_batches and step >= args.max_batches:
                break
            loss = (soft_loss if labels.ndim == 2 else hard_loss)(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            updates += 1
            if args.timm_adam_eps == "keras":
                keras_effective_eps(optimizer, updates)
            optimizer.step()
        scheduler.step(epoch + 1)
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += int((model(images).argmax(-1) == labels).sum())
        curve.append(correct / len(val_loader.dataset))
    return curve


def keras_effective_eps(optimizer, update, eps=1e-8):
    """The ablation ``--timm-adam-eps keras``: sets the eps of timm's AdamW for
    ``update`` (1, 2, ...) to what Keras's Adam effectively uses. Keras adds eps
    to the square root of the uncorrected second moment, PyTorch to the
    bias-corrected one, so Keras's step equals PyTorch's with eps divided by
    ``sqrt(1 - beta2 ** update)``: 31x at the first update, 1.6x at the 500th."""
    for group in optimizer.param_groups:
        beta2 = group["betas"][1]
        group["eps"] = eps / (1.0 - beta2**update) ** 0.5


def summary_table(results, engines, pick=max, target=False):
    """Markdown: ``pick(curve)`` (default: the best validation top-1; ``lambda c: c[-1]``:
    the last epoch's), mean +- std over the seeds (``np.std``, ddof 0), per recipe and
    engine; the difference is the last engine's mean minus the first's.

    ``target`` (two engines): adds the seed-to-seed standard deviation pooled over
    the engines, ``sqrt((std_1**2 + std_2**2) / 2)``; the standard error of the
    difference of the means, ``sqrt(s_1**2 / n_1 + s_2**2 / n_2)`` (``s`` with ddof 1),
    which says how far the difference itself is from seed noise; and whether the
    difference is within :data:`TARGET_POINTS` (the benchmark's target). The accuracies
    are whole images out of the validation set, so the bound is compared with a
    tolerance of 1e-4 points: float32 storage (~1e-6 points) must not decide a
    difference that is exactly on the bound."""
    head = ["recipe", *engines, "difference"] + (["pooled std", "std. error", "target"] if target else [])
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for key, name in RECIPE_NAMES.items():
        cells, means, stds, errors = [], [], [], []
        for engine in engines:
            values = [100 * pick(c) for c in results.get(engine, {}).get(key, {}).values()]
            if not values:
                cells.append("—")
                continue
            means.append(np.mean(values))
            stds.append(np.std(values))
            errors.append(np.var(values, ddof=1) / len(values) if len(values) > 1 else np.nan)
            cells.append(f"{means[-1]:.1f} ± {stds[-1]:.1f} % (n={len(values)})")
        if all(c == "—" for c in cells):
            continue
        paired = len(means) == 2
        difference = means[-1] - means[0] if paired else None
        cells.append(f"{difference:+.1f}" if paired else "—")
        if target:
            pooled = float(np.sqrt(np.mean(np.square(stds)))) if paired else None
            met = paired and abs(difference) <= TARGET_POINTS + 1e-4
            cells += [
                f"{pooled:.1f}" if paired else "—",
                f"{np.sqrt(sum(errors)):.1f}" if paired else "—",
                ("met" if met else "not met") if paired else "—",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(results, engines, path):
    """One panel per recipe: mean validation top-1 per epoch (band: +- std) per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in RECIPE_NAMES if any(k in results.get(e, {}) for e in engines)]
    figure, axes = plt.subplots(1, max(1, len(keys)), figsize=(5 * max(1, len(keys)), 4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        for engine in engines:
            curves = list(results.get(engine, {}).get(key, {}).values())
            if not curves:
                continue
            length = min(len(c) for c in curves)
            values = 100 * np.array([c[:length] for c in curves])
            epochs = np.arange(1, length + 1)
            mean, std = values.mean(0), values.std(0)
            axis.plot(epochs, mean, marker="o", label=f"{engine} (n={len(curves)})")
            axis.fill_between(epochs, mean - std, mean + std, alpha=0.2)
        axis.set_title(RECIPE_NAMES[key])
        axis.set_xlabel("epoch")
        axis.set_ylabel("validation top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument(
        "--engines", nargs="+", default=["timm", "keras-sequencer"], choices=["timm", "keras-sequencer"]
    )
    parser.add_argument("--model", default="sequencer2d_s", help="a name registered in both timm and keras-sequencer")
    parser.add_argument(
        "--arch", choices=sorted(ARCHS), default=None, help="train this architecture (ARCHS) instead of --model"
    )
    parser.add_argument("--threads", type=int, default=None, help="timm loop: torch threads (default: every core)")
    parser.add_argument(
        "--load",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="train nothing: report (table, curves.png) the results.json files of earlier runs "
        "together, e.g. one per engine run side by side",
    )
    parser.add_argument("--aa", default="rand-m9-mstd0.5", help="RandAugment of recipes b and c (both engines)")
    parser.add_argument("--drop-path", type=float, default=0.0)
    parser.add_argument(
        "--adam-eps",
        choices=["torch", "keras"],
        default="torch",
        help="keras-sequencer: where AdamW adds eps (TrainConfig.adam_eps; torch is the recipe's default)",
    )
    parser.add_argument(
        "--timm-adam-eps",
        choices=["torch", "keras"],
        default="torch",
        help="ablation: 'keras' gives timm's AdamW the effective eps of Keras's Adam at each update",
    )
    parser.add_argument(
        "--swap-batches",
        action="store_true",
        help="ablation: each engine trains on the other's augmented batches (keras-sequencer on timm's "
        "loader and Mixup, timm on keras-sequencer's tf.data pipeline); validation is unchanged",
    )
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--val-limit", type=int, default=None, help="use only the first N validation images")
    parser.add_argument("--max-batches", type=int, default=None, help="timm loop: batches per epoch, at most")
    parser.add_argument("--output", default="benchmarks/results/recipe_equivalence")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch, 1 seed, 64 training / 32 validation images, a tiny model"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds, args.arch = 1, args.seeds[:1], "tiny"
        args.train_limit = args.train_limit or 64
        args.val_limit = args.val_limit or 32
        args.max_batches = args.max_batches or 2
    return args


def load_results(paths):
    """The ``results`` of several ``results.json`` files merged (engine -> recipe -> seed -> curve);
    a later file's curve replaces an earlier one's for the same engine, recipe and seed."""
    results = {}
    for path in paths:
        with open(path) as f:
            for engine, recipes in json.load(f)["results"].items():
                for key, curves in recipes.items():
                    results.setdefault(engine, {}).setdefault(key, {}).update(curves)
    return results


def report(results, output):
    """Writes ``curves.png`` under ``output``; returns the markdown of the best-epoch and
    last-epoch tables (engines in the order timm, keras-sequencer)."""
    engines = [e for e in ("timm", "keras-sequencer") if e in results]
    plot_curves(results, engines, os.path.join(output, "curves.png"))
    return (
        "best validation top-1 over the epochs:\n\n"
        + summary_table(results, engines, target=True)
        + "\n\nvalidation top-1 at the last epoch:\n\n"
        + summary_table(results, engines, lambda c: c[-1])
    )


def provenance():
    """Where a run was made: the machine, the packages' versions, the commit and the date."""
    versions = {}
    for package, distributions in (
        ("keras", ["keras"]),
        ("jax", ["jax"]),
        ("torch", ["torch"]),
        ("tensorflow", ["tensorflow", "tensorflow-cpu"]),
        ("timm", ["timm"]),
    ):
        for distribution in distributions:
            try:
                versions[package] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "machine": machine_info(),
        "versions": versions,
        "commit": commit,
        "date": datetime.date.today().isoformat(),
    }


def train(args):
    """Runs every (recipe, seed, engine) of ``args``; ``results.json`` (the arguments, the
    :func:`provenance` and the curves) is rewritten after each run."""
    results_path = os.path.join(args.output, "results.json")
    results, where = {}, provenance()
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_digits_folder(os.path.join(scratch, "digits"), args.train_limit, args.val_limit)
        for key in args.recipes:
            for seed in args.seeds:
                for engine in args.engines:
                    if engine == "timm":
                        curve = run_timm(folder, RECIPES[key], seed, args)
                    else:
                        run_dir = os.path.join(scratch, f"run_{key}_{seed}")
                        curve = run_keras(folder, RECIPES[key], seed, args, run_dir)
                    results.setdefault(engine, {}).setdefault(key, {})[str(seed)] = curve
                    print(
                        f"{engine:16s} recipe {key} seed {seed}: best val top-1 "
                        f"{100 * max(curve):.1f} % ({len(curve)} epochs)",
                        flush=True,
                    )
                    with open(results_path, "w") as f:
                        json.dump({"args": vars(args), **where, "results": results}, f, indent=1)
    return results


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    if args.load:
        results = {
            engine: {k: v for k, v in recipes.items() if k in args.recipes}
            for engine, recipes in load_results(args.load).items()
        }
        print(f"results of {', '.join(args.load)}:\n")
    else:
        results = train(args)
        import keras

        print(
            f"\n{args.arch or args.model}, seeds {args.seeds}, {args.epochs} epochs, "
            f"keras backend {keras.backend.backend()}:\n"
        )
    table = report(results, args.output)
    print(table)
    return results, table


if __name__ == "__main__":
    main()
