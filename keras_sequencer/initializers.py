"""The initial values of a freshly built model's weights: the builders'
``initialization`` (:data:`INITIALIZATIONS`).

``"keras"`` leaves every layer's Keras defaults. ``"original"`` is the
original Sequencer2D initialisation (timm's ``sequencer._init_weights``, run
by timm's model in its constructor): the layers are built with these Keras
initializers (:func:`layer_initializers`), so their variables are created
with the values below.

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
                                ``bias_ih + bias_hh`` in one Keras bias; no
                                Keras ``unit_forget_bias`` ones)
GRU bias ``(2, 3h)``            one such uniform per entry (input, recurrent)
position embedding              left as built (truncated normal, std 0.02)
==============================  ==============================================

Keras's ``LecunNormal`` and ``GlorotUniform`` are timm's ``lecun_normal_``
(truncated at two standard deviations, std corrected) and
``xavier_uniform_``; Keras kernels are ``(in, out)`` / ``(kh, kw, in, out)``
so the fans are the same. LayerNorm's and the plain Dense layers' Keras
defaults already are the original's values.

Unseeded, each initializer draws its seed when it is made, from Python's
``random`` as Keras's own do, so ``keras.utils.set_random_seed`` before
building makes the values reproducible.
"""

import math
import random
from typing import Any

import keras
import numpy as np

# The builders' ``initialization`` values.
INITIALIZATIONS = ("keras", "original")

# The RNN kinds (a builder's ``rnn_type``) and the Keras cell each builds.
RNN_CELLS = {"lstm_cell": "lstm", "gru_cell": "gru", "simple_rnn_cell": "rnn"}

# A Keras layer's weight -> its entry in original_initializers (and ``<entry>_initializer`` argument).
INITIALIZER_OF_WEIGHT = {"kernel": "kernel", "recurrent_kernel": "recurrent", "bias": "bias"}


# registered: a Bidirectional copies its forward layer through its config, and an
# "original" LSTM's config names this initializer
@keras.saving.register_keras_serializable(package="keras_sequencer")
class RNNUniform(keras.initializers.Initializer):
    """``uniform(-1/sqrt(units), 1/sqrt(units))`` (PyTorch's RNN initialisation);
    with ``terms=2`` the sum of two independent such draws (a Keras bias that
    stands for PyTorch's ``bias_ih + bias_hh``). ``seed``: an int, or ``None``
    to draw one now (see the module's note on reproducibility)."""

    def __init__(self, units: int, terms: int = 1, seed: int | None = None):
        self.units = int(units)
        self.terms = int(terms)
        self.seed = seed
        self.draw_seed = random.randint(1, 10**9) if seed is None else int(seed)

    def __call__(self, shape, dtype=None):
        bound = 1.0 / math.sqrt(self.units)
        total = 0
        for term in range(self.terms):
            total = total + keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.draw_seed + term)
        return total

    def get_config(self) -> dict:
        return {"units": self.units, "terms": self.terms, "seed": self.seed}


def check_initialization(initialization: str) -> str:
    """``initialization`` if it is one of :data:`INITIALIZATIONS`, else a
    ``ValueError`` naming the argument and the choices."""
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {INITIALIZATIONS}; got {initialization!r}.")
    return initialization


def original_initializers(
    kind: str, units: int | None = None, seed: int | None = None
) -> dict[str, keras.initializers.Initializer]:
    """The original initializers of one layer of ``kind`` (the module's table):
    ``{"kernel": ..., "bias": ...}`` and, for an RNN, ``"recurrent"``.

    ``kind``: ``"dense"``, ``"mlp"`` (a block's ``mlp_fc*``), ``"head"``,
    ``"conv"`` (a patch embedding) or an ``rnn_type`` (``"lstm"``, ``"gru"``,
    ``"rnn"``, with its ``units``; a GRU's bias is Keras's ``reset_after``
    ``(2, 3 * units)``). ``seed``: the seed of every random one, the same for
    each, so take one of them per weight (``None``: each draws its own)."""
    if kind in RNN_CELLS.values():
        bias_terms = 1 if kind == "gru" else 2
        return {
            "kernel": RNNUniform(units, seed=seed),
            "recurrent": RNNUniform(units, seed=seed),
            "bias": RNNUniform(units, terms=bias_terms, seed=seed),
        }
    if kind == "head":
        return {"kernel": keras.initializers.Zeros(), "bias": keras.initializers.Zeros()}
    if kind == "conv":
        return {"kernel": keras.initializers.LecunNormal(seed=seed), "bias": keras.initializers.Zeros()}
    if kind == "mlp":
        bias = keras.initializers.RandomNormal(stddev=1e-6, seed=seed)
    elif kind == "dense":
        bias = keras.initializers.Zeros()
    else:
        raise ValueError(f"Unknown layer kind {kind!r} for the original initialisation.")
    return {"kernel": keras.initializers.GlorotUniform(seed=seed), "bias": bias}


def layer_initializers(initialization: str, kind: str, units: int | None = None) -> dict[str, Any]:
    """The keyword arguments that make a Keras layer of ``kind`` (see
    :func:`original_initializers`) create its weights with ``initialization``'s
    values: ``{}`` for ``"keras"`` (the layer's defaults); for ``"original"``
    its ``*_initializer`` arguments, fresh instances each call, and for an LSTM
    ``unit_forget_bias=False`` (Keras would add 1 to the forget gate's bias)."""
    if check_initialization(initialization) == "keras":
        return {}
    options = {f"{key}_initializer": value for key, value in original_initializers(kind, units).items()}
    if kind == "lstm":
        options["unit_forget_bias"] = False
    return options


def original_initializer(
    path: str, shape: tuple, rnn_units: int | None = None, seed: int | None = None
) -> keras.initializers.Initializer | None:
    """The original initializer of weight ``path`` (a Keras variable path such
    as ``stages_0_blocks_0/mlp_fc1/bias``) of ``shape``, from
    :func:`original_initializers`; ``rnn_units`` for RNN cell weights; ``seed``
    (int or None) for the random ones. ``None``: keep the weight as built."""
    parts = path.split("/")
    layer, name = parts[-2] if len(parts) > 1 else "", parts[-1]
    if name == "gamma":
        return keras.initializers.Ones()
    if name == "beta":
        return keras.initializers.Zeros()
    if layer in RNN_CELLS:
        kind = RNN_CELLS[layer]
    elif parts[0] == "head":
        kind = "head"
    elif layer.startswith("mlp"):
        kind = "mlp"
    else:
        kind = "conv" if name == "kernel" and len(shape) == 4 else "dense"
    if name not in INITIALIZER_OF_WEIGHT or (name == "kernel" and len(shape) not in (2, 4)):
        return None
    return original_initializers(kind, rnn_units, seed)[INITIALIZER_OF_WEIGHT[name]]


def apply_original_initialization(model: keras.Model, seed: int | None = None) -> None:
    """Re-initialises every weight of an already built ``model`` as the
    original does (the module's table, :func:`original_initializer`), in
    place. Building with ``initialization="original"`` gives a new model these
    values without a second pass; this serves a model built otherwise. It
    overwrites trained or loaded values. ``seed``: make the values
    reproducible."""
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
