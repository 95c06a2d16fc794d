"""``model.export`` to ONNX, SavedModel and LiteRT on every backend, run by each
format's own runtime, and ``keras-sequencer export``.

One micro model is exported once per format (module-scoped fixtures) and
compared with ``model.predict`` at batch 1 and 3 at a non-square size, and
once with a free image size at three sizes; the TensorFlow graph every format stores is compared directly for the other
architectures (GRU, RNN, unions, VanillaSequencer, position embedding,
``include_top=False``, channels-first, int8-quantized Dense layers).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_sequencer import export
from keras_sequencer.models import Sequencer2D, VanillaSequencer
from tests.helpers import MICRO_ARCH, REPO, quick_first, requires_export, run_in_one_backend_pass

pytestmark = requires_export

# The micro model at SIZE (non-square): grids of 4x6 and 2x3, so the columns and rows
# run as separate recurrences; square inputs batch them into one.
MICRO = MICRO_ARCH
SIZE = (16, 24)
TOLERANCE = 1e-4
# The int8 model quantizes each Dense input row at run time (scale max|x| / 127). A value
# within float rounding of a level boundary can round to the neighbouring level in one
# runtime and not in the other: one level moves that image's outputs by a few 1e-3.
INT8_TOLERANCE = 1e-2


def assert_matches(name, actual, desired, atol=TOLERANCE):
    """``actual`` equals ``desired`` within ``atol``; for the int8 model, at least half
    of the images within ``atol`` and every image within one activation level
    (INT8_TOLERANCE). An export that lost the quantization misses every image (the
    float and int8 micro models differ by 4e-3 to 8e-3 per image, far above ``atol``)."""
    if name != "int8":
        np.testing.assert_allclose(actual, desired, atol=atol, rtol=0)
        return
    per_image = np.abs(np.asarray(actual) - np.asarray(desired)).reshape(len(desired), -1).max(-1)
    assert np.mean(per_image <= atol) >= 0.5 and per_image.max() <= INT8_TOLERANCE, per_image


SUFFIX = {"onnx": ".onnx", "litert": ".tflite", "tf_saved_model": ""}


def micro_model(**kwargs):
    options = dict(classes=5, classifier_activation=None, implementation="keras")
    options.update(kwargs)
    return Sequencer2D(**MICRO, **options)


def images(shape, batch, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(0, 1, (batch,) + tuple(shape)) * scale).astype("float32")


def expected(model, x):
    return np.asarray(model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def classifier():
    return micro_model()


@pytest.fixture(scope="module", params=export.FORMATS)
def exported(request, classifier, tmp_path_factory):
    """``(format, path, run)``: the classifier exported at SIZE, once per
    format, and the artefact loaded by its runtime."""
    path = str(tmp_path_factory.mktemp(request.param) / f"micro{SUFFIX[request.param]}")
    assert classifier.export(path, format=request.param, input_shape=SIZE) == path
    return request.param, path, export.load_exported(path, request.param)


@pytest.mark.parametrize("batch", quick_first([1, 3]))
def test_export_matches_predict_at_any_batch_size(exported, classifier, batch):
    _, _, run = exported
    x = images(SIZE + (3,), batch, seed=batch)
    y = run(x)
    assert y.shape == (batch, 5)
    np.testing.assert_allclose(y, expected(classifier, x), atol=TOLERANCE, rtol=0)


def test_export_holds_only_portable_ops(exported):
    fmt, path, _ = exported
    if fmt == "onnx":
        import onnx

        graph = onnx.load(path).graph
        ops = {node.op_type for node in graph.node}
        assert {"Conv", "MatMul", "Erf", "Sigmoid", "Tanh"} <= ops
        assert not ops & {"Loop", "Scan", "LSTM", "GRU", "Erfc", "If"}
        batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
        assert not batch_dim.HasField("dim_value")  # dynamic batch
    elif fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)  # the plain interpreter: builtin ops only
        details = interpreter.get_input_details()[0]
        assert list(details["shape_signature"]) == [-1, *SIZE, 3]
    else:
        import tensorflow as tf

        signature = tf.saved_model.load(path).signatures["serving_default"]
        spec = signature.structured_input_signature[1]["images"]
        assert spec.shape.as_list() == [None, *SIZE, 3]
        assert list(signature.structured_outputs) == ["output_0"]


def test_export_leaves_the_model_unchanged_and_rejects_bad_options(classifier, tmp_path):
    before = [np.array(w) for w in classifier.get_weights()]
    with pytest.raises(ValueError, match="Unsupported export format 'openvino'"):
        classifier.export(str(tmp_path / "m"), format="openvino")
    with pytest.raises(ValueError, match="Unsupported export option"):
        classifier.export(str(tmp_path / "m.onnx"), format="onnx", input_shape=SIZE, dynamic=True)
    with pytest.raises(ValueError, match="at least 8x8"):
        classifier.export(str(tmp_path / "m.onnx"), format="onnx", input_shape=(4, 4))
    fixed = micro_model(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="takes 16x16 images"):
        fixed.export(str(tmp_path / "m.onnx"), format="onnx", input_shape=SIZE)
    assert export.export_input_shape(fixed) == (16, 16, 3)
    spec = export.signature_shape([keras.InputSpec(shape=(None, 32, 40, 3))])
    assert export.export_input_shape(classifier, spec) == (32, 40, 3)
    for old, new in zip(before, classifier.get_weights()):
        np.testing.assert_array_equal(old, np.array(new))


# ------------------------------------------- the stored graph, every architecture --
def int8_model():
    model = micro_model()
    model.quantize("int8")  # every Dense: int8 kernels, inputs quantized per row
    return model


ARCHITECTURES = {
    "int8": (int8_model, SIZE),
    "features_fused_square": (lambda: micro_model(include_top=False, implementation="fused"), (16, 16)),
    "avg_pool_preprocessing": (lambda: micro_model(include_top=False, pooling="avg", include_preprocessing=True), SIZE),
    "gru_add": (lambda: micro_model(rnn_type="gru", union="add"), (16, 16)),
    "rnn_vertical": (
        lambda: Sequencer2D(
            **MICRO,
            rnn_type="rnn",
            union="vertical",
            with_fc=False,
            classes=3,
            classifier_activation="softmax",
        ),
        SIZE,
    ),
    "unidirectional_horizontal_max": (
        lambda: micro_model(bidirectional=False, union="horizontal", include_top=False, pooling="max"),
        SIZE,
    ),
    "vanilla_position_embedding": (
        lambda: VanillaSequencer(
            **MICRO,
            input_shape=(16, 24, 3),
            position_embedding=True,
            stem_norm=True,
            classes=4,
            classifier_activation=None,
        ),
        SIZE,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_exported_graph_matches_predict(name):
    build, size = ARCHITECTURES[name]
    model = build()
    shape = export.export_input_shape(model, size)
    _, function = export.build_function(model, shape)
    scale = 100.0 if name == "avg_pool_preprocessing" else 1.0
    x = images(shape, 3, scale=scale)
    assert_matches(name, function(x).numpy(), expected(model, x), atol=TOLERANCE * max(1.0, scale / 100))


# ------------------------------------------------------- a free image size --
FREE_SIZES = (((16, 24), 1), ((32, 32), 3), ((24, 8), 2))


@pytest.mark.parametrize("fmt", quick_first(["tf_saved_model", "onnx"]))
def test_free_size_export_matches_predict_at_every_size(classifier, tmp_path, fmt):
    path = str(tmp_path / f"free{SUFFIX[fmt]}")
    classifier.export(path, format=fmt, input_shape=(None, None))
    run = export.load_exported(path, fmt)
    for size, batch in FREE_SIZES:  # non-square, square (both grids in one loop), tall
        x = images(size + (3,), batch, seed=batch)
        np.testing.assert_allclose(run(x), expected(classifier, x), atol=TOLERANCE, rtol=0)
    # below the total stride (8): an error on every CPU, never an output (the empty feature
    # map gave zeros on some CPUs); the SavedModel names the sizes
    with pytest.raises(Exception, match="needs images of at least 8x8" if fmt == "tf_saved_model" else ""):
        run(images((4, 4, 3), 1))
    if fmt == "onnx":
        import onnx

        graph = onnx.load(path).graph
        assert "Loop" in {node.op_type for node in graph.node}
        dims = graph.input[0].type.tensor_type.shape.dim
        assert [d.HasField("dim_value") for d in dims] == [False, False, False, True]


FREE_ARCHITECTURES = {
    "gru_add": lambda: micro_model(rnn_type="gru", union="add"),
    "rnn_vertical": lambda: Sequencer2D(
        **MICRO, rnn_type="rnn", union="vertical", with_fc=False, classes=3, classifier_activation="softmax"
    ),
    "unidirectional_horizontal_max": lambda: micro_model(
        bidirectional=False, union="horizontal", include_top=False, pooling="max"
    ),
    "vanilla": lambda: VanillaSequencer(**MICRO, classes=4, classifier_activation=None),
    "int8": int8_model,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FREE_ARCHITECTURES))
def test_free_size_graph_matches_predict(name):
    model = FREE_ARCHITECTURES[name]()
    shape = export.export_input_shape(model, (None, None))
    assert shape == (None, None, 3)
    _, function = export.build_function(model, shape)
    for size, batch in FREE_SIZES[:2]:
        x = images(size + (3,), batch)
        assert_matches(name, function(x).numpy(), expected(model, x))


def test_free_size_is_refused_where_it_cannot_hold(classifier, tmp_path):
    with pytest.raises(ValueError, match=r"litert export needs a fixed image size"):
        classifier.export(str(tmp_path / "m.tflite"), format="litert", input_shape=(None, None))
    fixed = micro_model(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"takes 16x16 images; got input_shape \(None, None\)"):
        fixed.export(str(tmp_path / "m.onnx"), format="onnx", input_shape=(None, None))
    assert not os.path.exists(tmp_path / "m.tflite") and not os.path.exists(tmp_path / "m.onnx")


def test_channels_first_model_exports_in_its_layout():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = micro_model(include_top=False)
    finally:
        keras.config.set_image_data_format(previous)
    shape = export.export_input_shape(model, SIZE)
    assert shape == (3,) + SIZE
    _, function = export.build_function(model, shape)
    x = images(shape, 2)
    np.testing.assert_allclose(function(x).numpy(), expected(model, x), atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_missing_converter_is_one_line(tmp_path):
    """With tf2onnx hidden, ``model.export(format="onnx")`` and the CLI name the package."""
    from tests.helpers import HIDE

    script = tmp_path / "check.py"
    script.write_text(
        HIDE
        + textwrap.dedent(
            f"""
        from keras_sequencer.models import Sequencer2D
        from keras_sequencer import cli
        model = Sequencer2D(**{MICRO!r}, classes=2, implementation="keras")
        try:
            model.export("m.onnx", format="onnx", input_shape=(16, 16))
        except ImportError as error:
            print("API:", error)
        open("m.keras", "wb").close()  # the package is checked before the file is read
        print("CLI:", cli.main(["export", "m.keras", "--format", "onnx", "--output", "m.onnx"]))
        """
        )
    )
    environ = dict(os.environ, HIDE_MODULES="tf2onnx", PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=str(tmp_path), env=environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    hint = 'pip install "keras-sequencer[export]" (or pip install tf2onnx)'
    assert f"API: export to onnx needs tf2onnx, which is not installed: {hint}" in result.stdout
    assert "CLI: 1" in result.stdout
    errors = [line for line in result.stderr.splitlines() if "keras-sequencer export" in line]
    assert errors == [f"keras-sequencer export: error: --format onnx needs tf2onnx, which is not installed: {hint}"]
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------ Sequencer2D-S --
@pytest.mark.slow
def test_sequencer2d_s_export_matches_predict(tmp_path, full_size):
    """One full-size export: Sequencer2D-S (the shared full S) to LiteRT at 224x224, the
    strictest format (builtin ops only, a fixed size), run by its interpreter. It runs in
    one backend's pass: every backend exports through the same TensorFlow graph, and the
    micro model checks every format on every backend."""
    run_in_one_backend_pass("full-size export (litert)")
    fmt = "litert"
    model = full_size("sequencer2d_s")
    path = str(tmp_path / f"s{SUFFIX[fmt]}")
    model.export(path, format=fmt, input_shape=(224, 224))
    x = images((224, 224, 3), 2)
    np.testing.assert_allclose(export.run_exported(path, fmt, x), expected(model, x), atol=TOLERANCE, rtol=0)
