"""keras_sequencer.kernels.torch (and torch_lstm's CPU / GPU dispatch): one recurrence
per block, torch's native LSTM, the fused block's GEMMs and residuals."""

import keras
import numpy as np
import pytest

from keras_sequencer import layers
from keras_sequencer.rnn import rnn_cells
from tests.helpers import (
    layer_pair,
    random_images,
    to_numpy,
)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's own recurrences")
@pytest.mark.parametrize("kwargs", [dict(union="cat"), dict(union="vertical", bidirectional=False)])
def test_torch_cpu_runs_one_recurrence_and_matches(kwargs, monkeypatch):
    """On torch on CPU the fused layer steps all its LSTMs together in place,
    with gradients on and off, and gives the keras path's numbers; it does not
    call ``torch.lstm`` (oneDNN), which is kept for inference on a GPU."""
    import torch

    from keras_sequencer.kernels import torch_lstm

    calls, lstm_calls = [], []
    real_lstms, real_lstm = torch_lstm.bilstm2d_lstms, torch.lstm
    monkeypatch.setattr(
        torch_lstm,
        "bilstm2d_lstms",
        lambda x, cells, directions: calls.append(directions) or real_lstms(x, cells, directions),
    )
    monkeypatch.setattr(torch, "lstm", lambda *a: lstm_calls.append(a) or real_lstm(*a))
    keras_layer, fused_layer = layer_pair((3, 5, 2, 6), **kwargs)
    x = random_images(3, 5, 2, 6)
    expected = to_numpy(keras_layer(x))
    lstm_calls.clear()  # the keras path's own LSTM layers may call it
    got = [to_numpy(fused_layer(x))]
    with torch.no_grad():
        got.append(to_numpy(fused_layer(x)))
    directions = [(1, False), (1, True), (2, False), (2, True)]
    if kwargs["union"] != "cat":
        directions = [(1, False)]
    assert calls == [directions] * 2
    assert lstm_calls == []
    for g in got:
        np.testing.assert_allclose(g, expected, atol=1e-6, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's LSTM kernel")
def test_torch_native_lstm_equals_the_keras_lstm():
    """``torch_native_lstm`` (inference on a GPU: one cuDNN ``torch.lstm`` per
    RNN), run here on CPU, gives the Keras LSTM layers' numbers."""
    import torch

    from keras_sequencer.kernels.torch_lstm import torch_native_lstm

    keras_layer, _ = layer_pair((3, 5, 2, 6))
    columns = random_images(3, 2, 5, 6).reshape(6, 5, 6)  # (N, T, C)
    expected = to_numpy(keras_layer.rnn_v(columns))
    with torch.no_grad():
        got = torch_native_lstm(torch.as_tensor(columns).transpose(0, 1), rnn_cells(keras_layer.rnn_v))
    np.testing.assert_allclose(to_numpy(got.transpose(0, 1)), expected, atol=1e-6, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's LSTM kernel")
@pytest.mark.parametrize(
    "kwargs", [dict(union="cat"), dict(union="add"), dict(union="horizontal", bidirectional=False)]
)
def test_torch_gpu_inference_path_equals_the_keras_layer(kwargs, monkeypatch):
    """BiLSTM2D's fused path for inference on a GPU (one ``torch.lstm`` per RNN,
    laid out by ``generic.time_major_bilstm2d``), taken here on CPU (the
    kernel's ``gpu_inference`` test reduced to "no autograd"), gives the keras
    path's numbers for each union, and never reaches the CPU recurrence."""
    import torch

    from keras_sequencer.kernels import generic
    from keras_sequencer.kernels import torch as torch_kernels

    calls, native = [], []
    real_layout, real_native = generic.time_major_bilstm2d, torch_kernels.native_recurrences
    monkeypatch.setattr(
        generic,
        "time_major_bilstm2d",
        lambda *args: calls.append(args[3]) or real_layout(*args),
    )
    monkeypatch.setattr(
        torch_kernels,
        "native_recurrences",
        lambda seqs, cells: native.append(len(seqs)) or real_native(seqs, cells),
    )
    monkeypatch.setattr(torch_kernels.torch_lstm, "bilstm2d_lstms", None)  # must not be reached
    keras_layer, fused_layer = layer_pair((3, 5, 2, 6), **kwargs)
    x = random_images(3, 5, 2, 6)
    expected = to_numpy(keras_layer(x))
    monkeypatch.setattr(torch_kernels, "gpu_inference", lambda x: not torch.is_grad_enabled())
    with torch.no_grad():
        got = to_numpy(fused_layer(x))
    assert native == [1 if kwargs["union"] == "horizontal" else 2]
    assert len(calls) == 1
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_block_on_torch_skips_sublayer_call_overhead(policy, monkeypatch):
    """On torch the fused block runs its LayerNorms, BiLSTM2D and DropPath by
    their ``call`` (no Keras ``Layer.__call__``), with the keras path's
    numbers, in float32 and under mixed precision; elsewhere nothing changes."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        blocks = [layers.Sequencer2DBlock(4, drop_path_rate=0.1, implementation=impl) for impl in ("keras", "fused")]
        x = random_images(2, 3, 4, 8)
        for block in blocks:
            block.build(x.shape)
        blocks[1].set_weights(blocks[0].get_weights())
        calls = []
        real_call = keras.layers.Layer.__call__

        def counting_call(layer, *args, **kwargs):
            calls.append(type(layer).__name__)
            return real_call(layer, *args, **kwargs)

        monkeypatch.setattr(keras.layers.Layer, "__call__", counting_call)
        outputs = []
        for block in blocks:
            calls.clear()
            outputs.append(to_numpy(block(x, training=False)))
            inner = sorted(calls[1:])  # calls[0] is the block itself
            if block.implementation == "fused" and keras.backend.backend() == "torch":
                assert inner == []
            elif block.implementation == "keras":
                assert inner.count("LayerNormalization") == 2 and "BiLSTM2D" in inner
        if keras.backend.backend() == "torch":  # inference without autograd (in-place GELU)
            import torch

            with torch.no_grad():
                outputs.append(to_numpy(blocks[1](x, training=False)))
        assert outputs[1].dtype == outputs[0].dtype == np.dtype(blocks[0].compute_dtype)
        atol = 1e-5 if policy == "float32" else 2e-2
        for got in outputs[1:]:
            np.testing.assert_allclose(got.astype("float32"), outputs[0].astype("float32"), atol=atol, rtol=0)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch fused block's GEMMs")
@pytest.mark.parametrize(
    "training, drop_path_rate, in_place_gemms",
    [(False, 0.1, 2), (True, 0.0, 2), (True, 0.1, 0)],  # DropPath active: plain adds
)
def test_fused_block_adds_its_residuals_inside_the_gemms(training, drop_path_rate, in_place_gemms):
    """On torch the fused block's two residual adds are the start values of the
    branches' last GEMMs (``fc`` and ``mlp_fc2``, in place), unless DropPath
    has to scale the branches; the numbers stay the keras path's."""
    import torch

    blocks = [
        layers.Sequencer2DBlock(4, drop_path_rate=drop_path_rate, implementation=impl) for impl in ("keras", "fused")
    ]
    x = torch.from_numpy(random_images(2, 3, 4, 8))
    for block in blocks:
        block.build(x.shape)
    blocks[1].set_weights(blocks[0].get_weights())
    with torch.profiler.profile() as profile:
        got = blocks[1](x, training=training)
    assert [e.name for e in profile.events()].count("aten::addmm_") == in_place_gemms
    if not (training and drop_path_rate):  # (DropPath draws its own mask per call)
        np.testing.assert_allclose(to_numpy(got), to_numpy(blocks[0](x, training=training)), atol=1e-5, rtol=0)
