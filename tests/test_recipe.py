"""The training recipe's pieces against the timm (and torchvision) functions
they mirror, on the same random draws: random resized crop, random erasing,
MixUp/CutMix with smoothed targets, colour jitter, the learning-rate schedule,
the original initialisation and drop-path schedule, and the flags that select
them."""

import math
import types

import keras
import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
timm_mixup = pytest.importorskip("timm.data.mixup")
timm_erasing = pytest.importorskip("timm.data.random_erasing")
timm_transforms = pytest.importorskip("timm.data.transforms")

from helpers import TINY_ARCH, load_script, random_images, to_numpy  # noqa: E402

from keras_sequencer import cli, data, training  # noqa: E402
from keras_sequencer.initializers import apply_original_initialization  # noqa: E402
from keras_sequencer.models import Sequencer2D, drop_path_schedule  # noqa: E402
from keras_sequencer.training import mix, transforms  # noqa: E402


class Draws:
    """Stands in for Python's ``random`` / numpy's ``np.random`` inside a timm
    module: returns the given values in order (``randint(a, b)`` inclusive of
    ``b`` as Python's, ``randint(a, b)`` exclusive as numpy's, from fractions)."""

    def __init__(self, values, numpy_style=False):
        self.values = list(values)
        self.numpy_style = numpy_style

    def next(self):
        return self.values.pop(0)

    def uniform(self, a, b):
        return self.next()

    def random(self):
        return self.next()

    def rand(self):
        return self.next()

    def beta(self, a, b):
        return self.next()

    def randint(self, low, high, size=None):
        span = high - low + (0 if self.numpy_style else 1)
        return low + int(math.floor(self.next() * span))


def patched(module, name, draws, monkeypatch):
    if name == "np":
        fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        fake.random = draws
        monkeypatch.setattr(module, "np", fake)
    else:
        monkeypatch.setattr(module, name, draws)


# ---------------------------------------------------------------- random resized crop
@pytest.mark.parametrize("height, width", [(32, 32), (40, 24), (300, 20), (12, 200), (7, 9)])
def test_crop_box_equals_timm_get_params_on_the_same_draws(height, width, monkeypatch):
    rng = np.random.RandomState(height * 1000 + width)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    image = types.SimpleNamespace()  # timm reads only its size
    monkeypatch.setattr(timm_transforms.F, "get_image_size", lambda img: [width, height])
    fallbacks = 0
    crop_box = tf.function(transforms.crop_box_from_draws)
    for _ in range(20):
        areas = rng.uniform(*scale, 10)
        logs = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), 10)
        offsets = rng.uniform(size=2)
        sequence = []
        for a, r in zip(areas, logs):  # the draws timm makes: attempts up to the first fit
            sequence += [a, r]
            fits = (
                round(math.sqrt(a * height * width * math.exp(r))) <= width
                and round(math.sqrt(a * height * width / math.exp(r))) <= height
            )
            if fits:
                sequence += list(offsets)
                break
        fallbacks += not fits
        patched(timm_transforms, "random", Draws(sequence), monkeypatch)
        expected = timm_transforms.RandomResizedCropAndInterpolation.get_params(image, scale, ratio)
        got = crop_box(height, width, areas, logs, offsets, ratio)
        assert tuple(int(v) for v in got) == tuple(expected)
    if height / width > 5 or width / height > 5:
        assert fallbacks > 0  # the centre-crop fallback was exercised


def test_crop_aspect_ratio_is_log_uniform_and_area_uniform():
    tf.random.set_seed(0)

    @tf.function
    def sample(n):
        draw = lambda _: tf.stack(transforms.random_resized_crop_box(2000, 2000, (0.25, 1.0), (3 / 4, 4 / 3)))  # noqa: E731
        return tf.map_fn(draw, tf.range(n))

    boxes = to_numpy(sample(600))
    log_ratio = np.log(boxes[:, 3] / boxes[:, 2])
    uniform = scipy_stats.uniform(math.log(3 / 4), math.log(4 / 3) - math.log(3 / 4))
    assert scipy_stats.kstest(log_ratio, uniform.cdf).pvalue > 0.01
    fraction = boxes[:, 2] * boxes[:, 3] / 2000**2
    accepted = fraction[(boxes[:, 2] < 2000) & (boxes[:, 3] < 2000)]
    assert abs(np.median(accepted) - 0.625) < 0.06


# ---------------------------------------------------------------- random erasing
@pytest.mark.parametrize("count", [1, 3])
def test_erase_boxes_equal_timm_random_erasing_on_the_same_draws(count, monkeypatch):
    rng = np.random.RandomState(count)
    height, width = 24, 20
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    eraser = timm_erasing.RandomErasing(1.0, mode="const", max_count=count, device="cpu")
    erase_boxes = tf.function(transforms.erase_boxes_from_draws)
    for trial in range(15):
        n = int(rng.randint(1, count + 1))
        areas = rng.uniform(0.02, 1 / 3, (count, 10))
        if trial % 5 == 0:
            areas[:] = 0.95  # no attempt fits: nothing erased
        logs = rng.uniform(*log_aspect, (count, 10))
        offsets = rng.uniform(size=(count, 2))
        boxes = to_numpy(erase_boxes(height, width, areas, logs, offsets, tf.constant(n)))
        sequence = [0.0] + ([(n - 1 + 0.5) / count] if count > 1 else [])
        for k in range(n):
            for attempt in range(10):
                sequence += [areas[k, attempt], logs[k, attempt]]
                h = round(math.sqrt(areas[k, attempt] * height * width / n * math.exp(logs[k, attempt])))
                w = round(math.sqrt(areas[k, attempt] * height * width / n / math.exp(logs[k, attempt])))
                if w < width and h < height:
                    sequence += list(offsets[k])
                    break
        patched(timm_erasing, "random", Draws(sequence), monkeypatch)
        reference = torch.ones(3, height, width)
        eraser(reference)
        ours = to_numpy(transforms.erase_with_boxes(tf.ones((height, width, 3)), boxes, tf.zeros((count, 1, 1, 3))))
        np.testing.assert_array_equal(ours, reference.permute(1, 2, 0).numpy())


def test_random_erasing_modes_and_probability():
    tf.random.set_seed(1)
    image = tf.fill((32, 32, 3), 5.0)
    for mode in ("pixel", "rand", "const"):
        erase = tf.function(lambda _: transforms.random_erasing(image, 1.0, mode))  # noqa: B023
        erased = to_numpy(tf.map_fn(erase, tf.range(8), fn_output_signature=tf.float32))
        mask = (erased != 5.0).any(-1)
        assert mask.any(axis=(1, 2)).mean() > 0.5  # most images erased (some draws fit nowhere)
        area = mask.mean((1, 2))[mask.any(axis=(1, 2))]
        assert ((area >= 0.015) & (area <= 0.34)).all()
        values = erased[mask]
        if mode == "const":
            assert (values == 0).all()
        elif mode == "rand":  # one N(0, 1) colour per box
            first = erased[np.argmax(mask.any(axis=(1, 2)))]
            colours = np.unique(first[(first != 5.0).any(-1)], axis=0)
            assert len(colours) == 1
        else:
            assert abs(values.std() - 1.0) < 0.2 and abs(values.mean()) < 0.2
    kept = [to_numpy(transforms.random_erasing(image, 0.0, "pixel")) for _ in range(4)]
    assert all((k == 5.0).all() for k in kept)


# ---------------------------------------------------------------- MixUp / CutMix
@pytest.mark.parametrize(
    "mixup_alpha, cutmix_alpha, switch, lam, centre",
    [
        (0.8, 1.0, 0.2, 0.37, (3, 11)),  # CutMix chosen
        (0.8, 1.0, 0.9, 0.37, (3, 11)),  # MixUp chosen
        (0.0, 1.0, None, 0.6, (0, 15)),  # CutMix only, box clipped at the corner
        (0.8, 0.0, None, 0.71, None),  # MixUp only
    ],
)
def test_mix_equals_timm_mixup_on_the_same_draws(mixup_alpha, cutmix_alpha, switch, lam, centre, monkeypatch):
    batch, height, width, classes, smoothing = 6, 12, 16, 5, 0.1
    images = np.random.RandomState(0).normal(size=(batch, height, width, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 1])
    sequence = [0.0] + ([switch] if switch is not None else []) + [lam]
    use_cutmix = cutmix_alpha > 0 and (switch is None or switch < 0.5)
    if use_cutmix:
        sequence += [(centre[0] + 0.5) / height, (centre[1] + 0.5) / width]
    patched(timm_mixup, "np", Draws(sequence, numpy_style=True), monkeypatch)
    mixer = timm_mixup.Mixup(
        mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=smoothing, num_classes=classes
    )
    x = torch.tensor(images.transpose(0, 3, 1, 2).copy())
    x, target = mixer(x, torch.tensor(labels))
    centres = np.tile([(c + 0.5) / s for c, s in zip(centre or (0, 0), (height, width))], (batch, 1))
    ours, mixed = mix.mix_batch(
        images, tf.one_hot(labels, classes), np.full(batch, lam, "float32"), np.full(batch, use_cutmix), centres
    )
    np.testing.assert_allclose(to_numpy(ours), x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(to_numpy(mix.smoothed_targets(mixed, smoothing)), target.numpy(), atol=1e-6)
    # Keras's label smoothing on the mixed one-hot targets is timm's soft-target loss.
    logits = np.random.RandomState(1).normal(size=(batch, classes)).astype("float32")
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    timm_loss = pytest.importorskip("timm.loss").SoftTargetCrossEntropy()
    expected = float(timm_loss(torch.tensor(logits), target))
    assert float(to_numpy(keras_loss(to_numpy(mixed), logits))) == pytest.approx(expected, rel=1e-5)


def test_elem_mode_equals_timm_per_image(monkeypatch):
    batch, height, width, classes = 4, 10, 10, 3
    images = np.random.RandomState(2).normal(size=(batch, height, width, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    use_cutmix = np.array([True, False, True, False])
    lam = np.array([0.3, 0.6, 0.8, 0.45], "float32")
    centres = np.array([[2, 7], [0, 0], [9, 1], [0, 0]])
    fake = types.SimpleNamespace(
        rand=lambda n: np.where(use_cutmix, 0.1, 0.9) if len(fake.calls) == 0 else np.zeros(n),
        beta=lambda a, b, size: lam.astype("float64"),
        randint=lambda low, high, size=None: int(fake.centres.pop(0)),
        calls=[],
        centres=[c for i in range(batch) if use_cutmix[i] for c in centres[i]],
    )
    original_rand = fake.rand

    def rand(n):
        value = original_rand(n)
        fake.calls.append(n)
        return value

    fake.rand = rand
    patched(timm_mixup, "np", fake, monkeypatch)
    mixer = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=classes)
    x, target = mixer(torch.tensor(images.transpose(0, 3, 1, 2).copy()), torch.tensor(labels))
    ours, mixed = mix.mix_batch(
        images, tf.one_hot(labels, classes), lam, use_cutmix, (centres + 0.5) / np.array([height, width])
    )
    np.testing.assert_allclose(to_numpy(ours), x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(to_numpy(mixed), target.numpy(), atol=1e-6)


def test_mix_draws_follow_timm_distributions():
    tf.random.set_seed(3)
    sample = tf.function(lambda _: mix.sample_mix_params(4, 0.8, 1.0, prob=1.0, switch_prob=0.5)[:2])
    lams, cuts = (to_numpy(t) for t in tf.map_fn(sample, tf.range(400), fn_output_signature=(tf.float32, tf.bool)))
    assert (lams == lams[:, :1]).all() and (cuts == cuts[:, :1]).all()  # one draw per batch
    lam, cut = lams[:, 0], cuts[:, 0]
    assert 0.4 < cut.mean() < 0.6
    assert scipy_stats.kstest(lam[cut], scipy_stats.beta(1.0, 1.0).cdf).pvalue > 0.01
    assert scipy_stats.kstest(lam[~cut], scipy_stats.beta(0.8, 0.8).cdf).pvalue > 0.01
    none = mix.sample_mix_params(64, 0.8, 0.0, prob=0.0, mode="elem")
    assert (to_numpy(none[0]) == 1.0).all()


# ---------------------------------------------------------------- colour jitter
def test_color_jitter_equals_torchvision_adjustments():
    from PIL import Image
    from torchvision.transforms import functional as F

    image = np.random.RandomState(4).randint(0, 256, (16, 16, 3)).astype("uint8")
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for factors, order in (((0.7, 1.3, 0.9), (2, 0, 1)), ((1.35, 0.65, 1.4), (1, 2, 0))):
        expected = Image.fromarray(image)
        for op in order:
            expected = ops[op](expected, factors[op])
        ours = transforms.color_jitter_from_draws(tf.constant(image, tf.float32), tf.constant(factors), order)
        assert np.abs(to_numpy(ours) - np.asarray(expected, "float32")).max() <= 3.0


# ---------------------------------------------------------------- learning-rate schedule
@pytest.mark.parametrize("on_updates", [False, True])
def test_learning_rate_schedule_matches_timms_cosine_scheduler(on_updates):
    """timm's ``CosineLRScheduler`` as its ``train.py`` drives it: set at
    construction, then ``step(epoch + 1)`` after each epoch, or
    ``step_update(updates)`` after each update (``--sched-on-updates``, with
    ``t_initial`` and ``warmup_t`` in updates)."""
    cosine_lr = pytest.importorskip("timm.scheduler.cosine_lr")
    epochs, warmup, cooldown, steps = 6, 2, 2, 3
    config = types.SimpleNamespace(
        lr=2e-3, min_lr=1e-5, warmup_lr=1e-6, epochs=epochs, warmup_epochs=warmup, sched_on_updates=on_updates
    )
    ours = training.learning_rate_schedule(config, steps_per_epoch=steps)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scale = steps if on_updates else 1
    scheduler = cosine_lr.CosineLRScheduler(
        optimizer,
        t_initial=epochs * scale,
        lr_min=config.min_lr,
        warmup_lr_init=config.warmup_lr,
        warmup_t=warmup * scale,
        t_in_epochs=not on_updates,
    )
    theirs, update = [], 0
    for epoch in range(epochs + cooldown):
        for _ in range(steps):
            theirs.append(optimizer.param_groups[0]["lr"])
            update += 1
            scheduler.step_update(update)
        scheduler.step(epoch + 1)
    values = [float(keras.ops.convert_to_numpy(ours(step))) for step in range(len(theirs))]
    np.testing.assert_allclose(values, theirs, rtol=1e-5)
    assert len(set(np.round(values, 12))) > (epochs + 1 if on_updates else 5)


# ---------------------------------------------------------------- initialisation, drop path
def test_original_initialisation_matches_timm_statistics():
    timm_sequencer = pytest.importorskip("timm.models.sequencer")
    arch = dict(layers=(1, 1), patch_sizes=(4, 2), embed_dims=(48, 64), hidden_sizes=(32, 32), mlp_ratios=(3.0, 3.0))
    model = Sequencer2D(**arch, input_shape=(32, 32, 3), classes=10)
    apply_original_initialization(model, seed=0)
    reference = timm_sequencer.Sequencer2d(num_classes=10, **arch)
    ours = {v.path: to_numpy(v) for v in model.weights}
    theirs = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    assert not ours["head/kernel"].any() and not ours["head/bias"].any()
    pairs = [
        ("stem/kernel", "stem.proj.weight"),
        ("stages_1_downsample/kernel", "stages.1.downsample.down.weight"),
        ("stages_0_blocks_0/mlp_fc1/kernel", "stages.0.blocks.0.mlp_channels.fc1.weight"),
        ("stages_0_blocks_0/rnn_tokens/fc/kernel", "stages.0.blocks.0.rnn_tokens.fc.weight"),
    ]
    for path, name in pairs:
        assert ours[path].std() == pytest.approx(theirs[name].std(), rel=0.1), path
    rnn = [p for p in ours if "stages_0_blocks_0/rnn_tokens/rnn_v" in p and "lstm_cell" in p]
    kernel = ours[next(p for p in rnn if p.endswith("/kernel"))]
    bias = ours[next(p for p in rnn if p.endswith("/bias"))]
    bound = 1 / math.sqrt(32)
    assert np.abs(kernel).max() <= bound and kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    torch_bias = (
        theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_ih_l0"]
        + theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_hh_l0"]
    )
    assert bias.std() == pytest.approx(torch_bias.std(), rel=0.25)
    mlp_bias = ours["stages_0_blocks_0/mlp_fc1/bias"]
    assert 0 < np.abs(mlp_bias).max() < 1e-5
    again = Sequencer2D(**arch, input_shape=(32, 32, 3), classes=10)
    apply_original_initialization(again, seed=0)
    np.testing.assert_array_equal(to_numpy(again.weights[0]), ours[model.weights[0].path])


def test_build_model_initialises_only_from_scratch(tmp_path):
    arch = dict(layers=(1,), patch_sizes=(8,), embed_dims=(16,), hidden_sizes=(4,), mlp_ratios=(2.0,))
    config = dict(model="tiny", arch=arch, image_size=(16, 16), output=str(tmp_path), seed=0)
    scratch = training.build_model(training.TrainConfig(**config), 4)
    assert not to_numpy(scratch.get_layer("head").kernel).any()
    keras_default = training.build_model(training.TrainConfig(**config, init="keras"), 4)
    assert to_numpy(keras_default.get_layer("head").kernel).any()
    path = str(tmp_path / "w.weights.h5")
    keras_default.save_weights(path)
    loaded = training.build_model(training.TrainConfig(**dict(config, weights=path)), 4)
    x = random_images(2, 16, 16)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(keras_default(x)))


def test_drop_path_rates_follow_the_original_linear_schedule():
    rates = torch.linspace(0, 0.3, sum(TINY_ARCH["layers"])).tolist()
    model = Sequencer2D(**TINY_ARCH, drop_path_rate=0.3)
    blocks = [layer for layer in model.layers if "_blocks_" in layer.name]
    np.testing.assert_allclose([b.drop_path_rate for b in blocks], rates, rtol=1e-6)
    assert drop_path_schedule(0.2, 1) == [0.0] and drop_path_schedule(0.0, 3) == [0.0] * 3


# ---------------------------------------------------------------- flags and pipeline
def test_recipe_flags_reach_the_config():
    args = cli.build_parser().parse_args(
        [
            "train",
            "/data",
            "--mixup",
            "0.8",
            "--cutmix",
            "1.0",
            "--mixup-prob",
            "0.5",
            "--mixup-switch-prob",
            "0.3",
            "--mixup-mode",
            "elem",
            "--reprob",
            "0.25",
            "--remode",
            "rand",
            "--recount",
            "2",
            "--color-jitter",
            "0.3",
            "--drop-path",
            "0.1",
            "--init",
            "keras",
            "--train-interpolation",
            "bicubic",
        ]
    )
    config = training.config_from_args(args)
    assert (config.mixup_prob, config.mixup_switch_prob, config.mixup_mode) == (0.5, 0.3, "elem")
    assert (config.reprob, config.remode, config.recount, config.color_jitter) == (0.25, "rand", 2, 0.3)
    assert (config.drop_path, config.init, config.train_interpolation) == (0.1, "keras", "bicubic")
    for bad, message in (
        ({"mixup_mode": "pair"}, "mixup_mode"),
        ({"recount": 0}, "recount"),
        ({"mixup_prob": 2.0}, "mixup_prob"),
        ({"color_jitter": -1.0}, "color_jitter"),
    ):
        with pytest.raises(ValueError, match=message):
            training.TrainConfig(**bad)


def test_pipeline_jitters_without_aa_and_mixes_even_batches():
    images = np.full((8, 20, 20, 3), 100, np.uint8)
    images[:, :, :, 0] = 200
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    plain = dict(
        model="t", arch=TINY_ARCH, image_size=(16, 16), workers=1, hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    x, _ = next(iter(training.train_pipeline(splits.train, training.TrainConfig(**plain), 4, 8)))
    assert np.ptp(to_numpy(x).mean((1, 2, 3))) > 1e-2  # colour jitter on by default
    steady = training.TrainConfig(**plain, color_jitter=0.0)
    x, _ = next(iter(training.train_pipeline(splits.train, steady, 4, 8)))
    assert np.ptp(to_numpy(x).mean((1, 2, 3))) < 1e-4
    with pytest.raises(ValueError, match="must be even"):
        training.train_pipeline(splits.train, training.TrainConfig(**plain, mixup=0.8), 4, 7)


def _recipe_benchmark():
    return load_script("benchmarks/recipe_equivalence.py")


@pytest.mark.slow  # one tiny epoch on each engine: Keras fit and timm's loop
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the benchmark script's mechanics: run once, on torch")
def test_recipe_equivalence_benchmark_smoke_run(tmp_path):
    benchmark = _recipe_benchmark()
    results, table = benchmark.main(["--smoke", "--recipes", "c", "--output", str(tmp_path)])
    for engine in ("timm", "keras-sequencer"):
        curve = results[engine]["c"]["0"]
        assert len(curve) == 1 and 0.0 <= curve[0] <= 1.0
    assert "(c) + MixUp 0.8 / CutMix 1.0" in table and "(a)" not in table
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "results.json").exists()


def test_recipe_equivalence_reports_runs_made_side_by_side(tmp_path):
    """``--load`` merges the results.json of one run per engine and reports the
    best and the last epoch, mean +- std over the seeds, keras-sequencer minus timm."""
    import json

    benchmark = _recipe_benchmark()
    runs = {
        "timm": {
            "a": {"0": [0.1, 0.5, 0.4], "1": [0.2, 0.3, 0.6]},
            "b": {"0": [0.5], "1": [0.6]},
            "c": {"0": [0.27], "1": [0.35]},
        },
        "keras-sequencer": {
            "a": {"0": [0.3, 0.7, 0.7], "1": [0.2, 0.5, 0.5]},
            "b": {"0": [0.52], "1": [0.6]},
            # float32 values, as Keras's history stores them: 29.0 % in all
            "c": {"0": [float(np.float32(0.29))], "1": [float(np.float32(0.29))]},
        },
    }
    paths = []
    for engine, results in runs.items():
        paths.append(str(tmp_path / f"{engine}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"args": {}, "results": {engine: results}}, f)
    merged, text = benchmark.main(["--load", *paths, "--output", str(tmp_path / "report")])
    assert merged == runs
    best, last = text.split("at the last epoch")
    # (a) best: timm 50, 60 -> 55.0 +- 5.0; keras 70, 50 -> 60.0 +- 10.0; pooled sqrt(62.5);
    # standard error sqrt(50 / 2 + 200 / 2)
    assert "| 55.0 ± 5.0 % (n=2) | 60.0 ± 10.0 % (n=2) | +5.0 | 7.9 | 11.2 | not met |" in best
    # (b) best: 55.0 +- 5.0 against 56.0 +- 4.0: 1 point, under 2 and under sqrt(20.5)
    assert "| 55.0 ± 5.0 % (n=2) | 56.0 ± 4.0 % (n=2) | +1.0 | 4.5 | 6.4 | met |" in best
    # (c) best: 31.0 against 29.0 (float32 0.29 is 28.9999992 %): 2 points, on the bound,
    # so met; pooled sqrt((16 + 0) / 2), standard error sqrt(32 / 2 + 0)
    assert "| 31.0 ± 4.0 % (n=2) | 29.0 ± 0.0 % (n=2) | -2.0 | 2.8 | 4.0 | met |" in best
    # (a) last: timm 40, 60 -> 50.0; keras 70, 50 -> 60.0 (no target columns)
    assert "| 50.0 ± 10.0 % (n=2) | 60.0 ± 10.0 % (n=2) | +10.0 |\n" in last
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0
    only_c = benchmark.main(["--load", *paths, "--recipes", "c", "--output", str(tmp_path / "c")])[1]
    assert "(c)" in only_c and "(a)" not in only_c


def test_results_md_recipe_tables_are_computed_from_the_committed_runs():
    """The recipe tables in benchmarks/RESULTS.md are what the benchmark's report computes
    from the raw runs kept in benchmarks/recipe_runs/ (one results.json per engine and
    batch of seeds, each naming the machine, versions and commit it ran on)."""
    import glob
    import json
    import os

    benchmark = _recipe_benchmark()
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
    paths = sorted(glob.glob(os.path.join(root, "recipe_runs", "*.json")))
    assert paths, "benchmarks/recipe_runs/ holds the runs behind RESULTS.md"
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        assert run["machine"]["cpu"] and run["commit"] and run["versions"]["keras"], path
    results = benchmark.load_results(paths)
    engines = ["timm", "keras-sequencer"]
    tables = (
        benchmark.summary_table(results, engines, target=True),
        benchmark.summary_table(results, engines, lambda curve: curve[-1]),
    )
    with open(os.path.join(root, "RESULTS.md")) as f:
        text = f.read()
    rows = [row for table in tables for row in table.splitlines()[2:]]
    assert len(rows) == 6  # three recipes, best and last epoch
    for row in rows:
        assert row in text, row
