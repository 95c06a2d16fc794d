"""Fixtures of the command-line tests: the tiny registered model as weights files."""

import pytest

from keras_sequencer import registry
from tests.cli.helpers import INPUT_SIZE, NAME, register_tiny
from tests.helpers import TINY_ARCH, state_dict_numpy, timm_model


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """``make(num_classes, seed) -> (checkpoint path, timm model)``: random timm weights
    of the tiny model registered as ``NAME``, saved as ``.safetensors``."""
    from safetensors.numpy import save_file

    register_tiny(monkeypatch)

    def make(num_classes=1000, seed=7):
        torch_model = timm_model(TINY_ARCH, num_classes=num_classes, seed=seed)
        path = str(tmp_path / f"tiny{num_classes}.safetensors")
        save_file(state_dict_numpy(torch_model), path)
        return path, torch_model

    return make


@pytest.fixture
def tiny_weights(monkeypatch, tmp_path):
    """Path of a ``.weights.h5`` of the tiny model registered as ``NAME`` (1000 classes)."""
    register_tiny(monkeypatch, input_size=INPUT_SIZE)
    path = str(tmp_path / "tiny.weights.h5")
    registry.create_model(NAME, classes=1000).save_weights(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is built."""

    def fail(*args, **kwargs):
        raise AssertionError("a model was built before the inputs were checked")

    monkeypatch.setattr(registry, "create_model", fail)
