import keras
import numpy as np
import pytest

from keras_sequencer import MODEL_CONFIGS, Sequencer2D, SequencerModel, registry, variants
from keras_sequencer.models import drop_path_schedule
from tests.harness import run_model_family_test
from tests.helpers import MICRO_ARCH, TINY_ARCH, quick_first, random_images, save_and_reload, tiny_arch, to_numpy


def test_configs_match_timm():
    assert MODEL_CONFIGS["sequencer2d_s"]["layers"] == (4, 3, 8, 3)
    assert MODEL_CONFIGS["sequencer2d_m"]["layers"] == (4, 3, 14, 3)
    assert MODEL_CONFIGS["sequencer2d_l"]["layers"] == (8, 8, 16, 4)
    for config in MODEL_CONFIGS.values():
        assert config["patch_sizes"] == (7, 2, 1, 1)
        assert config["embed_dims"] == (192, 384, 384, 384)
        assert config["hidden_sizes"] == (48, 96, 96, 96)
        assert config["mlp_ratios"] == (3.0, 3.0, 3.0, 3.0)


@pytest.mark.slow
def test_full_model_feature_shapes_at_224(full_size):
    """Sequencer2D-S's stage outputs and final features at 224x224 (the shared full S)."""
    model = full_size("sequencer2d_s")
    names = [f"stages_{i}_blocks_{n - 1}" for i, n in enumerate(MODEL_CONFIGS["sequencer2d_s"]["layers"])]
    stages = keras.Model(model.inputs, [model.get_layer(n).output for n in [*names, "norm"]])
    shapes = [tuple(shape) for shape in stages.compute_output_shape((None, 224, 224, 3))]
    assert shapes == [(None, 32, 32, 192), (None, 16, 16, 384), (None, 16, 16, 384), (None, 16, 16, 384)] + [
        (None, 16, 16, 384)
    ]


@pytest.mark.parametrize(
    "kwargs,image_shape,expected",
    quick_first(
        keep=3,
        several_names=True,
        cases=[
            (dict(), (2, 28, 42, 3), (2, 1000)),
            (dict(classes=7, classifier_activation=None), (1, 14, 14, 3), (1, 7)),
            (dict(include_top=False), (1, 56, 28, 3), (1, 4, 2, 24)),
            (dict(include_top=False, pooling="avg"), (2, 30, 17, 3), (2, 24)),
            (dict(include_top=False, pooling="max"), (1, 28, 28, 3), (1, 24)),
            (dict(input_shape=(28, 42, 3)), (3, 28, 42, 3), (3, 1000)),
            (dict(input_shape=(20, 20, 1)), (1, 20, 20, 1), (1, 1000)),
        ],
    ),
)
def test_output_shapes(kwargs, image_shape, expected):
    model = Sequencer2D(**TINY_ARCH, **kwargs)
    out = to_numpy(model(random_images(*image_shape)))
    assert out.shape == expected
    if kwargs.get("classifier_activation", "softmax") == "softmax" and kwargs.get("include_top", True):
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_input_tensor():
    inputs = keras.Input((28, 28, 3))
    model = Sequencer2D(**TINY_ARCH, input_tensor=inputs, include_top=False, pooling="avg")
    assert model.inputs[0] is inputs
    assert tuple(model.output.shape) == (None, 24)


def test_bad_inputs_raise_clear_errors():
    model = Sequencer2D(**TINY_ARCH)
    # Keras' own input check (or ours, ImageInputCheck) names the expected channels
    with pytest.raises(ValueError, match=r"3 channels|expected shape=\(None, None, None, 3\)"):
        model(np.zeros((1, 28, 28, 4), "float32"))
    with pytest.raises(ValueError, match="at least 14x14"):
        model(np.zeros((1, 13, 28, 3), "float32"))
    with pytest.raises(ValueError):
        model(np.zeros((28, 3), "float32"))
    with pytest.raises(ValueError, match="at least 14x14"):
        Sequencer2D(**TINY_ARCH, input_shape=(10, 64, 3))
    with pytest.raises(ValueError, match="input_shape"):
        Sequencer2D(**TINY_ARCH, input_shape=(64, 64))
    with pytest.raises(ValueError, match="hidden_sizes"):
        Sequencer2D(**dict(TINY_ARCH, hidden_sizes=(4, 4)))
    with pytest.raises(ValueError, match="pooling"):
        Sequencer2D(**TINY_ARCH, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="does not exist"):
        Sequencer2D(**TINY_ARCH, weights="/nonexistent/file.safetensors")


def test_predict_rejects_too_small_images():
    model = Sequencer2D(**TINY_ARCH)
    with pytest.raises(ValueError, match="at least 14x14"):
        model.predict(np.zeros((2, 12, 12, 3), "float32"), verbose=0)


def test_save_and_reload_keras_file_identical_outputs():
    model = Sequencer2D(**dict(TINY_ARCH, union="add"), drop_path_rate=0.1, classes=5)
    x = random_images(2, 28, 42)
    expected = to_numpy(model(x))
    restored = save_and_reload(model)
    assert type(restored) is SequencerModel  # with its JAX predict/evaluate compilation
    np.testing.assert_array_equal(to_numpy(restored(x)), expected)
    block = restored.get_layer("stages_0_blocks_1")  # block 1 of 6: rate 0.1 * 1 / 5
    assert block.drop_path_rate == pytest.approx(0.02) and block.rnn_tokens.union == "add"


def test_drop_path_rate_is_stochastic_only_in_training():
    model = Sequencer2D(**TINY_ARCH, drop_path_rate=0.5, classifier_activation=None)
    x = random_images(4, 28, 28)
    a = to_numpy(model(x, training=False))
    np.testing.assert_array_equal(a, to_numpy(model(x, training=False)))
    assert np.abs(to_numpy(model(x, training=True)) - a).max() > 1e-5


def test_inference_compilation_wraps_only_the_call_that_builds(monkeypatch):
    """Keras calls ``make_predict_function`` on every ``predict_on_batch``; the
    JAX compiler-option context (runtime.py) is entered only when it builds."""
    from keras_sequencer import runtime

    entered, real = [], runtime.jax_inference_compilation

    def counting():
        entered.append(True)
        return real()

    monkeypatch.setattr(runtime, "jax_inference_compilation", counting)
    model = Sequencer2D(**TINY_ARCH, classes=3)
    x = random_images(1, 28, 28)
    first = model.predict_on_batch(x)
    np.testing.assert_allclose(model.predict_on_batch(x), first, rtol=1e-6, atol=1e-7)
    assert len(entered) == 1
    model.make_predict_function(force=True)  # a forced rebuild compiles again
    assert len(entered) == 2


@pytest.mark.parametrize("implementation", ["keras", "fused"])
def test_every_layer_is_built_with_the_model(implementation):
    """A freshly built model has every layer built. Otherwise Keras's trainers
    first build the rest by running the whole model once more (eagerly in JAX's
    ``predict_on_batch``, symbolically in ``fit``/``evaluate``), which makes a
    full-size model's first predict call on JAX much slower."""
    model = Sequencer2D(**TINY_ARCH, drop_path_rate=0.1, implementation=implementation)
    assert [layer.name for layer in model._flatten_layers() if not layer.built] == []


@pytest.fixture
def channels_first():
    """``keras.config.image_data_format()`` is ``"channels_first"`` inside the test."""
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


@pytest.mark.parametrize(
    "kwargs",
    quick_first(
        [
            dict(classes=5),
            dict(include_top=False),
            dict(include_top=False, pooling="avg"),
            dict(include_top=False, pooling="max", include_preprocessing=True),
        ]
    ),
)
def test_channels_first_equals_channels_last_on_transposed_images(kwargs, tmp_path):
    """A model built under ``channels_first`` takes ``(B, 3, H, W)`` images, reads the
    same ``.weights.h5`` as the channels-last model and returns its outputs on the
    transposed images exactly; 4-D features come out as ``(B, C, H', W')``."""
    reference = Sequencer2D(**TINY_ARCH, **kwargs)
    path = str(tmp_path / "tiny.weights.h5")
    reference.save_weights(path)
    x = random_images(2, 28, 42)
    expected = to_numpy(reference(x))
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = Sequencer2D(**TINY_ARCH, **kwargs, weights=path)
        assert tuple(model.inputs[0].shape) == (None, 3, None, None)
        out = to_numpy(model(x.transpose(0, 3, 1, 2)))
        restored = save_and_reload(model)
    finally:
        keras.config.set_image_data_format(previous)
    if out.ndim == 4:
        assert out.shape == (2, 24, 2, 3)
        out = out.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, expected)
    # the saved model keeps its layout whatever the loading session's data format
    reloaded = to_numpy(restored(x.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(reloaded.transpose(0, 2, 3, 1) if reloaded.ndim == 4 else reloaded, expected)


def test_channels_first_input_shape_and_errors(channels_first):
    model = Sequencer2D(**TINY_ARCH, input_shape=(3, 28, 42), classes=4)
    assert tuple(model.inputs[0].shape) == (None, 3, 28, 42)
    assert to_numpy(model(random_images(1, 28, 42).transpose(0, 3, 1, 2))).shape == (1, 4)
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)|expected shape=\(None, 3, None, None\)"):
        Sequencer2D(**TINY_ARCH)(np.zeros((1, 28, 28, 3), "float32"))
    with pytest.raises(ValueError, match=r"at least 14x14.*\(3, 10, 64\)"):
        Sequencer2D(**TINY_ARCH, input_shape=(3, 10, 64))
    with pytest.raises(ValueError, match=r"input_shape must be \(channels, height, width\)"):
        Sequencer2D(**TINY_ARCH, input_shape=(64, 64))
    with pytest.raises(ValueError, match="at least 14x14"):
        Sequencer2D(**TINY_ARCH)(np.zeros((1, 3, 13, 28), "float32"))


def test_drop_path_rates_follow_the_original_linear_schedule():
    torch = pytest.importorskip("torch")
    rates = torch.linspace(0, 0.3, sum(TINY_ARCH["layers"])).tolist()
    model = Sequencer2D(**TINY_ARCH, drop_path_rate=0.3)
    blocks = [layer for layer in model.layers if "_blocks_" in layer.name]
    np.testing.assert_allclose([b.drop_path_rate for b in blocks], rates, rtol=1e-6)
    assert drop_path_schedule(0.2, 1) == [0.0] and drop_path_schedule(0.0, 3) == [0.0] * 3


# Every model family through the shared harness (tests/harness.py): .keras round trip,
# keras against fused path, the exported graph and int8. family: (arch, options)
FAMILY_CASES = {
    "sequencer2d": (MICRO_ARCH, dict(union="add", drop_path_rate=0.1)),
    # VanillaSequencer without fc: 2 * hidden == channels; a fixed size for the embedding
    "vanilla": (tiny_arch(2, first_patch=4, width=8, mlp_ratio=2.0), dict(position_embedding=True, stem_norm=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_model_family(family):
    arch, options = FAMILY_CASES[family]
    size = (16, 24)
    if options.get("position_embedding"):
        options = dict(options, input_shape=size + (3,))
    run_model_family_test(registry.BUILDERS[family], arch, size, classifier_activation=None, **options)


def test_every_family_goes_through_the_harness():
    assert set(FAMILY_CASES) == set(variants.FAMILIES) == set(registry.BUILDERS)
