"""The recurrent layers the token mixers run: :func:`make_rnn` builds one by
name (optionally ``Bidirectional``) and :func:`rnn_cells` gives its cells,
what the fused kernels and the export graph compute with.
"""

import keras

from keras_sequencer.initializers import layer_initializers

# Recurrent layer classes selectable by name (``rnn_type``). Keras GRU uses
# ``reset_after=True`` by default, which is the PyTorch GRU formulation.
RNN_TYPES = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "rnn": keras.layers.SimpleRNN,
}


def make_rnn(
    rnn_type: str, units: int, bidirectional: bool, name: str, initialization: str = "keras"
) -> keras.layers.Layer:
    """A sequence-returning ``rnn_type`` RNN named ``name``, wrapped in
    ``Bidirectional(merge_mode="concat")`` when ``bidirectional``; its weights
    start as ``initialization`` says (:func:`keras_sequencer.initializers.layer_initializers`:
    Keras's defaults, or the original's uniform(+-1/sqrt(units))).

    ``Bidirectional`` copies the layer it is given through
    ``serialize``/``deserialize``. Inside ``keras.saving.load_model`` that runs in
    an object-sharing scope keyed by ``id()``: once a throwaway layer is freed, a
    later one may get its ``id`` and be "deserialized" as an earlier block's
    layer (load then fails with "Forward layer and backward layer should have
    different go_backwards value", or silently shares a layer). So the backward
    layer is passed explicitly and the forward template is kept alive.
    """
    rnn_class = RNN_TYPES[rnn_type]
    if not bidirectional:
        return rnn_class(units, return_sequences=True, name=name, **layer_initializers(initialization, rnn_type, units))
    # each direction its own initializer instances (each draws its own seed)
    forward = rnn_class(units, return_sequences=True, **layer_initializers(initialization, rnn_type, units))
    backward = rnn_class(
        units, return_sequences=True, go_backwards=True, **layer_initializers(initialization, rnn_type, units)
    )
    rnn = keras.layers.Bidirectional(forward, backward_layer=backward, merge_mode="concat", name=name)
    object.__setattr__(rnn, "_forward_template", forward)  # untracked, keeps its id unique
    return rnn


def rnn_cells(rnn: keras.layers.Layer) -> list:
    """The cells of a Keras RNN layer made by :func:`make_rnn`: ``[forward]`` or,
    for a ``Bidirectional``, ``[forward, backward]``."""
    if isinstance(rnn, keras.layers.Bidirectional):
        return [rnn.forward_layer.cell, rnn.backward_layer.cell]
    return [rnn.cell]
