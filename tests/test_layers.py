import keras
import numpy as np
import pytest

from keras_sequencer import layers
from keras_sequencer.models import ChannelsFirstInput
from tests.harness import run_layer_test
from tests.helpers import random_images, to_numpy

UNION_CASES = [
    # union, bidirectional, with_fc, channels, expected output channels
    ("cat", True, True, 10, 10),
    ("add", True, True, 10, 10),
    ("vertical", True, True, 10, 10),
    ("horizontal", False, True, 10, 10),
    ("cat", True, False, 16, 16),  # 2 * 2 * 4 == 16
    ("add", False, False, 4, 4),
    ("vertical", True, False, 8, 8),
]


@pytest.mark.parametrize("union,bidirectional,with_fc,channels,out_channels", UNION_CASES)
def test_bilstm2d_shapes_non_square(union, bidirectional, with_fc, channels, out_channels):
    layer = layers.BiLSTM2D(4, bidirectional=bidirectional, union=union, with_fc=with_fc)
    y = layer(random_images(2, 3, 5, channels))
    assert tuple(y.shape) == (2, 3, 5, out_channels)
    assert layer.compute_output_shape((2, 3, 5, channels)) == (2, 3, 5, out_channels)


def test_bilstm2d_unknown_height_width():
    inputs = keras.Input((None, None, 6))
    outputs = layers.BiLSTM2D(3)(inputs)
    assert tuple(outputs.shape) == (None, None, None, 6)
    model = keras.Model(inputs, outputs)
    for h, w in ((2, 7), (5, 3)):
        assert model.predict(random_images(2, h, w, 6), verbose=0).shape == (2, h, w, 6)


def test_bilstm2d_vertical_runs_over_columns():
    """vertical(x) must equal transpose(horizontal(transpose(x))) with the same RNN weights."""
    x = random_images(2, 3, 5, 8)
    vertical = layers.BiLSTM2D(4, union="vertical", with_fc=False)
    horizontal = layers.BiLSTM2D(4, union="horizontal", with_fc=False)
    vertical.build(x.shape)
    horizontal.build(x.shape)
    horizontal.rnn_h.set_weights(vertical.rnn_v.get_weights())
    v = to_numpy(vertical(x))
    h_t = to_numpy(horizontal(np.transpose(x, (0, 2, 1, 3))))
    np.testing.assert_allclose(v, np.transpose(h_t, (0, 2, 1, 3)), atol=1e-6)
    # and the sequences really mix along the column: changing the last row changes
    # the (backward direction) output of the first row in that column only.
    x2 = x.copy()
    x2[:, -1, 0, :] += 1.0
    diff = np.abs(to_numpy(vertical(x2)) - v).max(axis=-1)
    assert diff[:, 0, 0].min() > 1e-4
    assert diff[:, :, 1:].max() == 0.0


@pytest.mark.parametrize("union", ["cat", "add"])
def test_bilstm2d_union_of_vertical_and_horizontal(union):
    """cat: fc([v, h]); add: fc(v + h), with v, h from the single-direction layers."""
    x = random_images(2, 4, 3, 4)
    joined = layers.BiLSTM2D(2, union=union)
    vertical = layers.BiLSTM2D(2, union="vertical", with_fc=False)  # 2 * 2 == 4 channels
    horizontal = layers.BiLSTM2D(2, union="horizontal", with_fc=False)
    for layer in (joined, vertical, horizontal):
        layer.build(x.shape)
    vertical.rnn_v.set_weights(joined.rnn_v.get_weights())
    horizontal.rnn_h.set_weights(joined.rnn_h.get_weights())
    v, h = to_numpy(vertical(x)), to_numpy(horizontal(x))
    union_value = np.concatenate([v, h], -1) if union == "cat" else v + h
    kernel, bias = joined.fc.get_weights()
    np.testing.assert_allclose(to_numpy(joined(x)), union_value @ kernel + bias, atol=1e-5)


def test_bilstm2d_rejects_bad_arguments():
    with pytest.raises(ValueError, match="union"):
        layers.BiLSTM2D(4, union="mul")
    with pytest.raises(ValueError, match="rnn_type"):
        layers.BiLSTM2D(4, rnn_type="transformer")
    with pytest.raises(ValueError, match="input has 10"):
        layers.BiLSTM2D(4, with_fc=False).build((None, 3, 3, 10))


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_bilstm2d_rnn_types(rnn_type):
    layer = layers.BiLSTM2D(3, rnn_type=rnn_type)
    y = layer(random_images(1, 2, 4, 5))
    assert tuple(y.shape) == (1, 2, 4, 5)
    expected = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
    assert isinstance(layer.rnn_v.forward_layer, expected[rnn_type])


def test_drop_path():
    x = np.ones((64, 2, 2, 3), "float32")
    layer = layers.DropPath(0.5, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    y = to_numpy(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    # each sample is either dropped entirely or kept and scaled by 1 / (1 - rate)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    assert 5 < (per_sample[:, 0] == 0).sum() < 59
    with pytest.raises(ValueError):
        layers.DropPath(1.0)


def test_patch_embedding():
    layer = layers.PatchEmbedding(8, 7)
    assert tuple(layer(random_images(2, 14, 22, 3)).shape) == (2, 2, 3, 8)
    with pytest.raises(ValueError, match="smaller than the patch size 7"):
        layer(random_images(1, 6, 30, 3))
    one = layers.PatchEmbedding(4, 1)
    assert tuple(one(random_images(1, 3, 2, 5)).shape) == (1, 3, 2, 4)


def _input_and_weight_gradients(layer, fn, x, out_weights):
    """The gradients of ``sum(fn(x) * out_weights)`` with respect to ``x`` and
    ``layer``'s trainable weights, as NumPy arrays (torch or JAX)."""
    if keras.backend.backend() == "torch":
        import torch

        inputs = torch.from_numpy(x).requires_grad_()
        loss = (fn(inputs) * torch.from_numpy(out_weights).float()).sum()
        grads = torch.autograd.grad(loss, [inputs] + [w.value for w in layer.trainable_weights])
    else:
        import jax

        def loss(inputs, values):
            with keras.StatelessScope(state_mapping=list(zip(layer.trainable_weights, values))):
                return (fn(inputs) * out_weights).sum()

        grads = jax.grad(lambda i, v: loss(i, v), argnums=(0, 1))(x, [w.value for w in layer.trainable_weights])
        grads = [grads[0], *grads[1]]
    return [to_numpy(g) for g in grads]


@pytest.mark.parametrize(
    "patch, shape, kwargs",
    [
        (7, (2, 23, 16, 3), {}),  # rows and columns that do not fill a patch are dropped
        (2, (2, 6, 5, 4), dict(activation="relu")),
        (1, (1, 3, 2, 5), dict(use_bias=False)),
        (2, (1, 4, 4, 3), dict(lora=2)),
    ],
)
def test_patch_embedding_equals_the_convolution(patch, shape, kwargs):
    """However it runs (on torch and JAX one GEMM over the flattened patches),
    the patch embedding is Keras's Conv2D with kernel = stride = patch, with
    the same gradients, also under mixed precision and with LoRA."""
    lora = kwargs.pop("lora", None)
    layer = layers.PatchEmbedding(6, patch, **kwargs)
    x = random_images(*shape)
    layer.build(x.shape)
    if lora:
        layer.enable_lora(lora)
        layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.2, "float32"))
    conv = lambda t: keras.layers.Conv2D.call(layer, keras.ops.convert_to_tensor(t))  # noqa: E731
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(conv(x)), atol=1e-5, rtol=0)
    assert np.abs(to_numpy(layer(x))).max() > 0.05
    if keras.backend.backend() in ("torch", "jax"):  # and the same gradients (fine-tuning the stem)
        out_weights = np.linspace(-1, 1, to_numpy(layer(x)).size).reshape(to_numpy(layer(x)).shape)
        grads = [_input_and_weight_gradients(layer, fn, x, out_weights) for fn in (layer, conv)]
        for got, expected in zip(*grads):
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        half = layers.PatchEmbedding(6, patch, **kwargs)
        half.build(x.shape)
        if lora:
            half.enable_lora(lora)
        half.set_weights(layer.get_weights())
        got = to_numpy(half(x))
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype("float32"), to_numpy(layer(x)), atol=1e-2, rtol=0)
    finally:
        keras.config.set_dtype_policy(previous)


def test_sequencer2d_block_residuals_and_drop_path():
    x = random_images(2, 3, 4, 8)
    block = layers.Sequencer2DBlock(2, mlp_ratio=2.0, drop_path_rate=0.0)
    y = to_numpy(block(x))
    assert y.shape == x.shape
    assert block.mlp_fc1.units == 16
    # zeroing both branch outputs makes the block the identity (pure residual)
    for dense in (block.rnn_tokens.fc, block.mlp_fc2):
        dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    np.testing.assert_allclose(to_numpy(block(x)), x, atol=1e-6)
    assert np.abs(y - x).max() > 1e-3
    # with drop path, training outputs vary and inference does not
    dropping = layers.Sequencer2DBlock(2, drop_path_rate=0.5)
    a = to_numpy(dropping(x, training=False))
    np.testing.assert_array_equal(a, to_numpy(dropping(x, training=False)))
    assert any(np.abs(to_numpy(dropping(x, training=True)) - a).max() > 1e-4 for _ in range(5))


def test_the_token_mixer_is_a_part_of_the_block():
    """``token_mixer`` picks the block's mixer; the VanillaSequencer block is
    the block with the 1-D mixer under its own saved name and config."""
    x = random_images(2, 3, 4, 6)
    vanilla = layers.VanillaSequencerBlock(3, mlp_ratio=2.0)
    composed = layers.Sequencer2DBlock(3, mlp_ratio=2.0, with_fc=False, token_mixer="1d")
    for block in (vanilla, composed):
        block.build(x.shape)
    composed.set_weights(vanilla.get_weights())
    assert isinstance(composed.rnn_tokens, layers.BiLSTM1D)
    np.testing.assert_allclose(to_numpy(composed(x)), to_numpy(vanilla(x)), atol=1e-6, rtol=0)
    config = vanilla.get_config()
    assert "token_mixer" not in config and "union" not in config
    assert composed.get_config()["token_mixer"] == "1d" and "union" not in composed.get_config()
    clone = layers.Sequencer2DBlock.from_config(composed.get_config())
    assert isinstance(clone.rnn_tokens, layers.BiLSTM1D) and clone.resolved_implementation == "keras"
    default = layers.Sequencer2DBlock(3).get_config()
    assert "token_mixer" not in default and default["union"] == "cat"
    with pytest.raises(ValueError, match="token_mixer '3d'"):
        layers.Sequencer2DBlock(3, token_mixer="3d")


def test_block_parts_are_its_sublayers():
    block = layers.Sequencer2DBlock(2, mlp_ratio=2.0, drop_path_rate=0.25)
    block.build((1, 3, 4, 8))
    parts = block.parts()
    assert parts.mixer is block.rnn_tokens and parts.mixer_fc is block.rnn_tokens.fc
    assert parts.mix == block.rnn_tokens.mix and parts.drop_path_rate == 0.25
    assert (parts.norm1, parts.norm2, parts.mlp_fc1, parts.mlp_fc2, parts.drop_path) == (
        block.norm1,
        block.norm2,
        block.mlp_fc1,
        block.mlp_fc2,
        block.drop_path,
    )
    vanilla = layers.VanillaSequencerBlock(2)
    vanilla.build((1, 3, 4, 4))
    assert vanilla.parts().mix is None and vanilla.parts().mixer_fc is None


def test_image_input_check():
    check = layers.ImageInputCheck(3, 14, model_name="m")
    x = np.zeros((1, 14, 20, 3), "float32")
    np.testing.assert_array_equal(to_numpy(check(x)), x)
    with pytest.raises(ValueError, match="3 channels"):
        check(np.zeros((1, 14, 14, 4), "float32"))
    with pytest.raises(ValueError, match="at least 14x14"):
        check(np.zeros((1, 13, 20, 3), "float32"))
    with pytest.raises(ValueError, match="batch of images"):
        check(np.zeros((14, 14, 3), "float32"))


# Every public layer through the shared harness (tests/harness.py): registered name,
# config and .keras round trips, keras against fused path, output shape.
# name: (class, constructor arguments, input shape, output shape)
LAYER_CASES = {
    "bilstm2d": (layers.BiLSTM2D, dict(hidden_size=3), (2, 3, 5, 6), (2, 3, 5, 6)),
    "bilstm2d_gru_add_one_direction": (
        layers.BiLSTM2D,
        dict(hidden_size=3, bidirectional=False, union="add", rnn_type="gru"),
        (1, 4, 6, 3),
        (1, 4, 6, 3),
    ),
    "bilstm2d_vertical_without_fc": (
        layers.BiLSTM2D,
        dict(hidden_size=3, union="vertical", with_fc=False),
        (1, 4, 6, 6),
        (1, 4, 6, 6),
    ),
    "bilstm1d": (layers.BiLSTM1D, dict(hidden_size=3), (2, 3, 4, 6), (2, 3, 4, 6)),
    "sequencer2d_block": (
        layers.Sequencer2DBlock,
        dict(hidden_size=3, mlp_ratio=2.0, union="cat", drop_path_rate=0.1),
        (1, 4, 6, 6),
        (1, 4, 6, 6),
    ),
    "vanilla_block": (layers.VanillaSequencerBlock, dict(hidden_size=3, mlp_ratio=2.0), (1, 3, 4, 6), (1, 3, 4, 6)),
    "patch_embedding": (layers.PatchEmbedding, dict(filters=5, patch_size=2), (1, 4, 6, 3), (1, 2, 3, 5)),
    "position_embedding": (layers.PositionEmbedding, {}, (2, 3, 4, 6), (2, 3, 4, 6)),
    "drop_path": (layers.DropPath, dict(rate=0.2, seed=3), (1, 4, 6, 3), (1, 4, 6, 3)),
    "image_input_check": (layers.ImageInputCheck, dict(channels=3, min_size=2, model_name="x"), (1, 4, 6, 3), None),
    "channels_first_input": (ChannelsFirstInput, dict(channels=3), (1, 3, 4, 6), (1, 4, 6, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_public_layer(name):
    cls, kwargs, input_shape, output_shape = LAYER_CASES[name]
    run_layer_test(cls, kwargs, input_shape, output_shape)


def test_every_public_layer_goes_through_the_harness():
    public = {
        obj
        for obj in vars(layers).values()
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer) and obj.__module__ == layers.__name__
    }
    covered = {case[0] for case in LAYER_CASES.values()}
    assert public <= covered, sorted(c.__name__ for c in public - covered)
