"""The reusable checks every public layer and every model family goes through, in the
way keras-hub's ``TestCase.run_layer_test`` / ``run_backbone_test`` /
``run_model_saving_test`` are applied to each of its models.

- :func:`run_layer_test`: registered under ``keras_sequencer>``, config round trip,
  ``.keras`` round trip, the keras path against the fused path, the output shape.
- :func:`run_model_family_test`: the same for a whole model (built by a family's
  builder), plus its exported TensorFlow graph and its int8 quantization.

A new layer or family gets these checks by one parametrized entry in test_layers.py /
test_models.py.
"""

import importlib.util
import json
import os
import tempfile
import warnings

import keras
import numpy as np

from tests.helpers import IMPLEMENTATIONS, random_images, to_numpy

# What a round trip must reproduce exactly; the two implementations agree to float32
# rounding of a different summation order.
PATHS_ATOL = 1e-5
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def _outputs(model_or_layer, x, **kwargs):
    return keras.tree.map_structure(to_numpy, model_or_layer(x, **kwargs))


def _as_json(config):
    """``config`` as a .keras file stores it (tuples become lists)."""
    return json.loads(json.dumps(config, default=str))


def _keras_round_trip(model):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        return keras.saving.load_model(path)


def _assert_registered(cls):
    name = keras.saving.get_registered_name(cls)
    assert name == f"keras_sequencer>{cls.__name__}", name
    assert keras.saving.get_registered_object(name) is cls


def run_layer_test(cls, init_kwargs, input_shape, expected_output_shape=None, call_kwargs=None, seed=0):
    """Checks a public layer ``cls(**init_kwargs)`` on a random batch of ``input_shape``:

    1. registered for ``.keras`` files under the package's name;
    2. ``from_config(get_config())`` gives the same config and, with the same weights,
       the same outputs;
    3. inside a functional model, a ``.keras`` round trip gives identical outputs;
    4. where the layer takes ``implementation=`` (and its cell is an LSTM, the one the
       fused path computes), the keras and fused paths holding the same weights agree
       (:data:`PATHS_ATOL`);
    5. the output has ``expected_output_shape`` (when given) and
       ``compute_output_shape`` says so.

    Returns the layer and its output on the batch."""
    call_kwargs = call_kwargs or {}
    x = random_images(*input_shape, seed=seed) if len(input_shape) == 4 else random_images(1, *input_shape)[0]
    _assert_registered(cls)
    layer = cls(**init_kwargs)
    y = _outputs(layer, x, **call_kwargs)
    if expected_output_shape is not None:
        assert y.shape == tuple(expected_output_shape), y.shape
        assert tuple(layer.compute_output_shape(x.shape)) == tuple(expected_output_shape)

    config = layer.get_config()
    restored = cls.from_config(config)
    assert restored.get_config() == config
    restored.build(x.shape)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(_outputs(restored, x, **call_kwargs), y, atol=1e-6, rtol=0)

    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs, **call_kwargs))
    np.testing.assert_array_equal(_outputs(_keras_round_trip(model), x), _outputs(model, x))

    if "implementation" in config and config.get("rnn_type", "lstm") == "lstm":
        paths = [cls.from_config({**config, "implementation": impl}) for impl in IMPLEMENTATIONS]
        for path in paths:
            path.build(x.shape)
            path.set_weights(layer.get_weights())
        keras_path, fused_path = (_outputs(p, x, **call_kwargs) for p in paths)
        np.testing.assert_allclose(fused_path, keras_path, atol=PATHS_ATOL, rtol=0)
    return layer, y


def run_model_family_test(builder, arch, input_size, classes=3, export=True, int8=True, seed=0, **options):
    """Checks a model family: ``builder(**arch, **options)`` (a tiny architecture) on a
    random batch of ``input_size`` (height, width):

    1. a ``.keras`` round trip gives the same class and identical outputs;
    2. the keras and fused implementations with the same weights agree
       (:data:`PATHS_ATOL`), and each keeps its implementation through ``.keras``
       (an LSTM model; other cells have the keras path only);
    3. ``export``: the TensorFlow graph every export format stores
       (``keras_sequencer.export.build_function``) gives ``predict``'s outputs
       (needs TensorFlow, on every backend);
    4. ``int8``: ``quantize("int8")`` makes every Dense layer int8, moves the logits by
       a few percent at most, and survives a ``.keras`` round trip unchanged.

    Returns the keras-path model."""
    x = random_images(2, *input_size, seed=seed)
    keras.utils.set_random_seed(seed)
    paths = IMPLEMENTATIONS if options.get("rnn_type", "lstm") == "lstm" else ("keras",)
    models = {impl: builder(**arch, classes=classes, implementation=impl, **options) for impl in paths}
    for model in models.values():
        model.set_weights(models["keras"].get_weights())
    outputs = {impl: to_numpy(model.predict_on_batch(x)) for impl, model in models.items()}
    assert outputs["keras"].shape == (2, classes)
    for output in outputs.values():
        np.testing.assert_allclose(output, outputs["keras"], atol=PATHS_ATOL, rtol=0)

    for impl, model in models.items():
        reloaded = _keras_round_trip(model)
        assert type(reloaded) is type(model)
        assert _as_json(reloaded.get_config()) == _as_json(model.get_config())
        np.testing.assert_array_equal(to_numpy(reloaded.predict_on_batch(x)), outputs[impl])

    model = models["keras"]
    if export and HAS_TENSORFLOW:
        from keras_sequencer import export as export_module

        shape = export_module.export_input_shape(model, input_size)
        _, function = export_module.build_function(model, shape)
        np.testing.assert_allclose(function(x).numpy(), outputs["keras"], atol=1e-4, rtol=0)

    if int8:
        with warnings.catch_warnings():  # Keras warns for every layer it leaves float
            warnings.simplefilter("ignore")
            model.quantize("int8")
        dense = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dense)]
        assert dense and all(layer.quantization_mode == "int8" for layer in dense)
        quantized = to_numpy(model.predict_on_batch(x))
        error = np.abs(quantized - outputs["keras"]).max()
        assert 0 < error <= 0.1 * max(np.abs(outputs["keras"]).max(), 1e-3), error
        np.testing.assert_array_equal(to_numpy(_keras_round_trip(model).predict_on_batch(x)), quantized)
    return models["keras"]
