"""keras_sequencer.training.config: the official commands and the recipe's flags parsed
into a TrainConfig, and the values that cannot be honoured."""

import pytest

from keras_sequencer import cli, registry, training

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


def test_config_and_command_line_agree_on_short_runs():
    """The default warmup (3) is shortened to a shorter run in Python as on the command
    line; a warmup given explicitly must fit; no cooldown unless asked (current timm)."""
    config = training.TrainConfig(epochs=1)
    assert (config.epochs, config.warmup_epochs, config.cooldown_epochs) == (1, 1, 0)
    assert (parse_train("--epochs 1")[1].warmup_epochs, training.TrainConfig().warmup_epochs) == (1, 3)
    with pytest.raises(ValueError, match=r"warmup_epochs \(3\) cannot exceed epochs \(1\)"):
        training.TrainConfig(epochs=1, warmup_epochs=3)
    assert parse_train("--epochs 2")[1].cooldown_epochs == 0


def test_a_batch_larger_than_the_data_is_lowered_with_a_notice(capsys):
    config = training.TrainConfig(batch_size=128)
    assert training.fit_batch_to_data(config, 48).batch_size == 48
    notice = "batch size lowered from 128 to 48 per device: the training set has only 48 images"
    assert notice in capsys.readouterr().out
    mixing = training.TrainConfig(batch_size=128, mixup=0.8)
    assert training.fit_batch_to_data(mixing, 47).batch_size == 46  # MixUp pairs the images: even
    assert training.fit_batch_to_data(mixing, 47, num_replicas=2).batch_size == 23
    assert training.fit_batch_to_data(config, 200) is config
    with pytest.raises(ValueError, match="fewer than the 2 replicas"):
        training.fit_batch_to_data(config, 1, num_replicas=2)
