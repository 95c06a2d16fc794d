"""BiLSTM2D's ``implementation="fused"`` path: same weights, same numbers as timm and
as the ``keras.layers.LSTM`` path, same gradients, serializable."""

import keras
import numpy as np
import pytest

from keras_sequencer import Sequencer2D
from keras_sequencer.conversion import load_state_dict
from keras_sequencer.kernels import backend_kernels
from keras_sequencer.layers import BiLSTM2D
from keras_sequencer.rnn import rnn_cells
from tests.helpers import (
    IMPLEMENTATIONS,
    TINY_ARCH,
    layer_pair,
    quick_first,
    random_images,
    requires_timm,
    state_dict_numpy,
    timm_forward,
    timm_model,
    to_numpy,
)


@requires_timm
@pytest.mark.parametrize("size", quick_first([(28, 28), (42, 28)]))
def test_both_paths_match_timm(size):
    torch_model = timm_model(TINY_ARCH, num_classes=7)
    images = random_images(2, *size)
    expected = timm_forward(torch_model, images)
    state = state_dict_numpy(torch_model)
    for impl in IMPLEMENTATIONS:
        model = Sequencer2D(**TINY_ARCH, classes=7, classifier_activation=None, implementation=impl)
        load_state_dict(model, state)
        # model(...) runs with gradients on (on torch the fused path's batched
        # recurrence), predict_on_batch without (there torch's own LSTM kernel).
        for got in (to_numpy(model(images)), model.predict_on_batch(images)):
            np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0, err_msg=impl)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(union="cat"),
        dict(union="add", bidirectional=False),
        dict(union="vertical"),
        dict(union="horizontal", bidirectional=False),
    ],
)
@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (3, 5, 2, 6)])
def test_fused_layer_matches_keras_layer(kwargs, shape):
    keras_layer, fused_layer = layer_pair(shape, **kwargs)
    assert [tuple(w.shape) for w in keras_layer.weights] == [tuple(w.shape) for w in fused_layer.weights]
    x = random_images(*shape)
    np.testing.assert_allclose(to_numpy(fused_layer(x)), to_numpy(keras_layer(x)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", ["plain", "lora", "relu", "no_bias", "int8"])
def test_fused_dense_equals_the_dense_layer(variant):
    """The fused path's ``dense`` kernel (one ``addmm`` on torch) gives ``layer(x)``,
    LoRA included; other Dense layers go through their own call."""
    dense = backend_kernels().dense

    kwargs = {"relu": dict(activation="relu"), "no_bias": dict(use_bias=False)}.get(variant, {})
    layer = keras.layers.Dense(5, **kwargs)
    x = keras.ops.convert_to_tensor(random_images(2, 3, 4, 6))  # as inside a layer call
    layer.build(x.shape)
    if variant == "lora":
        layer.enable_lora(2)
        layer.lora_kernel_b.assign(np.full((2, 5), 0.3, "float32"))
    if variant == "int8":
        layer.quantize("int8")
    expected = to_numpy(layer(x))
    np.testing.assert_allclose(to_numpy(dense(layer, x)), expected, atol=1e-5, rtol=0)
    if variant == "lora":  # the LoRA term is really in the result
        layer.lora_kernel_b.assign(np.zeros((2, 5), "float32"))
        assert np.abs(to_numpy(dense(layer, x)) - expected).max() > 1e-3


@pytest.mark.parametrize("variant", ["plain", "lora", "relu", "no_bias"])
def test_residual_dense_equals_the_residual_sum(variant):
    """The block's fused residual ``residual_dense(layer, x, y)`` (on torch
    ``x + bias`` and an in-place GEMM) is ``x + layer(y)``; ``x`` is untouched."""
    residual_dense = backend_kernels().residual_dense

    kwargs = {"relu": dict(activation="relu"), "no_bias": dict(use_bias=False)}.get(variant, {})
    layer = keras.layers.Dense(6, **kwargs)
    y = keras.ops.convert_to_tensor(random_images(2, 3, 4, 5))
    x = keras.ops.convert_to_tensor(random_images(2, 3, 4, 6, seed=1))
    layer.build(y.shape)
    if variant == "lora":
        layer.enable_lora(2)
        layer.lora_kernel_b.assign(np.full((2, 6), 0.3, "float32"))
    x_before = to_numpy(x).copy()
    got = to_numpy(residual_dense(layer, x, y))
    np.testing.assert_allclose(got, x_before + to_numpy(layer(y)), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(to_numpy(x), x_before)
    assert np.abs(got - to_numpy(layer(y))).max() > 0.1  # the residual is really in it
    # in place: the same numbers, written over x on torch (a plain Dense)
    in_place = to_numpy(residual_dense(layer, x, y, in_place=True))
    np.testing.assert_allclose(in_place, got, atol=1e-6, rtol=0)
    if keras.backend.backend() == "torch" and variant in ("plain", "lora"):
        np.testing.assert_allclose(to_numpy(x), got, atol=1e-6, rtol=0)


def test_inference_follows_new_weights():
    """Whatever the fused path keeps between calls (torch caches the LSTMs'
    reordered weights), new weights are used at once: after ``set_weights``
    and after an in-place ``assign`` the prediction equals the keras path's."""
    images = random_images(2, 28, 28)
    models = []
    for seed, impl in ((4, "keras"), (5, "fused")):
        keras.utils.set_random_seed(seed)
        models.append(Sequencer2D(**TINY_ARCH, classes=3, implementation=impl))
    keras_model, fused_model = models
    before = to_numpy(fused_model.predict_on_batch(images))
    fused_model.set_weights(keras_model.get_weights())
    after = to_numpy(fused_model.predict_on_batch(images))
    np.testing.assert_allclose(after, to_numpy(keras_model.predict_on_batch(images)), atol=1e-5, rtol=0)
    assert np.abs(after - before).max() > 1e-3
    for model in models:  # one LSTM variable changed in place, in both models
        variable = next(w for w in model.weights if "recurrent_kernel" in w.path)
        variable.assign(variable.numpy() * 3.0)
    np.testing.assert_allclose(
        to_numpy(fused_model.predict_on_batch(images)),
        to_numpy(keras_model.predict_on_batch(images)),
        atol=1e-5,
        rtol=0,
    )
    assert np.abs(to_numpy(fused_model.predict_on_batch(images)) - after).max() > 1e-4


@pytest.mark.parametrize("bidirectional", [True, False])
def test_fused_lstm_scan_and_loop_agree(bidirectional):
    """The ``ops.scan`` recurrence equals the unrolled one, in both directions."""
    layer = BiLSTM2D(5, bidirectional=bidirectional, implementation="fused")
    layer.build((2, 3, 4, 6))
    x = keras.ops.convert_to_tensor(random_images(1, 3, 4, 6)[0])  # (T, N, C)
    cells = [rnn_cells(layer.rnn_v), rnn_cells(layer.rnn_h)]
    outputs = {
        unroll: [
            to_numpy(y) for y in backend_kernels().fused_lstm([x, x * 2.0], cells, reverse=bidirectional, unroll=unroll)
        ]
        for unroll in (True, False)
    }
    for looped, scanned in zip(outputs[True], outputs[False]):
        assert looped.shape == (3, 4, 10 if bidirectional else 5)
        np.testing.assert_allclose(scanned, looped, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_both_paths_train_identically():
    """One SGD step (lr 1) from the same weights moves every weight by the same
    amount on both paths, i.e. the gradients are equal."""
    images = random_images(4, 28, 42)
    labels = np.array([0, 1, 2, 1])
    models = []
    for impl in IMPLEMENTATIONS:
        keras.utils.set_random_seed(3)
        model = Sequencer2D(**TINY_ARCH, classes=3, classifier_activation=None, implementation=impl)
        model.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    before = [w.copy() for w in models[0].get_weights()]
    for model in models:
        model.train_on_batch(images, labels)
    names = [w.path for w in models[0].weights]
    moved = 0
    for name, w0, wk, wf in zip(names, before, *(m.get_weights() for m in models)):
        np.testing.assert_allclose(wf - w0, wk - w0, atol=2e-6, rtol=1e-4, err_msg=name)
        if "rnn" in name and np.abs(wk - w0).max() > 1e-6:
            moved += 1
    assert moved >= 3 * 4 * sum(TINY_ARCH["layers"])  # kernels of every LSTM direction


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(union="add"), (5, 4)),
        (dict(union="vertical", bidirectional=False), (5, 4)),
        (dict(union="horizontal"), (5, 4)),
        (dict(union="add", with_fc=False, hidden_size=3), (5, 4)),
        # square and unidirectional: both RNNs in one recurrence of two sequences
        (dict(union="add", bidirectional=False), (4, 4)),
    ],
)
def test_layer_gradients_match_keras_path(kwargs, size):
    """One SGD step through a lone BiLSTM2D moves every weight alike on both
    paths, for each union, in ``train_on_batch``'s compiled step: the
    hand-written backwards (torch, JAX; TensorFlow's unidirectional) and
    TensorFlow's autodiff agree with keras.layers.LSTM's."""
    kwargs = {"hidden_size": 4, **kwargs}
    images = random_images(3, *size, 6)
    labels = np.array([0, 1, 1])
    deltas, start = [], None
    for impl in IMPLEMENTATIONS:
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((*size, 6)),
                BiLSTM2D(implementation=impl, name="bilstm", **kwargs),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        if start is not None:
            model.set_weights(start)
        start = model.get_weights()
        model.train_on_batch(images, labels)
        deltas.append([w - w0 for w, w0 in zip(model.get_weights(), start)])
    names = [w.path for w in model.weights]
    for name, fused, reference in zip(names, deltas[1], deltas[0]):
        np.testing.assert_allclose(fused, reference, atol=2e-6, rtol=1e-4, err_msg=name)
    assert sum(np.abs(d).max() > 1e-6 for d in deltas[0]) >= len(deltas[0]) - 1


@pytest.mark.slow
def test_weights_file_is_shared_between_paths(tmp_path):
    images = random_images(1, 28, 28)
    keras_model = Sequencer2D(**TINY_ARCH, classes=3, implementation="keras")
    path = str(tmp_path / "tiny.weights.h5")
    keras_model.save_weights(path)
    fused_model = Sequencer2D(**TINY_ARCH, classes=3, implementation="fused")
    fused_model.load_weights(path)
    np.testing.assert_allclose(to_numpy(fused_model(images)), to_numpy(keras_model(images)), atol=1e-6, rtol=0)


def test_bad_implementation_arguments():
    with pytest.raises(ValueError, match="implementation='fused' supports only rnn_type='lstm'"):
        BiLSTM2D(4, rnn_type="gru", implementation="fused")
    with pytest.raises(ValueError, match="Unrecognized implementation 'cudnn'"):
        BiLSTM2D(4, implementation="cudnn")
    with pytest.raises(ValueError, match="implementation"):
        Sequencer2D(**TINY_ARCH, rnn_type="rnn", implementation="fused")


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="only a TensorFlow graph traced with unknown H, W reaches the scan recurrence",
)
def test_fused_layer_with_unknown_height_and_width():
    """Traced with unknown H and W (as a ``tf.function`` of an ``input_shape=(None,
    None, C)`` model may be), the fused layer takes its ``ops.scan`` recurrence and
    still equals the Keras LSTM path, on square and non-square maps."""
    import tensorflow as tf

    keras_layer, fused_layer = layer_pair((2, 4, 4, 6))
    traced = tf.function(fused_layer, input_signature=[tf.TensorSpec((None, None, None, 6))])
    concrete = traced.get_concrete_function()
    assert concrete.inputs[0].shape.as_list() == [None, None, None, 6]
    for shape in ((2, 4, 4, 6), (3, 5, 2, 6)):
        x = random_images(*shape)
        np.testing.assert_allclose(traced(x).numpy(), to_numpy(keras_layer(x)), atol=1e-6, rtol=0)
