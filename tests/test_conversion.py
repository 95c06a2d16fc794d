"""Weight port: timm / okojoalg checkpoints -> Keras, checked against timm's outputs; the
full-size Sequencer2D-S/M/L against timm (parity to 1e-4)."""

import os
import re

import numpy as np
import pytest

import keras_sequencer
from keras_sequencer import Sequencer2D, conversion, registry
from tests.helpers import (
    TINY_ARCH,
    quick_first,
    random_images,
    requires_timm,
    run_model,
    state_dict_numpy,
    timm_and_keras,
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


# Every variant at a square size; the plain one also at a non-square size, where the
# columns and rows run as separate recurrences.
PARITY_CASES = [(variant, (28, 28)) for variant in sorted(VARIANTS)] + [("cat", (42, 28))]


@pytest.mark.parametrize("variant, size", quick_first(PARITY_CASES, keep=3, several_names=True))
def test_parity_with_timm(variant, size):
    arch = VARIANTS[variant]
    reference, model = timm_and_keras(arch)
    conversion.load_state_dict(model, reference.state_dict())
    images = random_images(2, *size, seed=1)
    expected = timm_forward(reference, images)
    actual = to_numpy(model(images))
    assert np.abs(actual - expected).max() <= 1e-5
    assert np.abs(expected).max() > 0.1  # a meaningful comparison, not zeros


def test_features_match_timm_forward_features():
    reference, _ = timm_and_keras(TINY_ARCH)
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

    reference, model = timm_and_keras(TINY_ARCH, seed=3)
    original = _to_original_layout(reference.state_dict(), TINY_ARCH["layers"])
    assert "blocks.0.2.down.weight" in original and "head.weight" in original
    path = tmp_path / "sequencer_tiny.pth"
    torch.save({"model": original}, path)
    model = Sequencer2D(**TINY_ARCH, classes=10, classifier_activation=None, weights=str(path))
    images = random_images(1, 28, 28, seed=4)
    np.testing.assert_allclose(to_numpy(model(images)), timm_forward(reference, images), atol=1e-5)


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


# timm's parameter counts (timm.create_model(name).parameters()) and ours: Keras keeps one
# LSTM bias per direction (b_ih + b_hh) where torch keeps two.
TIMM_PARAMS = {"sequencer2d_s": 27_651_688, "sequencer2d_m": 38_307_688, "sequencer2d_l": 54_298_216}
KERAS_PARAMS = {"sequencer2d_s": 27_627_112, "sequencer2d_m": 38_273_896, "sequencer2d_l": 54_249_064}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(KERAS_PARAMS))
def test_full_model_parity_with_timm(variant, full_size, record_property):
    """Sequencer2D-S/M/L from their builders against timm's (random weights, every tensor
    perturbed): the name, the parameter count, logits and pre-pool features within 1e-4
    at 224x224; S also at a non-square size (every size runs the same code at every
    width, and the tiny models' parity covers non-square grids)."""
    import keras

    reference = timm_model(variant=variant, seed=7)
    assert sum(p.numel() for p in reference.parameters()) == TIMM_PARAMS[variant]
    model = full_size(variant)
    assert model.name == variant and model.count_params() == KERAS_PARAMS[variant]
    conversion.load_state_dict(model, reference.state_dict())
    logits_and_features = keras.Model(model.inputs, [model.output, model.get_layer("norm").output])
    sizes = ((224, 224), (196, 252)) if variant == "sequencer2d_s" else ((224, 224),)
    for size in sizes:
        images = random_images(1, *size, seed=8)
        expected = timm_forward(reference, images)
        logits, features = run_model(logits_and_features, images)
        delta = float(np.abs(logits - expected).max())
        print(f"{variant} {size}: max |dlogit| = {delta:.3g}")
        record_property(f"max_abs_dlogit_{size[0]}x{size[1]}", delta)
        assert delta <= 1e-4
        assert np.abs(expected).std() > 0.1
        expected_features = timm_forward(reference, images, features=True)
        assert features.shape == expected_features.shape
        assert float(np.abs(features - expected_features).max()) <= 1e-4
