"""keras_sequencer.weights: the builders' ``weights=`` argument with ``.safetensors`` and
``.weights.h5`` files, and the refusal of another variant's weights."""

import numpy as np
import pytest

from keras_sequencer import Sequencer2D
from keras_sequencer.cli import main as cli_main
from tests.helpers import (
    TINY_ARCH,
    random_images,
    state_dict_numpy,
    timm_and_keras,
    timm_forward,
    to_numpy,
)


def test_weights_argument_accepts_safetensors_and_h5(tmp_path):
    from safetensors.numpy import save_file

    reference, _ = timm_and_keras(TINY_ARCH, seed=5)
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


@pytest.mark.slow
def test_keras_weights_of_a_trained_model_load_without_its_optimizer_state(tmp_path):
    """save_weights of a compiled, fitted model also writes the optimizer's variables:
    the model weights load, the optimizer state is left out, with or without the head."""
    from keras_sequencer.weights import stored_classes
    from tests.helpers import TINY_TRAIN_ARCH

    trained = Sequencer2D(**TINY_TRAIN_ARCH, classes=3, input_shape=(16, 16, 3))
    trained.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    images = random_images(4, 16, 16, seed=1)
    trained.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    path = tmp_path / "best.weights.h5"
    trained.save_weights(str(path))
    import h5py

    with h5py.File(path) as f:
        assert "optimizer" in f  # what the loader must tolerate
    assert stored_classes(path) == 3
    loaded = Sequencer2D(**TINY_TRAIN_ARCH, classes=3, input_shape=(16, 16, 3), weights=str(path))
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(trained(images)), atol=1e-6)
    backbone = Sequencer2D(**TINY_TRAIN_ARCH, include_top=False, input_shape=(16, 16, 3), weights=str(path))
    assert backbone.get_layer("stem").get_weights()[0].tolist() == trained.get_layer("stem").get_weights()[0].tolist()
    with pytest.raises(ValueError, match="another architecture.*missing tensors"):
        Sequencer2D(**dict(TINY_TRAIN_ARCH, layers=(2,)), classes=3, input_shape=(16, 16, 3), weights=str(path))


def test_loading_a_keras_weights_file_writes_no_copy_of_the_weights(tmp_path, monkeypatch):
    """The file's layout is checked against the model's own, read off the model:
    no temporary file, no save_weights, also when the heads differ."""
    import tempfile

    import keras

    from tests.helpers import assert_weights_equal, layer_weights

    source = Sequencer2D(**TINY_ARCH, classes=10)
    path = tmp_path / "source.weights.h5"
    source.save_weights(str(path))
    reference = layer_weights(source)

    def refuse(*args, **kwargs):
        raise AssertionError("a copy of the weights was written while loading")

    monkeypatch.setattr(keras.Model, "save_weights", refuse)
    for name in ("mkstemp", "mkdtemp", "TemporaryDirectory", "NamedTemporaryFile", "TemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    assert_weights_equal(Sequencer2D(**TINY_ARCH, classes=10, weights=str(path)), reference)
    assert_weights_equal(Sequencer2D(**TINY_ARCH, include_top=False, weights=str(path)), reference, skip=["head"])
    with pytest.warns(UserWarning, match="10 classes and the model 3"):
        other = Sequencer2D(**TINY_ARCH, classes=3, weights=str(path))
    assert_weights_equal(other, dict(reference, head=other.get_layer("head").get_weights()))
    with pytest.raises(ValueError, match="another architecture.*unexpected tensors"):
        Sequencer2D(**dict(TINY_ARCH, layers=(2, 1, 1, 1)), include_top=False, weights=str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.weights.h5"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(classes=3), dict(include_top=False), dict(include_top=False, pooling="max"), dict(stem_norm=True)],
    ids=["top", "3_classes", "no_top", "max_pool", "stem_norm"],
)
def test_the_layout_read_off_the_model_is_the_one_save_weights_writes(kwargs, tmp_path):
    """keras_layout follows Keras' saving walk: a Keras that changes it fails here."""
    import h5py

    from keras_sequencer.weights import HEAD_GROUP, keras_layout

    model = Sequencer2D(**TINY_ARCH, **kwargs)
    path = tmp_path / "model.weights.h5"
    model.save_weights(str(path))
    written = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: written.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    assert keras_layout(model) == written
    head = {name for name in written if name.startswith(HEAD_GROUP + "/")}
    assert head == ({f"{HEAD_GROUP}/vars/0", f"{HEAD_GROUP}/vars/1"} if kwargs.get("include_top", True) else set())
