"""make_rnn builds the token mixers' RNNs by name; rnn_cells reads their cells back in direction order."""

import keras
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
