"""``keras-sequencer train``: a killed run resumed, any registered model trained, and the
one-line errors before any work."""

import os
import subprocess
import sys

import keras
import pytest

from keras_sequencer import cli, registry, training
from tests.helpers import REPO, create_model_with_tiny_s, read_csv_epochs, tiny_stand_in


@pytest.mark.slow  # a killed training process, then the run resumed, re-run and restarted
def test_train_command_resumes_a_killed_run(tmp_path, monkeypatch, capsys):
    """keras-sequencer train on an image folder with the recipe flags; the first run
    is SIGKILLed in the middle of epoch 2, the second resumes there."""
    from tests.helpers import make_image_folder

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
    driver = os.path.join(REPO, "tests", "train_driver.py")
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

    # the same command again: the run is finished, nothing is trained or appended
    monkeypatch.setattr(training.loop, "build_model", lambda *a: pytest.fail("a finished run was trained again"))
    assert cli.main(argv) == 0
    assert f"{out} holds a finished run of 3 epochs; not training again" in capsys.readouterr().out
    assert read_csv_epochs(out / "history.csv") == [0, 1, 2]
    assert cli.main([*argv, "--epochs", "4"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"keras-sequencer train: error: {out} holds a finished run of 3 epochs, not the 4")
    assert "--restart" in line
    monkeypatch.undo()
    monkeypatch.setattr(registry, "create_model", create_model_with_tiny_s)
    assert cli.main([*argv, "--epochs", "1", "--warmup-epochs", "0", "--restart"]) == 0
    assert read_csv_epochs(out / "history.csv") == [0]  # trained from the start, not appended


def test_train_help_shows_every_default_in_timm_s_groups(capsys):
    import re

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    body = capsys.readouterr().out.split("Dataset parameters:")[1]
    for group in ("Model parameters", "Optimizer parameters", "Learning rate schedule", "Miscellaneous parameters"):
        assert f"\n{group}" in body
    # each flag's help, up to the next flag: "  --epochs EPOCHS  epochs ... (default: 300)"
    entry = re.compile(r"\n  (-[^\n]*?)(?:  |\n)(.*?)(?=\n  -|\n\n|$)", re.S)
    helps = {m[1]: " ".join(m[2].split()) for m in entry.finditer(body)}
    for flag, default in (
        ("--epochs EPOCHS", "(default: 300)"),
        ("-b BATCH_SIZE, --batch-size BATCH_SIZE", "(default: 128)"),
        ("--lr LR", "(default: 0.001)"),
        ("--cooldown-epochs COOLDOWN_EPOCHS", "(default: 0)"),
        ("--output OUTPUT", "(default: output/train)"),
        ("--warmup-epochs WARMUP_EPOCHS", "(default: 3, at most --epochs)"),
    ):
        assert helps[flag.strip()].endswith(default), (flag, helps.get(flag))


@pytest.mark.slow
def test_train_command_trains_any_registered_model(tmp_path, capsys, monkeypatch):
    """--model takes every registered name: the CIFAR-scale VanillaSequencer's name,
    defaults and 32 px input (built as a micro stand-in of its family: the command's
    handling of the name is the subject), one epoch on a tiny folder; the default
    warmup (3) is shortened to the one epoch."""
    monkeypatch.setattr(registry, "create_model", tiny_stand_in)
    from tests.helpers import make_image_folder

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


def test_missing_initial_checkpoint_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.weights.h5"
    code = cli.main(["train", str(tmp_path), "--initial-checkpoint", str(missing), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"keras-sequencer train: error: --initial-checkpoint {missing}: no such file"
    assert not out.exists()
