"""make_rnn builds the token mixers' RNNs by name; rnn_cells reads their cells back in direction order."""

import keras
import numpy as np
import pytest

from keras_sequencer.rnn import RNN_TYPES, make_rnn, rnn_cells


@pytest.mark.parametrize("rnn_type", sorted(RNN_TYPES))
def test_rnn_cells_are_the_forward_then_the_backward_cell(rnn_type):
    rnn = make_rnn(rnn_type, 3, bidirectional=True, name="rnn")
    rnn.build((None, None, 4))
    forward, backward = rnn_cells(rnn)
    assert forward is rnn.forward_layer.cell and backward is rnn.backward_layer.cell
    assert not rnn.forward_layer.go_backwards and rnn.backward_layer.go_backwards
    assert isinstance(rnn.forward_layer, RNN_TYPES[rnn_type])


def test_a_one_directional_rnn_has_one_cell():
    rnn = make_rnn("lstm", 3, bidirectional=False, name="rnn")
    rnn.build((None, None, 4))
    assert rnn_cells(rnn) == [rnn.cell] and isinstance(rnn, keras.layers.LSTM) and rnn.return_sequences


def test_original_initialization_gives_each_direction_its_own_uniform_weights():
    """``initialization="original"``: PyTorch's uniform(+-1/sqrt(units)) LSTM weights,
    drawn separately for the two directions, and no Keras forget-gate ones."""
    rnn = make_rnn("lstm", 16, bidirectional=True, name="rnn", initialization="original")
    rnn.build((None, None, 4))
    forward, backward = (
        {w.path.rsplit("/", 1)[-1]: keras.ops.convert_to_numpy(w) for w in cell.weights} for cell in rnn_cells(rnn)
    )
    bound = 1 / np.sqrt(16)
    assert not any(cell.unit_forget_bias for cell in rnn_cells(rnn))
    for cell in (forward, backward):  # the bias: a sum of two such uniforms (64 entries)
        assert np.abs(cell["kernel"]).max() <= bound
        assert np.abs(cell["recurrent_kernel"]).max() <= bound < np.abs(cell["bias"]).max() <= 2 * bound
    assert not np.array_equal(forward["kernel"], backward["kernel"])
    assert not np.array_equal(forward["bias"], backward["bias"])
