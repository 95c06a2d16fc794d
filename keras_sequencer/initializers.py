"""The original Sequencer2D initialisation (timm's ``sequencer._init_weights``)
as Keras initializers, and :func:`apply_original_initialization` to give a
freshly built model those values.

==============================  ==============================================
weight                          initial values
==============================  ==============================================
Dense kernels                   Xavier (Glorot) uniform
``head`` Dense                  zeros (kernel and bias)
``mlp_fc*`` biases              N(0, 1e-6)
other Dense biases              zeros
convolution (patch embedding)   LeCun normal (truncated, fan-in), zero bias
LayerNorm                       gamma 1, beta 0
LSTM / GRU / RNN kernels        uniform(-1/sqrt(h), 1/sqrt(h)), h its units
LSTM / RNN bias                 sum of two such uniforms (PyTorch's
                                ``bias_ih + bias_hh`` in one Keras bias)
GRU bias ``(2, 3h)``            one such uniform per entry (input, recurrent)
position embedding              left as built (truncated normal, std 0.02)
==============================  ==============================================

Keras's ``LecunNormal`` and ``GlorotUniform`` are timm's ``lecun_normal_``
(truncated at two standard deviations, std corrected) and
``xavier_uniform_``; Keras kernels are ``(in, out)`` / ``(kh, kw, in, out)``
so the fans are the same.
"""

import math

import keras
import numpy as np

RNN_CELLS = ("lstm_cell", "gru_cell", "simple_rnn_cell")


class RNNUniform(keras.initializers.Initializer):
    """``uniform(-1/sqrt(units), 1/sqrt(units))`` (PyTorch's RNN initialisation);
    with ``terms=2`` the sum of two independent such draws (a Keras bias that
    stands for PyTorch's ``bias_ih + bias_hh``)."""

    def __init__(self, units, terms=1, seed=None):
        self.units = int(units)
        self.terms = int(terms)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        bound = 1.0 / math.sqrt(self.units)
        seed = self.seed
        total = 0
        for term in range(self.terms):
            total = total + keras.random.uniform(
                shape, -bound, bound, dtype=dtype, seed=None if seed is None else seed + term
            )
        return total

    def get_config(self):
        return {"units": self.units, "terms": self.terms, "seed": self.seed}


def original_initializer(path, shape, rnn_units=None, seed=None):
    """The initializer of weight ``path`` (a Keras variable path such as
    ``stages_0_blocks_0/mlp_fc1/bias``) of ``shape``; ``rnn_units`` for RNN
    cell weights; ``seed`` (int or None) for the random ones. ``None``: keep
    the weight as built."""
    parts = path.split("/")
    layer, name = parts[-2] if len(parts) > 1 else "", parts[-1]
    if layer in RNN_CELLS:
        gru_bias = layer == "gru_cell" and name == "bias" and len(shape) == 2
        terms = 2 if name == "bias" and not gru_bias else 1
        return RNNUniform(rnn_units, terms=terms, seed=seed)
    if parts[0] == "head":
        return keras.initializers.Zeros()
    if name == "gamma":
        return keras.initializers.Ones()
    if name == "beta":
        return keras.initializers.Zeros()
    if name == "kernel" and len(shape) == 4:
        return keras.initializers.LecunNormal(seed=seed)
    if name == "kernel" and len(shape) == 2:
        return keras.initializers.GlorotUniform(seed=seed)
    if name == "bias":
        if layer.startswith("mlp"):
            return keras.initializers.RandomNormal(stddev=1e-6, seed=seed)
        return keras.initializers.Zeros()
    return None


def apply_original_initialization(model, seed=None):
    """Re-initialises every weight of ``model`` as the original does (see the
    module's table). Call it on a freshly built model only (it overwrites
    trained or loaded values). ``seed``: make the values reproducible."""
    rng = np.random.default_rng(seed) if seed is not None else None
    variables = list(model.weights)
    units = {}
    for variable in variables:
        if variable.path.endswith("/recurrent_kernel"):
            units[variable.path.rsplit("/", 1)[0]] = variable.shape[0]
    for variable in variables:
        cell = variable.path.rsplit("/", 1)[0]
        variable_seed = None if rng is None else int(rng.integers(2**30))
        initializer = original_initializer(variable.path, variable.shape, units.get(cell), variable_seed)
        if initializer is None:
            continue
        value = keras.ops.convert_to_numpy(initializer(variable.shape, dtype="float32"))
        variable.assign(np.asarray(value, dtype=variable.dtype))
