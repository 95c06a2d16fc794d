"""``keras-sequencer preset NAME --output DIR``: a KerasHub preset folder with its
model card; one-line errors before any model is built."""

import hashlib
import os
import sys

import pytest

from keras_sequencer import cli
from tests.cli.helpers import error_lines
from tests.helpers import URL_PATH, VARIANT, requires_timm


@pytest.mark.parametrize(
    "argv, message",
    [
        (["preset", "sequencer2d_xs_imagenet", "--output", "{tmp}/out"], "unknown preset 'sequencer2d_xs_imagenet'"),
        (["preset", "sequencer2d_s_imagenet", "--output", "{tmp}"], "--output {tmp}: is not empty"),
        (["preset", "sequencer2d_s_imagenet", "--output", "{tmp}/file"], "--output {tmp}/file: is a file"),
    ],
)
def test_errors_are_one_line_before_any_model_is_built(tmp_path, capsys, monkeypatch, argv, message):
    pytest.importorskip("keras_hub")
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("keras_sequencer.hub.imagenet_classifier", None, raising=False)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"keras-sequencer preset: error: {message.format(tmp=tmp_path)}")


def test_missing_keras_hub_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if not installed
    assert cli.main(["preset", "sequencer2d_s_imagenet", "--output", str(tmp_path / "out")]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (
        "keras-sequencer preset: error: needs keras-hub, which is not installed: "
        'pip install "keras-sequencer[hub]" (or pip install keras-hub)'
    )


@requires_timm
def test_preset_writes_a_folder_ready_for_upload(checkpoint, server, register, tmp_path, capsys):
    pytest.importorskip("keras_hub")
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    register(hashlib.sha256(body).hexdigest(), server.base_url)
    out = tmp_path / "preset"
    assert cli.main(["preset", f"{VARIANT}_imagenet", "--output", str(out)]) == 0
    assert f"wrote {out} (" in capsys.readouterr().out
    assert {"README.md", "config.json", "task.json", "model.weights.h5", "image_converter.json"} <= set(os.listdir(out))
    card = (out / "README.md").read_text()
    assert f"test/{VARIANT}.in1k" in card and "license: apache-2.0" in card and "0123456789abcdef" in card
