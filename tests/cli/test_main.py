"""keras_sequencer.cli: one-line errors, ``--debug``, inputs checked before a model is
built, and every sub-command registered.

The sub-commands' own behaviour is in ``test_predict.py``, ``test_validate.py``,
``test_train.py`` and ``test_export.py`` beside this file."""

import pytest

from keras_sequencer import cli, registry
from keras_sequencer.cli.common import CLIError, one_line
from tests.cli.helpers import error_lines, write_images

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
