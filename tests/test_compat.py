"""Files saved by an earlier release load with the same outputs.

``tests/fixtures/`` holds small models saved as ``.keras`` and ``.weights.h5``
by release 0.1.0 (before the package's modules were reorganised), with the
outputs that release computed on each backend (``make_fixtures.py``).
"""

import os

import keras
import numpy as np
import pytest

import keras_sequencer
from tests.fixtures import make_fixtures
from tests.helpers import quick_first

FIXTURES = os.path.dirname(make_fixtures.__file__)
NAMES = sorted(make_fixtures.models())


@pytest.fixture(scope="module")
def expected():
    path = os.path.join(FIXTURES, f"outputs-{keras.backend.backend()}.npz")
    with np.load(path) as outputs:
        return dict(outputs)


def test_fixtures_cover_every_model(expected):
    assert sorted(expected) == NAMES
    for name in NAMES:
        for suffix in (".keras", ".weights.h5"):
            assert os.path.exists(os.path.join(FIXTURES, name + suffix)), name + suffix


@pytest.mark.parametrize("name", quick_first(NAMES, keep=2))
def test_keras_file_loads_with_identical_outputs(name, expected):
    model = keras.saving.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    out = model.predict(make_fixtures.sample_input(), verbose=0)
    np.testing.assert_allclose(out, expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", quick_first(NAMES, keep=2))
def test_weights_file_loads_into_a_fresh_build(name, expected):
    keras.utils.set_random_seed(1)  # another initialisation than the saved one
    model = make_fixtures.models()[name]()
    before = model.predict(make_fixtures.sample_input(), verbose=0)
    assert not np.allclose(before, expected[name], atol=1e-4)
    model.load_weights(os.path.join(FIXTURES, f"{name}.weights.h5"))
    out = model.predict(make_fixtures.sample_input(), verbose=0)
    np.testing.assert_allclose(out, expected[name], rtol=0, atol=1e-6)


def test_weights_argument_reads_an_old_file(expected):
    """``weights=path`` of the builder (the converter's file format) still reads
    an old file, for the same head and for a new head (backbone only)."""
    path = os.path.join(FIXTURES, "sequencer2d_tiny.weights.h5")
    same = keras_sequencer.Sequencer2D(**make_fixtures.TINY, classes=5, name="sequencer2d_tiny", weights=path)
    x = make_fixtures.sample_input()
    np.testing.assert_allclose(same.predict(x, verbose=0), expected["sequencer2d_tiny"], atol=1e-6)
    with pytest.warns(UserWarning, match="classes"):
        other = keras_sequencer.Sequencer2D(**make_fixtures.TINY, classes=3, weights=path)
    for layer in same.layers:
        if layer.weights and layer.name != "head":
            twin = other.get_layer(layer.name)
            for a, b in zip(layer.get_weights(), twin.get_weights()):
                np.testing.assert_array_equal(a, b)


# The public API of release 0.1.0: the package's names and its layers module.
PUBLIC_NAMES = {
    "keras_sequencer": [
        "MODEL_CONFIGS",
        "MODEL_REGISTRY",
        "Sequencer2D",
        "Sequencer2DL",
        "Sequencer2DM",
        "Sequencer2DS",
        "SequencerModel",
        "VanillaSequencer",
        "create_model",
        "decode_predictions",
        "feature_extractor",
        "layers",
        "list_models",
        "load_image",
        "preprocess_input",
    ],
    "keras_sequencer.layers": [
        "BiLSTM1D",
        "BiLSTM2D",
        "DropPath",
        "IMPLEMENTATIONS",
        "ImageInputCheck",
        "PACKAGE",
        "PatchEmbedding",
        "PositionEmbedding",
        "RNN_TYPES",
        "Sequencer2DBlock",
        "UNIONS",
        "VanillaSequencerBlock",
        "fused_lstm",
        "make_rnn",
    ],
    "keras_sequencer.models": ["IMAGENET_MEAN", "IMAGENET_STD", "MODEL_CONFIGS"],
    "keras_sequencer.registry": ["MODEL_REGISTRY", "create_model", "get_spec", "list_models"],
    "keras_sequencer.pretrained": ["PRETRAINED", "cache_dir", "weights_cache_path"],
    "keras_sequencer.training": ["TrainConfig", "fit", "run", "build_model", "train_pipeline"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_public_names_of_the_previous_release_still_import(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC_NAMES[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"
