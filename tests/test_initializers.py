"""keras_sequencer.initializers: the builders' ``initialization`` ("keras", the
default, and the paper's "original") against timm's statistics, its
reproducibility, save / reload, and apply_original_initialization."""

import math

import keras
import numpy as np
import pytest

from keras_sequencer.initializers import INITIALIZATIONS, apply_original_initialization
from keras_sequencer.models import Sequencer2D
from keras_sequencer.training import config as training_config
from tests.helpers import MICRO_ARCH, random_images, save_and_reload, tiny_arch, to_numpy

torch = pytest.importorskip("torch")


def build(arch, initialization=None, seed=0, **kwargs):
    """``Sequencer2D(**arch)`` (with ``initialization`` unless None) built right
    after ``keras.utils.set_random_seed(seed)``, and its weights by path (the
    RNN layers' paths hold names Keras numbers per session: compare two models'
    weights in order, :func:`assert_same_weights`)."""
    keras.utils.set_random_seed(seed)
    options = dict(kwargs) if initialization is None else dict(kwargs, initialization=initialization)
    model = Sequencer2D(**arch, **options)
    return model, {v.path: to_numpy(v) for v in model.weights}


def assert_same_weights(model, other):
    assert len(model.weights) == len(other.weights)
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)


def rnn_weight(weights, prefix, name):
    """The value of the first ``name`` weight of an RNN cell under ``prefix``."""
    return weights[next(p for p in weights if p.startswith(prefix) and p.endswith(f"_cell/{name}"))]


def test_original_initialisation_matches_timm_statistics():
    timm_sequencer = pytest.importorskip("timm.models.sequencer")
    arch = tiny_arch(2, first_patch=4, width=48, hidden=32)  # wide enough for the statistics
    model, ours = build(arch, "original", input_shape=(32, 32, 3), classes=10)
    reference = timm_sequencer.Sequencer2d(num_classes=10, **arch)
    theirs = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    assert not ours["head/kernel"].any() and not ours["head/bias"].any()
    pairs = [
        ("stem/kernel", "stem.proj.weight"),
        ("stages_1_downsample/kernel", "stages.1.downsample.down.weight"),
        ("stages_0_blocks_0/mlp_fc1/kernel", "stages.0.blocks.0.mlp_channels.fc1.weight"),
        ("stages_0_blocks_0/rnn_tokens/fc/kernel", "stages.0.blocks.0.rnn_tokens.fc.weight"),
    ]
    for path, name in pairs:
        assert ours[path].std() == pytest.approx(theirs[name].std(), rel=0.1), path
    assert not ours["stem/bias"].any() and not ours["stages_0_blocks_0/rnn_tokens/fc/bias"].any()
    rnn_v = "stages_0_blocks_0/rnn_tokens/rnn_v"
    kernel, recurrent, bias = (rnn_weight(ours, rnn_v, name) for name in ("kernel", "recurrent_kernel", "bias"))
    bound = 1 / math.sqrt(32)
    for weight in (kernel, recurrent):
        assert np.abs(weight).max() <= bound and weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    torch_bias = (
        theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_ih_l0"]
        + theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_hh_l0"]
    )
    # the sum of two uniforms: std bound * sqrt(2/3), reaching past one bound, up to two
    assert bias.std() == pytest.approx(torch_bias.std(), rel=0.25)
    assert bound < np.abs(bias).max() <= 2 * bound
    forget = bias[32:64]  # Keras's gate order i, f, c, o: no unit_forget_bias ones
    assert abs(forget.mean()) < 0.1
    mlp_bias = ours["stages_0_blocks_0/mlp_fc1/bias"]
    assert 0 < np.abs(mlp_bias).max() < 1e-5
    np.testing.assert_array_equal(ours["norm/gamma"], 1.0)
    # every weight is created with its value: the same seed gives the same model
    again, _ = build(arch, "original", input_shape=(32, 32, 3), classes=10)
    assert_same_weights(again, model)
    _, other = build(arch, "original", seed=1, input_shape=(32, 32, 3), classes=10)
    assert not np.array_equal(other["stem/kernel"], ours["stem/kernel"])
    assert not np.array_equal(rnn_weight(other, rnn_v, "bias"), bias)


def test_default_build_keeps_keras_initialisation():
    """Left out, ``initialization`` is ``"keras"``: the same weights as naming it,
    Keras's head and LSTM forget-gate ones, and the blocks' configs do not
    carry the option (a saved default model is the same file as before)."""
    default, weights = build(MICRO_ARCH, classes=5)
    keras_init, keras_weights = build(MICRO_ARCH, "keras", classes=5)
    original, original_weights = build(MICRO_ARCH, "original", classes=5)
    assert_same_weights(keras_init, default)
    assert weights["head/kernel"].any() and not original_weights["head/kernel"].any()
    hidden = MICRO_ARCH["hidden_sizes"][0]
    forget = rnn_weight(weights, "stages_0_blocks_0/rnn_tokens/rnn_v", "bias")[hidden : 2 * hidden]
    np.testing.assert_array_equal(forget, 1.0)  # Keras's unit_forget_bias
    kernels = [(a, b) for a, b in zip(default.weights, original.weights) if a.path.endswith("kernel")]
    assert kernels and all(not np.array_equal(to_numpy(a), to_numpy(b)) for a, b in kernels)
    assert default.get_config() == keras_init.get_config()
    for layer in default.layers:
        assert "initialization" not in layer.get_config(), layer.name
        if "_blocks_" in layer.name:  # the option only picks initializers
            assert original.get_layer(layer.name).get_config() == layer.get_config()


@pytest.mark.parametrize("rnn_type", ["gru", "rnn"])
def test_original_bias_of_gru_and_simple_rnn(rnn_type):
    """A GRU's ``(2, 3h)`` bias holds PyTorch's two biases, one uniform each;
    a SimpleRNN's one bias is their sum, as an LSTM's."""
    arch = tiny_arch(1, first_patch=4, width=16, hidden=64, rnn_type=rnn_type)
    _, weights = build(arch, "original", classes=3)
    bias = rnn_weight(weights, "stages_0_blocks_0/rnn_tokens/rnn_v", "bias")
    bound = 1 / math.sqrt(64)
    if rnn_type == "gru":  # 384 entries: a sum of two would pass one bound
        assert bias.shape == (2, 192) and np.abs(bias).max() <= bound
        assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    else:  # 64 entries, a quarter of them past one bound on average
        assert bias.shape == (64,) and bound < np.abs(bias).max() <= 2 * bound
        assert bias.std() == pytest.approx(bound * math.sqrt(2 / 3), rel=0.3)


def test_original_model_saves_and_reloads_identically():
    model, weights = build(MICRO_ARCH, "original", classes=4, classifier_activation=None)
    # the zero head would make every output 0: give it values, as training would
    head = np.random.RandomState(0).normal(size=weights["head/kernel"].shape).astype("float32")
    model.get_layer("head").kernel.assign(head)
    x = random_images(2, 16, 16)
    expected = to_numpy(model(x))
    assert np.abs(expected).max() > 0
    restored = save_and_reload(model)
    np.testing.assert_array_equal(to_numpy(restored(x)), expected)
    assert_same_weights(restored, model)


def test_unknown_initialization_is_a_clear_error():
    with pytest.raises(ValueError, match="initialization must be one of .*'timm'"):
        Sequencer2D(**MICRO_ARCH, initialization="timm")
    assert set(training_config.INITIALIZATIONS) == set(INITIALIZATIONS)  # --init offers the builders' values


def test_apply_original_initialization_reinitialises_a_built_model():
    model, keras_weights = build(MICRO_ARCH, classes=4)
    apply_original_initialization(model, seed=0)
    weights = {v.path: to_numpy(v) for v in model.weights}
    assert not weights["head/kernel"].any() and keras_weights["head/kernel"].any()
    hidden = MICRO_ARCH["hidden_sizes"][0]
    bias = rnn_weight(weights, "stages_0_blocks_0/rnn_tokens/rnn_v", "bias")
    assert np.abs(bias).max() <= 2 / math.sqrt(hidden) and not np.all(bias[hidden : 2 * hidden] == 1.0)
    assert 0 < np.abs(weights["stages_0_blocks_0/mlp_fc1/bias"]).max() < 1e-5
    again, _ = build(MICRO_ARCH, classes=4, seed=5)
    apply_original_initialization(again, seed=0)
    assert_same_weights(again, model)
