"""int8 quantization (``model.quantize("int8")``) of Sequencer models on both
implementations: which layers become int8, how far the logits move, that the
fused path computes the same quantized model as the keras path, and that a
quantized model saves and reloads with identical outputs."""

import warnings

import keras
import numpy as np
import pytest

from keras_sequencer.models import Sequencer2D
from tests.helpers import MICRO_ARCH, random_images, run_model

SIZE = 16
CLASSES = 10
BLOCKS = sum(MICRO_ARCH["layers"])


def tiny_model(implementation, weights=None):
    model = Sequencer2D(
        input_shape=(SIZE, SIZE, 3),
        classes=CLASSES,
        classifier_activation=None,
        implementation=implementation,
        **MICRO_ARCH,
    )
    if weights is not None:
        model.set_weights(weights)
    return model


def quantize(model):
    with warnings.catch_warnings():  # Keras warns for every layer it leaves float
        warnings.simplefilter("ignore")
        model.quantize("int8")
    return model


def dense_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dense)]


def check_int8_and_close(model, quantized, floats):
    layers = dense_layers(model)
    assert len(layers) == 1 + 3 * BLOCKS  # head + per block BiLSTM2D fc, mlp_fc1, mlp_fc2
    for layer in layers:
        assert layer.quantization_mode == "int8", layer.path
        assert keras.backend.standardize_dtype(layer._kernel.dtype) == "int8", layer.path
    error = np.abs(quantized - floats)
    # Each int8 GEMM rounds weights (per output channel) and inputs (per
    # token) to 1/254 of their absolute maximum, ~0.4% relative error per
    # operand: about 1% of the logits' scale through the quantized GEMMs
    # in series (measured 1-3% on these random weights). 8% bounds that with
    # margin and still catches a wrong scale, a transposed kernel or an int8
    # kernel read as float (errors of the order of the logits themselves).
    assert error.max() <= 0.08 * np.abs(floats).max(), error.max()
    assert error.max() > 1e-5  # the GEMMs did change: the model really runs int8
    assert (quantized.argmax(-1) == floats.argmax(-1)).mean() >= 0.75


def assert_same_int8_model(got, expected, floats):
    """Two runs of one int8 model (another implementation, an export) agree far
    more closely than either agrees with the float model. Not to float32
    precision: inputs are rounded to int8 per token from float activations, so
    a last-bit difference upstream can move one value across a rounding
    boundary (one int8 step, ~3e-4 in these logits), depending on the CPU's
    summation order. A float run instead of the int8 one would differ by the
    whole int8 error (ratio ~1)."""
    int8_error = np.abs(expected - floats).max()
    assert np.abs(got - expected).max() <= 0.1 * int8_error, (np.abs(got - expected).max(), int8_error)


def check_reload(tmp_path, model, expected, implementation):
    path = str(tmp_path / "quantized.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert all(layer.quantization_mode == "int8" for layer in dense_layers(reloaded))
    np.testing.assert_array_equal(run_model(reloaded, tiny_images()), expected)
    return reloaded


def tiny_images():
    return random_images(4, SIZE, SIZE, seed=3)


@pytest.fixture(scope="module")
def keras_quantized():
    """The keras-path model: float weights and logits, then quantized, and its int8 logits.
    Seeded: the same weights whichever tests ran before."""
    keras.utils.set_random_seed(0)
    model = tiny_model("keras")
    weights = model.get_weights()
    floats = run_model(model, tiny_images())
    quantize(model)
    return model, weights, floats, run_model(model, tiny_images())


@pytest.mark.slow
def test_keras_path_int8_close_and_reloads_identically(tmp_path, keras_quantized):
    model, _, floats, quantized = keras_quantized
    check_int8_and_close(model, quantized, floats)
    check_reload(tmp_path, model, quantized, "keras")
    # weights only: into a model built and quantized the same way (Keras's rule)
    weights_path = str(tmp_path / "quantized.weights.h5")
    model.save_weights(weights_path)
    fresh = quantize(tiny_model("keras"))
    fresh.load_weights(weights_path)
    np.testing.assert_array_equal(run_model(fresh, tiny_images()), quantized)


@pytest.mark.slow
def test_fused_path_computes_the_quantized_keras_model_and_reloads(tmp_path, keras_quantized):
    _, weights, floats, expected = keras_quantized
    fused = tiny_model("fused", weights)
    # a float call first: compiled kernels (TensorFlow's XLA blocks) must not keep float weights
    np.testing.assert_allclose(run_model(fused, tiny_images()), floats, atol=2e-5, rtol=0)
    quantized = run_model(quantize(fused), tiny_images())
    check_int8_and_close(fused, quantized, floats)
    assert_same_int8_model(quantized, expected, floats)
    reloaded = check_reload(tmp_path, fused, quantized, "fused")
    assert reloaded.get_layer("stages_0_blocks_0").implementation == "fused"


@pytest.mark.slow
def test_float_configs_are_unchanged_and_quantized_ones_name_their_int8_layers(keras_quantized):
    block = tiny_model("keras").get_layer("stages_0_blocks_0")
    assert "quantized_sublayers" not in block.get_config()
    assert keras_quantized[0].get_layer("stages_0_blocks_0").get_config()["quantized_sublayers"] == {
        "rnn_tokens/fc": "int8_from_float32",
        "mlp_fc1": "int8_from_float32",
        "mlp_fc2": "int8_from_float32",
    }


@pytest.mark.slow
def test_a_quantized_model_exports_to_onnx_with_its_int8_arithmetic(tmp_path, keras_quantized):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    model, _, floats, expected = keras_quantized
    path = str(tmp_path / "quantized.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: tiny_images()})
    assert_same_int8_model(got, expected, floats)
