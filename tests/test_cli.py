"""The ``keras-sequencer`` command line: one-line errors, ``--debug``, inputs checked
before a model is built, and batches that go on past unreadable files.

Accuracy against timm is in ``test_imagenet_cli.py``; these tests use a tiny
registered model with random weights saved to a ``.weights.h5`` file.
"""

import dataclasses
import os

import numpy as np
import pytest

from keras_sequencer import cli, registry, variants
from keras_sequencer.cli.common import CLIError, one_line
from tests.helpers import TINY_ARCH

NAME = "sequencer2d_cli_tiny"


def _register_tiny(monkeypatch):
    tiny = dataclasses.replace(
        variants.VARIANTS["sequencer2d_s"], name=NAME, arch=dict(TINY_ARCH), input_size=28, weights=None
    )
    monkeypatch.setitem(variants.VARIANTS, NAME, tiny)


@pytest.fixture
def tiny_weights(monkeypatch, tmp_path):
    """Path of a ``.weights.h5`` of the tiny model registered as ``NAME`` (1000 classes)."""
    _register_tiny(monkeypatch)
    path = str(tmp_path / "tiny.weights.h5")
    registry.create_model(NAME, classes=1000).save_weights(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is built."""

    def fail(*args, **kwargs):
        raise AssertionError("a model was built before the inputs were checked")

    monkeypatch.setattr(registry, "create_model", fail)


def _images(folder, names, size=(40, 30)):
    """Writes readable JPEG/PNG files under ``folder``; returns their paths."""
    from PIL import Image

    paths = []
    for seed, name in enumerate(names):
        rng = np.random.RandomState(seed)
        path = os.path.join(folder, name)
        Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3)).astype("uint8")).save(path)
        paths.append(path)
    return paths


def _bad_files(folder):
    """``(not an image, truncated JPEG, empty file)`` under ``folder``."""
    not_image = os.path.join(folder, "notimage.jpg")
    with open(not_image, "w") as f:
        f.write("this is text, not a JPEG\n")
    (good,) = _images(folder, ["source.jpg"], size=(200, 150))
    truncated = os.path.join(folder, "truncated.jpg")
    with open(good, "rb") as f:
        data = f.read()
    os.remove(good)
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])  # a valid header, then the data stops
    empty = os.path.join(folder, "empty.png")
    open(empty, "wb").close()
    return not_image, truncated, empty


def _error_lines(err):
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert all(line.startswith("keras-sequencer ") and ": error: " in line for line in lines), lines
    return lines


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
    (img,) = _images(str(tmp_path), ["cat.jpg"])
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    fill = dict(img=img, tmp=str(tmp_path), ckpt=str(ckpt))
    assert cli.main([arg.format(**fill) for arg in argv]) == 1
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert line.startswith(message.format(**fill))
    assert captured.out == ""


def test_debug_shows_the_error_itself(tmp_path, no_model):
    (img,) = _images(str(tmp_path), ["cat.jpg"])
    for argv in (
        ["--debug", "predict", img, "--weights", "/x.weights.h5"],
        ["predict", img, "--weights", "/x.weights.h5", "--debug"],
    ):
        with pytest.raises(CLIError, match="--weights /x.weights.h5: no such file"):
            cli.main(argv)


def test_a_library_error_is_printed_as_one_line(tmp_path, capsys, monkeypatch):
    """What the library raises (e.g. a weights download that failed offline) reaches
    the user as one line, multi-line messages included."""
    (img,) = _images(str(tmp_path), ["cat.jpg"])

    def offline(*args, **kwargs):
        raise OSError("Could not download sequencer2d_s.safetensors.\n  Put the file at /cache/x.")

    monkeypatch.setattr(registry, "create_model", offline)
    assert cli.main(["predict", img]) == 1
    assert _error_lines(capsys.readouterr().err) == [
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


def test_predict_classifies_every_readable_file_and_names_the_others(tmp_path, capsys, tiny_weights):
    good = _images(str(tmp_path), ["good.jpg", "good2.png", "gray.png"])
    from PIL import Image

    Image.open(good[2]).convert("L").save(good[2])  # grayscale: read as RGB, not an error
    not_image, truncated, empty = _bad_files(str(tmp_path))
    missing = str(tmp_path / "missing.jpg")
    argv = [
        "predict",
        good[0],
        not_image,
        truncated,
        good[1],
        empty,
        missing,
        good[2],
        "--model",
        NAME,
        "--weights",
        tiny_weights,
        "--top",
        "2",
        "-b",
        "2",
    ]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert [line for line in out if not line.startswith("  ")] == good  # each good file, in order
    assert len(out) == 3 * 3
    errors = _error_lines(captured.err)
    assert len(errors) == 5
    by_file = {path: line for path in (not_image, truncated, empty, missing) for line in errors if f" {path}: " in line}
    assert by_file[not_image].endswith(f"{not_image}: not an image file Pillow can read")
    assert by_file[empty].endswith(f"{empty}: not an image file Pillow can read")
    assert by_file[missing].endswith(f"{missing}: no such file")
    assert "truncated" in by_file[truncated].split(f"{truncated}: ")[1]
    assert errors[-1] == "keras-sequencer predict: error: 4 of 7 images could not be read"


def test_predict_with_no_readable_file_builds_no_model(tmp_path, capsys, no_model):
    not_image, _, empty = _bad_files(str(tmp_path))
    assert cli.main(["predict", not_image, empty]) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 3 and errors[-1].endswith("2 of 2 images could not be read")


def test_predict_debug_raises_on_a_bad_file(tmp_path, tiny_weights):
    from PIL import UnidentifiedImageError

    not_image, truncated, _ = _bad_files(str(tmp_path))
    with pytest.raises(OSError, match="truncated"):
        cli.main(["--debug", "predict", truncated, "--model", NAME, "--weights", tiny_weights])
    with pytest.raises(UnidentifiedImageError):
        cli.main(["--debug", "predict", not_image, "--model", NAME, "--weights", tiny_weights])


def test_validate_leaves_out_unreadable_files(tmp_path, capsys, tiny_weights):
    import json

    for wnid in ("n01440764", "n01443537"):
        os.makedirs(tmp_path / "data" / "val" / wnid)
        _images(str(tmp_path / "data" / "val" / wnid), ["a.JPEG", "b.png"])
    not_image, truncated, empty = _bad_files(str(tmp_path / "data" / "val" / "n01440764"))
    results_file = str(tmp_path / "results.json")
    argv = [
        "validate",
        str(tmp_path / "data"),
        "--model",
        NAME,
        "--weights",
        tiny_weights,
        "-b",
        "3",
        "--results-file",
        results_file,
    ]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "(4 images," in captured.out
    errors = _error_lines(captured.err)
    assert len(errors) == 4
    assert any(line.endswith(f"{not_image}: not an image file Pillow can read") for line in errors)
    assert any(line.endswith(f"{empty}: not an image file Pillow can read") for line in errors)
    assert any(f"{truncated}: " in line and "truncated" in line for line in errors)
    assert errors[-1] == "keras-sequencer validate: error: 3 of 7 images could not be read"
    with open(results_file) as f:
        results = json.load(f)
    assert results["images"] == 4 and results["input_size"] == [3, 28, 28]
    assert sorted(bad["path"] for bad in results["unreadable"]) == sorted([not_image, truncated, empty])
