"""keras_sequencer.initializers: the paper's original initialisation against timm's
statistics."""

import math

import numpy as np
import pytest

from keras_sequencer.initializers import apply_original_initialization
from keras_sequencer.models import Sequencer2D
from tests.helpers import tiny_arch, to_numpy

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- initialisation, drop path
def test_original_initialisation_matches_timm_statistics():
    timm_sequencer = pytest.importorskip("timm.models.sequencer")
    arch = tiny_arch(2, first_patch=4, width=48, hidden=32)  # wide enough for the statistics
    model = Sequencer2D(**arch, input_shape=(32, 32, 3), classes=10)
    apply_original_initialization(model, seed=0)
    reference = timm_sequencer.Sequencer2d(num_classes=10, **arch)
    ours = {v.path: to_numpy(v) for v in model.weights}
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
    rnn = [p for p in ours if "stages_0_blocks_0/rnn_tokens/rnn_v" in p and "lstm_cell" in p]
    kernel = ours[next(p for p in rnn if p.endswith("/kernel"))]
    bias = ours[next(p for p in rnn if p.endswith("/bias"))]
    bound = 1 / math.sqrt(32)
    assert np.abs(kernel).max() <= bound and kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    torch_bias = (
        theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_ih_l0"]
        + theirs["stages.0.blocks.0.rnn_tokens.rnn_v.bias_hh_l0"]
    )
    assert bias.std() == pytest.approx(torch_bias.std(), rel=0.25)
    mlp_bias = ours["stages_0_blocks_0/mlp_fc1/bias"]
    assert 0 < np.abs(mlp_bias).max() < 1e-5
    again = Sequencer2D(**arch, input_shape=(32, 32, 3), classes=10)
    apply_original_initialization(again, seed=0)
    np.testing.assert_array_equal(to_numpy(again.weights[0]), ours[model.weights[0].path])
