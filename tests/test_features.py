"""Stage features (timm features_only / forward_intermediates) and pooled embeddings."""

import keras
import numpy as np
import pytest

from keras_sequencer import Sequencer2D, feature_extractor
from keras_sequencer.conversion import load_state_dict
from tests.helpers import TINY_ARCH, random_images, requires_timm, timm_forward, timm_model, to_numpy

ATOL = 1e-4  # float32 parity of the port is ~1e-6; the tiny features are O(1)


def _timm_stages(torch_model, images, indices):
    import torch

    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        out = torch_model.forward_intermediates(x, indices=indices, output_fmt="NHWC", intermediates_only=True)
    return [o.numpy() for o in out]


@requires_timm
def test_stage_features_and_embeddings_match_timm():
    torch_model = timm_model(TINY_ARCH, seed=5)
    images = random_images(2, 42, 56, seed=3)
    backbone = Sequencer2D(**TINY_ARCH, include_top=False)
    load_state_dict(backbone, torch_model.state_dict())

    every_stage = feature_extractor(backbone, out_indices=(0, 1, 2, -1))
    outputs = [to_numpy(o) for o in every_stage(images)]
    expected = _timm_stages(torch_model, images, [0, 1, 2, 3])
    assert [o.shape for o in outputs] == [(2, 6, 8, 16), (2, 3, 4, 24), (2, 3, 4, 24), (2, 3, 4, 24)]
    for actual, wanted in zip(outputs, expected):
        np.testing.assert_allclose(actual, wanted, atol=ATOL)

    # The default is timm's out_indices (0, 1, 2); outputs come in the order asked for.
    def same(model, indices):  # identity: KerasTensor's == is symbolic
        return len(model.outputs) == len(indices) and all(
            a is every_stage.outputs[i] for a, i in zip(model.outputs, indices)
        )

    assert same(feature_extractor(backbone), [0, 1, 2])
    assert same(feature_extractor(backbone, out_indices=(-1, 1)), [3, 1])
    assert not same(feature_extractor(backbone, out_indices=(1, 3)), [3, 1])
    assert not np.allclose(outputs[2], outputs[3], atol=1e-2)  # stages 2 and 3 differ

    # forward_features: the final-norm feature map; pre-logits: its average.
    unpooled = timm_forward(torch_model, images, features=True)
    np.testing.assert_allclose(to_numpy(backbone(images)), unpooled, atol=ATOL)
    pooled_model = Sequencer2D(**TINY_ARCH, include_top=False, pooling="avg")
    load_state_dict(pooled_model, torch_model.state_dict())
    import torch

    with torch.no_grad():
        pre_logits = torch_model.forward_head(torch.from_numpy(unpooled), pre_logits=True).numpy()
    np.testing.assert_allclose(to_numpy(pooled_model(images)), pre_logits, atol=ATOL)


@pytest.mark.slow
@requires_timm
def test_sequencer2d_s_default_features_and_embedding_shapes(full_size):
    """The shared full S (tests/conftest.py): its default stage features are timm's
    ``features_only`` channels and reductions, and its pooled embedding has 384 values."""
    import timm

    reference = timm.create_model("sequencer2d_s", features_only=True, pretrained=False)
    model = full_size("sequencer2d_s")
    embedding = keras.layers.GlobalAveragePooling2D()(model.get_layer("norm").output)
    embedder = keras.Model(model.inputs, embedding)
    assert embedder.compute_output_shape((None, 224, 224, 3)) == (None, 384)
    features = feature_extractor(model)  # the stage layers of any Sequencer2D model
    shapes = [tuple(s) for s in features.compute_output_shape((None, 224, 224, 3))]
    assert shapes == [(None, 32, 32, 192), (None, 16, 16, 384), (None, 16, 16, 384)]
    assert [s[-1] for s in shapes] == reference.feature_info.channels()
    assert [224 // s[1] for s in shapes] == reference.feature_info.reduction()


def test_feature_extractor_by_name(monkeypatch):
    from keras_sequencer import variants

    monkeypatch.setitem(
        variants.VARIANTS, "sequencer2d_tiny", variants.Variant("sequencer2d_tiny", "sequencer2d", TINY_ARCH)
    )
    features = feature_extractor("sequencer2d_tiny", out_indices=(3, 0), input_shape=(56, 28, 3))
    assert [tuple(o.shape) for o in features.outputs] == [(None, 4, 2, 24), (None, 8, 4, 16)]
    assert features.name == "sequencer2d_tiny_features"


def test_feature_extractor_of_every_family_by_name():
    """Any registered name: a stage of 0 blocks (the CIFAR models' pointwise
    linear stage) is its patch embedding; the 1-D mixer's stages as Sequencer2D's."""
    small = feature_extractor("sequencer2d_cifar_small", out_indices=(0, 1, 2), input_shape=(32, 32, 3))
    assert [tuple(o.shape) for o in small.outputs] == [(None, 8, 8, 96), (None, 4, 4, 192), (None, 4, 4, 192)]
    layers = [small.get_layer(name) for name in ("stages_0_blocks_3", "stages_1_blocks_2", "stages_2_downsample")]
    assert all(o is layer.output for o, layer in zip(small.outputs, layers))  # identity: == is symbolic
    vanilla = feature_extractor("vanilla_bilstm_cifar", out_indices=(-1,), input_shape=(16, 16, 3))
    assert [tuple(o.shape) for o in vanilla.outputs] == [(None, 2, 2, 192)]


def test_feature_extractor_rejects_bad_arguments():
    backbone = Sequencer2D(**TINY_ARCH, include_top=False)
    for bad in [(4,), (-5,), (), (0.5,)]:
        with pytest.raises(ValueError, match="out_indices"):
            feature_extractor(backbone, out_indices=bad)
    with pytest.raises(ValueError, match="Unknown model"):
        feature_extractor("sequencer2d_xl")
    with pytest.raises(ValueError, match="only when model is a name"):
        feature_extractor(backbone, weights="imagenet")
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not a Sequencer2D"):
        feature_extractor(other)


def test_feature_maps_follow_a_channels_first_model():
    """Under ``channels_first`` the stage maps come out ``(B, C, H, W)``, equal to
    the channels-last model's maps on the transposed images."""
    reference = Sequencer2D(**TINY_ARCH, include_top=False)
    x = random_images(2, 28, 42)
    expected = [to_numpy(f) for f in feature_extractor(reference)(x)]
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = Sequencer2D(**TINY_ARCH, include_top=False)
        model.set_weights(reference.get_weights())
        features = feature_extractor(model)(x.transpose(0, 3, 1, 2))
    finally:
        keras.config.set_image_data_format(previous)
    assert len(features) == len(expected) == 3
    for got, want in zip(features, expected):
        got = to_numpy(got)
        assert got.shape == (want.shape[0], want.shape[3], want.shape[1], want.shape[2])
        np.testing.assert_array_equal(got.transpose(0, 2, 3, 1), want)
