"""keras_sequencer.cli: one-line errors, ``--debug``, inputs checked before a model is
built, every sub-command registered, and the transfer-learning loop as a new user plays it
(a folder of photos -> ``train`` for N epochs -> ``predict`` with the trained file, printing
the folder's class names -> ``validate`` -> ``export`` to ONNX, on the tests' tiny model).

The sub-commands' own behaviour is in ``test_predict.py``, ``test_validate.py``,
``test_train.py``, ``test_export.py`` and ``test_preset.py`` beside this file."""

import importlib.util
import json
import re

import pytest

from keras_sequencer import cli, registry
from keras_sequencer.cli.common import CLIError, one_line
from tests.cli.helpers import NAME, error_lines, predictions, register_tiny, write_images
from tests.helpers import EXPORT_PACKAGES, TINY_TRAIN_ARCH, make_image_folder, read_csv_epochs

# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["predict", "{img}", "--weights", "/nonexistent/x.weights.h5"],
            "keras-sequencer predict: error: --weights /nonexistent/x.weights.h5: no such file",
        ),
        (
            ["predict", "{img}", "--weights", "{tmp}"],
            "keras-sequencer predict: error: --weights {tmp}: is a directory, expected a file",
        ),
        (
            ["predict", "{img}", "--model", "sequencer2d_xs"],
            "keras-sequencer predict: error: --model sequencer2d_xs: Unknown model 'sequencer2d_xs'. Did you mean",
        ),
        (
            ["predict", "{img}", "--model", "sequencer2d_s_392"],
            "keras-sequencer predict: error: --model sequencer2d_s_392 has no published ImageNet weights",
        ),
        (["predict", "{img}", "--top", "0"], "keras-sequencer predict: error: --top must be at least 1"),
        (["validate", "{tmp}/missing"], "keras-sequencer validate: error: DATA_DIR {tmp}/missing: no such directory"),
        (
            ["validate", "{tmp}", "--weights", "/nonexistent.pth"],
            "keras-sequencer validate: error: --weights /nonexistent.pth: no such file",
        ),
        (
            ["validate", "{tmp}", "--input-size", "1", "32", "32"],
            "keras-sequencer validate: error: --input-size must have 3 channels (RGB); got 1.",
        ),
        (
            ["convert", "{tmp}/missing.pth", "{tmp}/out.weights.h5"],
            "keras-sequencer convert: error: {tmp}/missing.pth: no such file",
        ),
        (
            ["convert", "{img}", "{tmp}/out.weights.h5"],
            "keras-sequencer convert: error: {img}: expected a .safetensors, .pth, .pt, .bin checkpoint",
        ),
        (
            ["convert", "{ckpt}", "{tmp}/out.h5"],
            "keras-sequencer convert: error: OUTPUT {tmp}/out.h5: must end in .weights.h5",
        ),
    ],
)
def test_errors_are_one_line_before_any_model_is_built(tmp_path, capsys, no_model, argv, message):
    (img,) = write_images(str(tmp_path), ["cat.jpg"])
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    fill = dict(img=img, tmp=str(tmp_path), ckpt=str(ckpt))
    assert cli.main([arg.format(**fill) for arg in argv]) == 1
    captured = capsys.readouterr()
    (line,) = error_lines(captured.err)
    assert line.startswith(message.format(**fill))
    assert captured.out == ""


def test_debug_shows_the_error_itself(tmp_path, no_model):
    (img,) = write_images(str(tmp_path), ["cat.jpg"])
    for argv in (
        ["--debug", "predict", img, "--weights", "/x.weights.h5"],
        ["predict", img, "--weights", "/x.weights.h5", "--debug"],
    ):
        with pytest.raises(CLIError, match="--weights /x.weights.h5: no such file"):
            cli.main(argv)


def test_a_library_error_is_printed_as_one_line(tmp_path, capsys, monkeypatch):
    """What the library raises (e.g. a weights download that failed offline) reaches
    the user as one line, multi-line messages included."""
    (img,) = write_images(str(tmp_path), ["cat.jpg"])

    def offline(*args, **kwargs):
        raise OSError("Could not download sequencer2d_s.safetensors.\n  Put the file at /cache/x.")

    monkeypatch.setattr(registry, "create_model", offline)
    assert cli.main(["predict", img]) == 1
    assert error_lines(capsys.readouterr().err) == [
        "keras-sequencer predict: error: Could not download sequencer2d_s.safetensors. Put the file at /cache/x."
    ]
    with pytest.raises(OSError, match="Could not download"):
        cli.main(["predict", img, "--debug"])


def test_argparse_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: IMAGE" in capsys.readouterr().err


def test_one_line():
    assert one_line(ValueError("a\n  b\tc ")) == "a b c"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x")) == "No such file or directory: /x"
    assert one_line(KeyError()) == "KeyError"


def test_every_sub_command_is_registered():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(cli.COMMAND_MODULES) <= set(commands)
    for name in cli.COMMAND_MODULES:
        assert callable(commands[name].get_default("func")), name


# ---------------------------------------------------------------- bad files in a batch


def test_argument_errors_name_the_sub_command_before_keras_is_imported(tmp_path):
    """As the console script: a mistyped flag gets the sub-command's usage and error,
    exit 2, without importing Keras or TensorFlow (so at once)."""
    from tests.helpers import run_hidden

    proc = run_hidden(
        tmp_path,
        """
        from keras_sequencer.cli import main
        try:
            main(["predict", "photo.jpg", "--topk", "3"])
        except SystemExit as exit:
            print(exit.code, "keras" in sys.modules, "tensorflow" in sys.modules, "jax" in sys.modules)
        """,
        script_name="keras-sequencer",
        KERAS_BACKEND="torch",
    )
    assert proc.stdout.split() == ["2", "False", "False", "False"], proc.stderr[-2000:]
    assert proc.stderr.startswith("usage: keras-sequencer predict ")
    assert proc.stderr.strip().splitlines()[-1] == "keras-sequencer predict: error: unrecognized arguments: --topk 3"


def test_an_unknown_keras_backend_is_one_line(tmp_path):
    from tests.helpers import run_hidden

    proc = run_hidden(
        tmp_path,
        """
        from keras_sequencer.cli import main
        sys.exit(main())
        """,
        script_name="keras-sequencer",
        KERAS_BACKEND="jaxx",
    )
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("keras-sequencer: error: KERAS_BACKEND=jaxx is not a Keras backend; set it to jax")


# The class folders of the transfer-learning loop.
CLASSES = ("cat", "dog", "fox")


@pytest.mark.slow
def test_folder_to_trained_classifier_on_the_command_line(tmp_path, monkeypatch, capsys):
    register_tiny(monkeypatch, arch=TINY_TRAIN_ARCH, input_size=16)
    data, out = tmp_path / "photos", tmp_path / "runs" / "small"
    make_image_folder(str(data), classes=CLASSES, per_class=4, size=(24, 20))
    photos = write_images(str(tmp_path), ["new1.jpg", "new2.png"], size=(40, 30))

    # 2. train for 2 epochs, with the default batch (128), larger than the 12 images
    argv = ["train", str(data), "--model", NAME, "--epochs", "2", "-j", "1", "--output", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "batch size lowered from 128 to 12 per device" in captured.out
    assert "keras-sequencer: 2 epochs: 2 of warmup" in captured.out
    assert read_csv_epochs(out / "history.csv") == [0, 1]  # N epochs run, no more
    best = str(out / "best.keras")

    # 3. predict with the trained file: the folder's class names, probabilities
    assert cli.main(["predict", *photos, "--weights", best, "--top", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    found = predictions(captured.out)
    assert list(found) == photos
    for top in found.values():
        assert sorted(label for _, label in top) == sorted(CLASSES)
        assert sum(p for p, _ in top) == pytest.approx(1.0, abs=1e-3)
        assert [p for p, _ in top] == sorted((p for p, _ in top), reverse=True)
    # the same file as --model; its weights alone, with its head size read off the file
    assert cli.main(["predict", photos[0], "--model", best, "--top", "1"]) == 0
    assert predictions(capsys.readouterr().out)[photos[0]][0][1] == found[photos[0]][0][1]
    import keras

    trained = keras.saving.load_model(best)
    assert trained.class_names == list(CLASSES)
    trained.save_weights(str(tmp_path / "best.weights.h5"))
    weights_argv = ["predict", photos[0], "--model", NAME, "--weights", str(tmp_path / "best.weights.h5")]
    assert cli.main([*weights_argv, "--top", "1"]) == 0
    top = predictions(capsys.readouterr().out)[photos[0]][0]
    assert top[1] == str(CLASSES.index(found[photos[0]][0][1]))  # no names in a weights file: the index
    # a head the weights do not have is an error, never ImageNet labels
    assert cli.main([*weights_argv, "--num-classes", "1000"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "has a 3-class classifier, not --num-classes 1000" in line

    # 4. validate with the trained file: the folders labelled by the model's class names
    results = tmp_path / "results.json"
    assert cli.main(["validate", str(data), "--weights", best, "--results-file", str(results)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith(f"{NAME}: top-1 ")
    report = json.loads(results.read_text())
    assert report["images"] == 12 and report["input_size"] == [3, 16, 16] and report["top5"] == 100.0

    # 5. export to ONNX, checked by ONNX Runtime against Keras
    if any(importlib.util.find_spec(m) is None for m in EXPORT_PACKAGES):
        pytest.skip("export needs the [export] extra")
    onnx = tmp_path / "small.onnx"
    assert cli.main(["export", best, "--format", "onnx", "--output", str(onnx)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and onnx.exists()
    difference = float(re.search(r"max abs difference .*: ([0-9.e+-]+)$", captured.out.strip())[1])
    assert difference < 1e-4
