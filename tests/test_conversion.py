"""Weight port: timm / okojoalg checkpoints -> Keras, checked against timm's outputs."""

import os
import re

import numpy as np
import pytest

import keras_sequencer
from keras_sequencer import Sequencer2D, conversion, registry
from keras_sequencer.cli import main as cli_main
from tests.helpers import (
    TINY_ARCH,
    random_images,
    requires_timm,
    state_dict_numpy,
    timm_forward,
    timm_model,
    to_numpy,
)

pytestmark = requires_timm

# Variants of the BiLSTM2D options; embed dims chosen so with_fc=False is valid
# (union output channels == embed dim).
VARIANTS = {
    "cat": dict(TINY_ARCH),
    "add_unidirectional": dict(TINY_ARCH, union="add", bidirectional=False),
    "vertical": dict(TINY_ARCH, union="vertical"),
    "horizontal_no_fc": dict(TINY_ARCH, union="horizontal", with_fc=False, embed_dims=(8, 12, 12, 12)),
    "cat_no_fc": dict(TINY_ARCH, with_fc=False, embed_dims=(16, 24, 24, 24)),
}


def _pair(arch, num_classes=10, seed=0, **keras_kwargs):
    reference = timm_model(arch, num_classes=num_classes, seed=seed)
    model = Sequencer2D(**arch, classes=num_classes, classifier_activation=None, **keras_kwargs)
    return reference, model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", [(28, 28), (42, 28)])
def test_parity_with_timm(variant, size):
    arch = VARIANTS[variant]
    reference, model = _pair(arch)
    conversion.load_state_dict(model, reference.state_dict())
    images = random_images(2, *size, seed=1)
    expected = timm_forward(reference, images)
    actual = to_numpy(model(images))
    assert np.abs(actual - expected).max() <= 1e-5
    assert np.abs(expected).max() > 0.1  # a meaningful comparison, not zeros


def test_features_match_timm_forward_features():
    reference, _ = _pair(TINY_ARCH)
    model = Sequencer2D(**TINY_ARCH, include_top=False)
    conversion.load_state_dict(model, reference.state_dict())  # head.* consumed, unused
    images = random_images(1, 56, 42, seed=2)
    expected = timm_forward(reference, images, features=True)  # NHWC after the final norm
    actual = to_numpy(model(images))
    assert actual.shape == expected.shape == (1, 4, 3, 24)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def _to_original_layout(state_dict, layers):
    """timm key layout -> okojoalg/sequencer's (the inverse of timm's checkpoint_filter_fn)."""
    out = {}
    for key, value in state_dict.items():
        match = re.match(r"stages\.(\d+)\.downsample\.down\.(.*)", key)
        if match:
            stage = int(match.group(1)) - 1
            key = f"blocks.{stage}.{layers[stage]}.down.{match.group(2)}"
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"blocks.\1.\2.", key)
        key = key.replace("head.fc.", "head.")
        out[key] = value
    return out


def test_original_okojoalg_layout_pth(tmp_path):
    import torch

    reference, model = _pair(TINY_ARCH, seed=3)
    original = _to_original_layout(reference.state_dict(), TINY_ARCH["layers"])
    assert "blocks.0.2.down.weight" in original and "head.weight" in original
    path = tmp_path / "sequencer_tiny.pth"
    torch.save({"model": original}, path)
    model = Sequencer2D(**TINY_ARCH, classes=10, classifier_activation=None, weights=str(path))
    images = random_images(1, 28, 28, seed=4)
    np.testing.assert_allclose(to_numpy(model(images)), timm_forward(reference, images), atol=1e-5)


def test_weights_argument_accepts_safetensors_and_h5(tmp_path):
    from safetensors.numpy import save_file

    reference, _ = _pair(TINY_ARCH, seed=5)
    checkpoint = tmp_path / "model.safetensors"
    save_file(state_dict_numpy(reference), str(checkpoint))
    images = random_images(2, 28, 42, seed=6)
    expected = timm_forward(reference, images)

    from_safetensors = Sequencer2D(**TINY_ARCH, classes=10, classifier_activation=None, weights=str(checkpoint))
    np.testing.assert_allclose(to_numpy(from_safetensors(images)), expected, atol=1e-5)

    # the converter CLI (architecture read off the checkpoint) -> .weights.h5 -> weights=
    h5 = tmp_path / "tiny.weights.h5"
    assert cli_main(["convert", str(checkpoint), str(h5)]) == 0
    from_h5 = Sequencer2D(**TINY_ARCH, classes=10, classifier_activation=None, weights=str(h5))
    np.testing.assert_allclose(to_numpy(from_h5(images)), expected, atol=1e-5)

    # include_top=False from both formats: everything but the head
    features = timm_forward(reference, images, features=True)
    for path in (checkpoint, h5):
        backbone = Sequencer2D(**TINY_ARCH, include_top=False, weights=str(path))
        np.testing.assert_allclose(to_numpy(backbone(images)), features, atol=1e-5)

    # another number of classes: backbone loaded, head fresh, with a warning
    with pytest.warns(UserWarning, match="10 classes"):
        other = Sequencer2D(**TINY_ARCH, classes=3, include_top=True, weights=str(h5))
    pooled = features.mean(axis=(1, 2))
    kernel, bias = other.get_layer("head").get_weights()
    logits = pooled @ kernel + bias
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(to_numpy(other(images)), e / e.sum(-1, keepdims=True), atol=1e-5)


def test_infer_arch_and_convert_checks_variant(tmp_path):
    from safetensors.numpy import save_file

    arch = VARIANTS["horizontal_no_fc"]
    reference = timm_model(arch, num_classes=4)
    state = state_dict_numpy(reference)
    inferred = conversion.infer_arch(state)
    assert inferred == dict(arch, bidirectional=True, union="horizontal", with_fc=False, rnn_type="lstm")
    path = tmp_path / "x.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="unexpected tensors|missing tensors"):
        registry.convert_checkpoint(path, tmp_path / "out.weights.h5", model_name="sequencer2d_s")
    with pytest.raises(ValueError, match="weights.h5"):
        registry.convert_checkpoint(path, tmp_path / "out.h5")


def _loaded_error(state):
    model = Sequencer2D(**TINY_ARCH, classes=10)
    with pytest.raises(ValueError) as info:
        conversion.load_state_dict(model, state)
    return str(info.value)


def test_bad_checkpoints_name_the_tensor():
    state = state_dict_numpy(timm_model(TINY_ARCH, num_classes=10))
    missing = dict(state)
    del missing["stages.1.blocks.0.rnn_tokens.rnn_h.weight_hh_l0_reverse"]
    assert "missing tensors: stages.1.blocks.0.rnn_tokens.rnn_h.weight_hh_l0_reverse" in _loaded_error(missing)

    extra = dict(state, **{"stages.0.blocks.7.norm1.weight": np.ones(16, "float32")})
    assert "unexpected tensors: stages.0.blocks.7.norm1.weight" in _loaded_error(extra)

    shaped = dict(state)
    shaped["stages.2.blocks.1.mlp_channels.fc1.weight"] = np.ones((70, 24), "float32")
    message = _loaded_error(shaped)
    assert "stages.2.blocks.1.mlp_channels.fc1.weight has shape (70, 24)" in message

    # a checkpoint of another variant (deeper stage 3): never a silent partial load
    deeper = state_dict_numpy(timm_model(dict(TINY_ARCH, layers=(2, 1, 3, 1)), num_classes=10))
    assert "unexpected tensors: stages.2.blocks.2." in _loaded_error(deeper)

    # nothing was assigned by the failed loads: the model is untouched
    model = Sequencer2D(**TINY_ARCH, classes=10)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError):
        conversion.load_state_dict(model, shaped)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unreadable_checkpoint_files(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors"):
        conversion.read_checkpoint(bad)
    with pytest.raises(ValueError, match="Unknown"):
        Sequencer2D(**TINY_ARCH, weights=str(_touch(tmp_path / "weights.npz")))


def _touch(path):
    path.write_bytes(b"")
    return path


def test_public_api():
    for name in ("Sequencer2D", "Sequencer2DS", "Sequencer2DM", "Sequencer2DL", "layers"):
        assert hasattr(keras_sequencer, name)
    assert os.path.exists(os.path.join(os.path.dirname(__file__), "..", "weights_conversion", "convert.py"))


def test_keras_weights_of_another_variant_are_refused(tmp_path):
    """Keras' own load_weights ignores extra layers in a file; ours must not."""
    deeper = Sequencer2D(**dict(TINY_ARCH, layers=(2, 1, 3, 1)), classes=10)
    path = tmp_path / "deeper.weights.h5"
    deeper.save_weights(str(path))
    for kwargs in (dict(classes=10), dict(include_top=False)):
        with pytest.raises(ValueError, match="unexpected tensors"):
            Sequencer2D(**TINY_ARCH, weights=str(path), **kwargs)
    wider = Sequencer2D(**dict(TINY_ARCH, hidden_sizes=(4, 6, 6, 8)), classes=10)
    wider.save_weights(str(path))
    with pytest.raises(ValueError, match="mis-shaped"):
        Sequencer2D(**TINY_ARCH, weights=str(path), classes=10)
