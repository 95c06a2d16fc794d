"""The training recipe: flags, schedule, weight decay, augmentation, fit, resume, NaN."""

import csv
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from train_helpers import TINY_TRAIN_ARCH, create_model_with_tiny_s, tiny_config

from keras_sequencer import cli, data, registry, training
from keras_sequencer.models import IMAGENET_MEAN, IMAGENET_STD, Sequencer2D

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The official repo's three commands (seeds), without `./distributed_train.sh N DATA`.
SEED_COMMANDS = [
    "--model sequencer2d_s -b 256 -j 8 --opt adamw --epochs 300 --sched cosine --native-amp "
    "--img-size 224 --drop-path 0.1 --lr 2e-3 --weight-decay 0.05 --remode pixel --reprob 0.25 "
    "--aa rand-m9-mstd0.5-inc1 --smoothing 0.1 --mixup 0.8 --cutmix 1.0 --warmup-lr 1e-6 "
    "--warmup-epochs 20",
    "--model sequencer2d_l --pretrained -b 64 -j 8 --opt adamw --epochs 30 --sched cosine "
    "--native-amp --input-size 3 392 392 --img-size 392 --crop-pct 1.0 --drop-path 0.4 --lr 5e-5 "
    "--weight-decay 1e-8 --remode pixel --reprob 0.25 --aa rand-m9-mstd0.5-inc1 --smoothing 0.1 "
    "--mixup 0.8 --cutmix 1.0 --warmup-epochs 0 --cooldown-epochs 0",
    "--model sequencer2d_s -b 128 -j 4 --num-classes 10 --dataset torch/cifar10 --pretrained "
    "--opt adamw --epochs 200 --sched cosine --native-amp --img-size 224 --clip-grad 1 "
    "--drop-path 0.1 --lr 0.0001 --weight-decay 1e-4 --remode pixel --aa rand-m9-mstd0.5-inc1 "
    "--smoothing 0.1 --mixup 0.8 --cutmix 1.0 --warmup-lr 1e-6 --warmup-epochs 5",
]


def parse_train(flags):
    args = cli.build_parser().parse_args(["train", "/data", *flags.split()])
    return args, training.config_from_args(args)


def test_official_commands_parse_to_the_recipe():
    _, scratch = parse_train(SEED_COMMANDS[0])
    assert (scratch.model, scratch.batch_size, scratch.workers, scratch.epochs) == ("sequencer2d_s", 256, 8, 300)
    assert scratch.image_size == (224, 224) and scratch.amp and scratch.weights is None
    assert (scratch.lr, scratch.weight_decay, scratch.warmup_lr, scratch.warmup_epochs) == (2e-3, 0.05, 1e-6, 20)
    assert (scratch.reprob, scratch.remode, scratch.mixup, scratch.cutmix) == (0.25, "pixel", 0.8, 1.0)
    _, high_res = parse_train(SEED_COMMANDS[1])
    assert high_res.image_size == (392, 392) and high_res.crop_pct == 1.0
    assert high_res.weights == "imagenet" and high_res.drop_path == 0.4
    assert (high_res.warmup_epochs, high_res.cooldown_epochs) == (0, 0)
    assert not scratch.sched_on_updates  # timm's train.py default: the rate changes per epoch
    assert parse_train(SEED_COMMANDS[1] + " --sched-on-updates")[1].sched_on_updates
    args, transfer = parse_train(SEED_COMMANDS[2])
    assert args.dataset == "torch/cifar10" and transfer.num_classes == 10
    assert transfer.clip_grad == 1.0 and transfer.reprob == 0.0  # timm's default: no erasing
    policy = training.parse_auto_augment(transfer.aa)
    assert (policy.magnitude, policy.num_ops, policy.magnitude_std, policy.increasing) == (9, 2, 0.5, True)
    recipe = {k: getattr(transfer, k) for k in training.TRANSFER_RECIPE if k != "model"}
    assert recipe == {k: v for k, v in training.TRANSFER_RECIPE.items() if k != "model"}


@pytest.mark.parametrize(
    "flags",
    ["--opt sgd", "--sched step", "--remode gauss", "--mixup-mode pair", "--clip-mode agc", "--model resnet50"],
)
def test_flags_that_cannot_be_honoured_are_argparse_errors(flags, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "/data", *flags.split()])
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--input-size 1 224 224", "3 channels"),
        ("--img-size 224 --input-size 3 392 392", "contradicts"),
        ("--aa original", "only RandAugment"),
        ("--aa rand-m9-w0", "Unsupported RandAugment option 'w'"),
        ("--aa rand-m9-n0", "n must be >= 1"),
        ("--aa rand-m9-mstd-1", "needs a number"),
        ("--reprob 1.5", "reprob must be in"),
        ("--warmup-epochs 20 --epochs 10", "warmup_epochs"),
        ("--pretrained --initial-checkpoint x.h5", "either"),
    ],
)
def test_inconsistent_values_are_value_errors(flags, message):
    with pytest.raises(ValueError, match=message):
        parse_train(flags)


def test_rand_augment_string():
    policy = training.parse_auto_augment("rand-m7-n3")
    assert (policy.magnitude, policy.num_ops, policy.magnitude_std, policy.increasing) == (7, 3, 0.0, False)
    assert training.parse_auto_augment(None) is None


def test_learning_rate_schedule_changes_per_epoch_warms_up_and_cools_down():
    config = tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10)
    schedule = training.learning_rate_schedule(config, steps_per_epoch=5)
    rate = lambda sched, step: float(keras.ops.convert_to_numpy(sched(step)))  # noqa: E731
    cosine = lambda t: 1e-5 + (1e-2 - 1e-5) * 0.5 * (1 + math.cos(math.pi * t))  # noqa: E731
    warm = 1e-4 + (1e-2 - 1e-4) / 2
    # epoch e = steps 5e .. 5e+4 share one rate; the cosine counts from epoch 0
    expected = {
        0: 1e-4,
        4: 1e-4,
        5: warm,
        9: warm,
        10: cosine(0.2),
        14: cosine(0.2),
        25: cosine(0.5),
        49: cosine(0.9),
        50: 1e-5,
        70: 1e-5,
    }
    for step, value in expected.items():
        assert rate(schedule, step) == pytest.approx(value, rel=1e-4), step
    per_update = training.learning_rate_schedule(
        tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10, sched_on_updates=True),
        steps_per_epoch=5,
    )
    expected = {0: 1e-4, 3: 1e-4 + 3 * (1e-2 - 1e-4) / 10, 10: cosine(0.2), 11: cosine(0.22), 25: cosine(0.5), 50: 1e-5}
    for step, value in expected.items():
        assert rate(per_update, step) == pytest.approx(value, rel=1e-4), step
    no_warmup = training.learning_rate_schedule(tiny_config("unused", lr=1e-2, warmup_epochs=0), 5)
    assert rate(no_warmup, 0) == pytest.approx(1e-2)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(per_update))
    assert [rate(again, s) for s in (0, 3, 11, 60)] == [rate(per_update, s) for s in (0, 3, 11, 60)]


def test_a_checkpoint_with_the_schedule_loads_with_only_the_package_imported(tmp_path):
    """``best.keras`` keeps the optimizer and its schedule; loading it needs no
    import of the training modules (a fresh process imports ``keras_sequencer`` only)."""
    config = tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=training.build_optimizer(config, model, steps_per_epoch=5), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "best.keras")
    script = (
        "import sys, keras, keras_sequencer\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "s = m.optimizer._learning_rate\n"
        "print(type(s).__name__, int(m.optimizer.iterations), float(keras.ops.convert_to_numpy(s(12))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "best.keras")],
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, iterations, rate = proc.stdout.split()[-3:]
    assert (name, int(iterations)) == ("TimmCosineSchedule", 1)
    expected = float(keras.ops.convert_to_numpy(training.learning_rate_schedule(config, 5)(12)))
    assert float(rate) == pytest.approx(expected, rel=1e-6)


def test_weight_decay_skips_biases_and_norms():
    config = tiny_config("unused", lr=0.1, weight_decay=0.5, warmup_epochs=0, clip_grad=1.0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, keras.layers.LSTM(2)(keras.layers.Reshape((16, 3))(x)))
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    # Zero gradients: Adam's step is 0, so only the decoupled decay changes weights.
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    decayed = kept = 0
    for old, variable in zip(before, model.trainable_variables):
        new = keras.ops.convert_to_numpy(variable)
        if old.ndim <= 1:  # biases, LayerNorm scales/offsets
            np.testing.assert_array_equal(new, old, err_msg=variable.path)
            kept += 1
        else:
            np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-6, err_msg=variable.path)
            decayed += 1
    assert (decayed, kept) == (3, 4)  # Dense/LSTM kernels; Dense/LSTM bias, LN gamma/beta


def test_adamw_uses_the_epsilon_of_timms_adamw():
    """timm's ``create_optimizer_v2("adamw")`` is ``torch.optim.AdamW`` with its default eps."""
    import inspect

    torch = pytest.importorskip("torch")
    config = tiny_config("unused")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = training.build_optimizer(config, model, steps_per_epoch=10)
    assert optimizer.epsilon == inspect.signature(torch.optim.AdamW).parameters["eps"].default
    assert (optimizer.beta_1, optimizer.beta_2) == inspect.signature(torch.optim.AdamW).parameters["betas"].default


def test_mixed_precision_keeps_the_head_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = Sequencer2D(**TINY_TRAIN_ARCH, classes=3, input_shape=(16, 16, 3))
        model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
        assert model.get_layer("stages_0_blocks_0").compute_dtype == "float16"
        assert model.get_layer("head").compute_dtype == "float32"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        images = np.random.RandomState(0).rand(4, 16, 16, 3).astype("float32")
        # (training under mixed_float16 runs in the slow cifar10 example test)
        probs = keras.ops.convert_to_numpy(model(images))
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)


def test_train_pipeline_mixes_and_erases():
    images = np.full((8, 20, 20, 3), 128, np.uint8)
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    config = tiny_config("unused", mixup=0.8, cutmix=1.0, reprob=0.25)
    x, y = next(iter(training.train_pipeline(splits.train, config, 4, 8)))
    assert tuple(x.shape) == (8, 16, 16, 3) and tuple(y.shape) == (8, 4)
    y = y.numpy()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    assert (y.max(-1) < 1.0).any()  # labels were mixed

    erase = tiny_config(
        "unused", reprob=1.0, remode="const", hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0
    )
    x, y = next(iter(training.train_pipeline(splits.train, erase, 4, 8)))
    x = x.numpy()
    normalised = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    erased = (x == 0).all(-1)
    kept = np.isclose(x, normalised, atol=1e-5).all(-1)
    assert (erased | kept).all()  # every pixel is either the image or erased to 0
    assert ((erased.mean((1, 2)) > 0) & (erased.mean((1, 2)) < 0.5)).all()
    assert sorted(y.numpy().argmax(-1)) == sorted(np.arange(8) % 4) and (y.numpy().max(-1) == 1).all()


def test_train_pipeline_repeated_draws_anew_every_epoch_under_a_seed():
    """``fit``'s pipeline (``repeat=True``, one iterator) gives each epoch new
    MixUp draws; a new iterator per epoch replays the previous epoch's draws."""
    images = np.full((8, 20, 20, 3), 128, np.uint8)
    splits = data.from_arrays((images, np.arange(8)), (images, np.arange(8)))
    config = tiny_config("unused", mixup=0.8, cutmix=0.0)

    def lam(batch):  # 8 distinct labels: every row's largest target is max(lam, 1 - lam)
        return float(np.max(keras.ops.convert_to_numpy(batch[1])))

    keras.utils.set_random_seed(0)
    repeated = iter(training.train_pipeline(splits.train, config, 8, 8, repeat=True))
    epochs = [lam(next(repeated)) for _ in range(3)]  # one batch per epoch
    assert len(set(epochs)) == 3, epochs
    keras.utils.set_random_seed(0)
    once = training.train_pipeline(splits.train, config, 8, 8)
    assert lam(next(iter(once))) == lam(next(iter(once)))  # what repeat=True avoids


def test_eval_pipeline_resizes_and_centre_crops():
    image = np.random.RandomState(0).randint(0, 256, (1, 20, 20, 3)).astype("uint8")
    splits = data.from_arrays((image, [1]), (image, [1]))
    config = tiny_config("unused", image_size=(16, 16), crop_pct=0.8)  # resize 20 -> crop 16
    x, y = next(iter(training.eval_pipeline(splits.val, config, 3, 4)))
    expected = (image[:, 2:18, 2:18] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(y.numpy(), [[0, 1, 0]])


def test_nan_loss_stops_with_a_message(tmp_path):
    images = np.full((32, 16, 16, 3), np.nan, "float32")
    splits = data.from_arrays((images, np.arange(32) % 10), (images, np.arange(32) % 10))
    with pytest.raises(training.NonFiniteLossError, match="loss became nan at epoch 1, batch 1"):
        training.fit(tiny_config(tmp_path), splits)
    assert keras.config.dtype_policy().name == "float32"


def test_truncated_image_stops_training_naming_the_file(tmp_path):
    from test_data import make_image_folder, truncate_into_jpeg

    make_image_folder(str(tmp_path / "data"), per_class=8, size=(20, 20))
    truncated = tmp_path / "data" / "train" / "cat" / "5.jpg"
    truncate_into_jpeg(truncated)
    splits = data.load_image_folder(str(tmp_path / "data"))
    with pytest.raises(ValueError, match=f"Cannot decode image {truncated} "):
        training.fit(tiny_config(tmp_path / "out", batch_size=4, epochs=1, warmup_epochs=0), splits)


def read_csv_epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_train_command_resumes_a_killed_run(tmp_path, monkeypatch, capsys):
    """keras-sequencer train on an image folder with the recipe flags; the first run
    is SIGKILLed in the middle of epoch 2, the second resumes there."""
    from test_data import make_image_folder

    make_image_folder(str(tmp_path / "data"), per_class=8, size=(20, 20))
    out = tmp_path / "out"
    argv = [
        "train",
        str(tmp_path / "data"),
        *(
            f"--model sequencer2d_s -b 4 -j 1 --opt adamw --epochs 3 --sched cosine --img-size 16 "
            f"--drop-path 0.1 --lr 1e-3 --weight-decay 0.05 --remode pixel --reprob 0.25 "
            f"--smoothing 0.1 --mixup 0.8 --cutmix 1.0 --warmup-lr 1e-6 --warmup-epochs 1 "
            f"--cooldown-epochs 0 --clip-grad 1 --output {out}"
        ).split(),
    ]
    driver = os.path.join(REPO, "tests", "train_helpers.py")
    proc = subprocess.run(
        [sys.executable, driver, "1", *argv],
        env=dict(os.environ, PYTHONPATH=REPO),
        cwd=REPO,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILLed in the middle of epoch 2
    assert read_csv_epochs(out / "history.csv") == [0]
    assert os.path.isdir(out / "backup")

    monkeypatch.setattr(registry, "create_model", create_model_with_tiny_s)  # a tiny "S"
    seen = []
    fit = training.loop.fit
    monkeypatch.setattr(training.loop, "fit", lambda *a, **k: seen.append(fit(*a, **k)) or seen[-1])
    assert cli.main(argv) == 0
    model, history = seen[0]
    assert history.epoch == [1, 2]  # continued with epoch 2, not from the start
    assert read_csv_epochs(out / "history.csv") == [0, 1, 2]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3 * (16 // 4)
    assert not os.path.exists(out / "backup")  # removed once training completed
    assert tuple(keras.saving.load_model(out / "best.keras").output.shape) == (None, 2)
    with open(out / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    code = cli.main(["train", str(tmp_path / "data"), "--num-classes", "5", "--output", str(out)])
    assert code == 1
    assert "num_classes is 5 but the data has 2 classes" in capsys.readouterr().err


@pytest.mark.slow
def test_rand_augment_in_the_pipeline():
    """--aa rand-m9-mstd0.5-inc1 (slow: tracing keras.layers.RandAugment in tf.data)."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (8, 16, 16, 3)).astype("uint8")
    splits = data.from_arrays((images, np.arange(8) % 4), (images, np.arange(8) % 4))
    plain = dict(hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    config = tiny_config("unused", aa="rand-m9-mstd0.5-inc1", **plain)
    x, y = next(iter(training.train_pipeline(splits.train.take(8), config, 4, 8)))
    assert tuple(x.shape) == (8, 16, 16, 3) and np.isfinite(x.numpy()).all()
    originals = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    # the batch is shuffled: compare the sorted per-image means
    changed = np.abs(np.sort(x.numpy().mean((1, 2, 3))) - np.sort(originals.mean((1, 2, 3))))
    assert changed.max() > 1e-3  # the images were augmented


DIGITS_ARCH = dict(layers=(2,), patch_sizes=(8,), embed_dims=(48,), hidden_sizes=(16,), mlp_ratios=(2.0,))


@pytest.mark.slow
def test_learns_digits_from_scratch(tmp_path):
    """A Sequencer2D trained from scratch (the original initialisation, no augmentation)
    reaches >= 92% on held-out digits (chance: 10%; it lands at 95-97% on the
    machines we test on, the margin absorbs the CPU's float differences)."""
    import time

    from keras_sequencer import datasets

    (x_train, y_train), (x_val, y_val) = datasets.load_digits(32)
    to_uint8 = lambda x: (x * 255).round().astype("uint8")  # noqa: E731
    splits = data.from_arrays((to_uint8(x_train), y_train), (to_uint8(x_val), y_val))
    # Keras' torch backend runs keras.layers.LSTM step by step on CPU; the fused path
    # (same weights, exact parity, tests/test_speed_paths.py) keeps this run short there.
    arch = dict(DIGITS_ARCH, implementation="fused") if keras.backend.backend() == "torch" else DIGITS_ARCH
    config = training.TrainConfig(
        model="digits",
        arch=arch,
        image_size=(32, 32),
        crop_pct=1.0,
        batch_size=32,
        workers=2,
        epochs=12,
        lr=4e-3,
        warmup_lr=1e-4,
        warmup_epochs=1,
        cooldown_epochs=0,
        sched_on_updates=True,
        weight_decay=0.05,
        smoothing=0.1,
        hflip=0.0,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        color_jitter=0.0,
        output=str(tmp_path),
        verbose=0,
    )
    start = time.time()
    model, _ = training.fit(config, splits)
    images = training.eval_pipeline(splits.val, config, 10, 256)
    predictions = np.argmax(model.predict(images, verbose=0), -1)
    accuracy = float(np.mean(predictions == y_val))
    print(f"digits: validation accuracy {accuracy:.4f} in {time.time() - start:.0f} s")
    assert accuracy >= 0.92


def test_eval_batches_trimmed_to_split_over_devices():
    images = np.zeros((9, 16, 16, 3), "uint8")
    splits = data.from_arrays((images, [0] * 9), (images, [0] * 9))
    config = tiny_config("unused")
    sizes = lambda ds: [int(x.shape[0]) for x, _ in ds]  # noqa: E731
    assert sizes(training.eval_pipeline(splits.val, config, 2, 4)) == [4, 4, 1]
    assert sizes(training.eval_pipeline(splits.val, config, 2, 4, batch_multiple=2)) == [4, 4]
    assert sizes(training.eval_pipeline(splits.val, config, 2, 5, batch_multiple=2)) == [4, 4]  # 5 -> 4, 4


@pytest.mark.slow  # compiling the full CIFAR model's train and test steps
def test_train_command_trains_any_registered_model(tmp_path, capsys):
    """--model takes every registered name: the CIFAR-scale VanillaSequencer at 32 px,
    one epoch on a tiny folder; the default warmup (3) is shortened to the one epoch."""
    from test_data import make_image_folder

    make_image_folder(str(tmp_path / "data"), per_class=4, size=(36, 36))
    out = tmp_path / "out"
    code = cli.main(
        [
            "train",
            str(tmp_path / "data"),
            "--model",
            "vanilla_bilstm_cifar",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--cooldown-epochs",
            "0",
            "-b",
            "4",
            "-j",
            "1",
            "--output",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "warmup shortened to the run's 1 epoch(s)" in captured.out
    assert str(out) in captured.out  # the output folder is printed
    assert read_csv_epochs(out / "history.csv") == [0]
    model = keras.saving.load_model(out / "best.keras")
    assert model.name == "vanilla_bilstm_cifar"
    assert tuple(model.input_shape) == (None, 32, 32, 3) and tuple(model.output.shape) == (None, 2)


def test_train_flags_default_to_the_models_input_size_and_cap_the_warmup(capsys):
    _, cifar = parse_train("--model sequencer2d_cifar_small --epochs 2")
    assert cifar.image_size == (32, 32) and cifar.warmup_epochs == 2
    assert capsys.readouterr().out.count("warmup shortened") == 1
    _, imagenet = parse_train("--model v_sequencer_s --epochs 5")
    assert imagenet.image_size == (224, 224) and imagenet.warmup_epochs == 3
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit):
        parse_train("--model sequencer2d_xl")
    assert "invalid choice: 'sequencer2d_xl'" in capsys.readouterr().err


def test_config_and_build_model_take_registered_names():
    with pytest.raises(
        ValueError, match="Unknown model 'sequencer2d_cifar_smal'. Did you mean sequencer2d_cifar_small"
    ):
        training.TrainConfig(model="sequencer2d_cifar_smal")
    config = training.TrainConfig(model="sequencer2d_cifar_small", image_size=(32, 32), drop_path=0.1)
    model = training.build_model(config, 7)
    assert model.name == "sequencer2d_cifar_small" and tuple(model.output.shape) == (None, 7)
    assert tuple(model.input_shape) == (None, 32, 32, 3)
    reference = registry.create_model("sequencer2d_cifar_small", classes=7, input_shape=(32, 32, 3))
    assert model.count_params() == reference.count_params()


def test_without_matplotlib_the_curves_are_skipped_and_training_finishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    images = np.random.RandomState(0).randint(0, 256, (16, 16, 16, 3)).astype("uint8")
    splits = data.from_arrays((images, np.arange(16) % 2), (images[:8], np.arange(8) % 2))
    model, history = training.fit(tiny_config(tmp_path, epochs=2, warmup_epochs=0), splits)
    assert history.epoch == [0, 1]
    assert read_csv_epochs(tmp_path / "history.csv") == [0, 1]
    assert (tmp_path / "best.keras").exists() and not (tmp_path / "curves.png").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1 and "curves.png skipped" in warnings[0]
    assert 'pip install "keras-sequencer[train]"' in warnings[0]


@pytest.mark.parametrize(
    "module, needed_for", [("tensorflow_datasets", "--dataset tfds/cifar10"), ("tensorflow", "any run")]
)
def test_missing_package_fails_before_any_work_with_one_line(tmp_path, monkeypatch, capsys, module, needed_for):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    out = tmp_path / "out"
    code = cli.main(["train", str(tmp_path), "--dataset", "tfds/cifar10", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("keras-sequencer train: error: ") and f"needs the {module} package" in err
    assert 'pip install "keras-sequencer[train]"' in err
    assert not out.exists()


def test_one_epoch_curves_are_visible(tmp_path, monkeypatch):
    """A one-epoch history plots every series with markers (a line through one
    point draws nothing)."""
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.figure

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self) or save(self, *a, **k)
    )
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.25,1.4\n")
    training.plot_history(str(csv_path), str(tmp_path / "curves.png"))
    lines = [line for axis in figures[0].axes for line in axis.get_lines()]
    assert len(lines) == 4 and all(len(line.get_xdata()) == 1 for line in lines)
    assert all(line.get_marker() not in (None, "", " ", "None") for line in lines)
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_initial_checkpoint_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.weights.h5"
    code = cli.main(["train", str(tmp_path), "--initial-checkpoint", str(missing), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"keras-sequencer train: error: --initial-checkpoint {missing}: no such file"
    assert not out.exists()
