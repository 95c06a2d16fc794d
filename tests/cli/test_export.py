"""``keras-sequencer export``: the artefact's path, size and difference from the Keras
model, free sizes, and one-line errors before a model is built."""

import dataclasses

import numpy as np
import pytest

from keras_sequencer import cli, export, registry, variants
from tests.helpers import MICRO_ARCH, requires_export

pytestmark = requires_export
NAME = "sequencer2d_export_micro"
# The largest difference an artefact may have from ``model.predict`` (fp32).
TOLERANCE = 1e-4


def expected(model, x):
    return np.asarray(model.predict(x, verbose=0))


@pytest.fixture
def micro_weights(monkeypatch, tmp_path):
    """A registered micro model ``NAME`` (input size 16) and a ``.weights.h5`` of it."""
    micro = dataclasses.replace(
        variants.VARIANTS["sequencer2d_s"], name=NAME, arch=dict(MICRO_ARCH), input_size=16, weights=None
    )
    monkeypatch.setitem(variants.VARIANTS, NAME, micro)
    path = str(tmp_path / "micro.weights.h5")
    registry.create_model(NAME, classes=7, implementation="keras").save_weights(path)
    return path


@pytest.mark.slow
def test_cli_export_reports_path_size_and_difference(tmp_path, capsys, micro_weights):
    output = str(tmp_path / "micro.tflite")
    argv = [
        "export",
        NAME,
        "--weights",
        micro_weights,
        "--classes",
        "7",
        "--format",
        "litert",
        "--output",
        output,
        "--include-preprocessing",
        "--input-size",
        "16",
        "24",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote litert to {output} (" in out and "kB)" in out
    assert "input (batch, 16, 24, 3) float32" in out
    difference = float(out.rsplit(":", 1)[1])
    assert 0 <= difference < TOLERANCE
    # the artefact normalises raw pixels itself, as the Keras model with preprocessing
    model = registry.create_model(NAME, weights=micro_weights, classes=7, include_preprocessing=True)
    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    np.testing.assert_allclose(export.run_exported(output, "litert", x), expected(model, x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_model", "--weights", "{w}"], "--model no_such_model"),
        ([NAME], f"--model {NAME} has no published ImageNet weights; give --weights PATH"),
        ([NAME, "--weights", "{tmp}/missing.h5"], "--weights {tmp}/missing.h5: no such file"),
        (["{tmp}/missing.keras"], "{tmp}/missing.keras: no such file"),
        ([NAME, "--weights", "{w}", "--input-size", "1", "2", "3"], "--input-size takes N or HEIGHT WIDTH"),
        ([NAME, "--weights", "{w}", "--output", "{tmp}/no/dir/m.onnx"], "folder {tmp}/no/dir does not exist"),
        (["{tmp}/m.keras", "--include-preprocessing"], "--include-preprocessing applies to a model name"),
    ],
)
def test_cli_errors_are_one_line_before_a_model_is_built(tmp_path, capsys, monkeypatch, micro_weights, argv, message):
    def fail(*args, **kwargs):
        raise AssertionError("a model was built before the inputs were checked")

    monkeypatch.setattr(registry, "create_model", fail)
    (tmp_path / "m.keras").write_bytes(b"")
    fill = dict(tmp=str(tmp_path), w=micro_weights)
    argv = [a.format(**fill) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "m.onnx")]
    assert cli.main(["export", *argv, "--format", "onnx"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("keras-sequencer export: error: ")
    assert message.format(**fill) in err


@pytest.mark.slow
def test_cli_exports_a_free_size_and_checks_it_at_the_registered_size(tmp_path, capsys, micro_weights):
    output = str(tmp_path / "free.onnx")
    argv = [
        "export",
        NAME,
        "--weights",
        micro_weights,
        "--classes",
        "7",
        "--format",
        "onnx",
        "--output",
        output,
        "--input-size",
        "any",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "input (batch, any, any, 3) float32" in out and "on a batch of 2 at 16x16: " in out
    difference = float(out.strip().rsplit(": ", 1)[1])
    assert difference < TOLERANCE
    model = registry.create_model(NAME, weights=micro_weights, classes=7)
    x = np.random.default_rng(0).normal(0, 1, (2, 24, 40, 3)).astype("float32")
    np.testing.assert_allclose(export.run_exported(output, "onnx", x), expected(model, x), atol=TOLERANCE, rtol=0)
    litert = [
        "export",
        NAME,
        "--weights",
        micro_weights,
        "--format",
        "litert",
        "--output",
        str(tmp_path / "m.tflite"),
        "--input-size",
        "any",
    ]
    assert cli.main(litert) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "keras-sequencer export: error: --input-size any: litert artefacts take a fixed size; give N or HEIGHT WIDTH"
    )
