"""Sequencer building blocks: BiLSTM2D, the Sequencer2D block and the
VanillaSequencer's BiLSTM1D block, on channels-last ``(batch, height, width,
channels)`` tensors, as timm's ``Sequencer2d`` after its stem. The patch and
position embeddings and the input check live in :mod:`.image_layers` and are
importable from here too.

The layers say what they compute; how a backend runs the ``"fused"``
implementation is in :mod:`keras_sequencer.kernels`, reached through
:func:`~keras_sequencer.kernels.backend_kernels` only.
"""

import keras
from keras import ops

from keras_sequencer.image_layers import (  # noqa: F401 (public API)
    PACKAGE,
    ImageInputCheck,
    PatchEmbedding,
    PositionEmbedding,
    register,
)
from keras_sequencer.initializers import check_initialization, layer_initializers
from keras_sequencer.kernels import IMPLEMENTATIONS, backend_kernels, resolved_implementation
from keras_sequencer.kernels.generic import (
    BlockParts,
    block_forward,
    fused_lstm,  # noqa: F401 (public API)
)
from keras_sequencer.quantization import QuantizedSublayers
from keras_sequencer.rnn import RNN_TYPES, make_rnn, rnn_cells

UNIONS = ("cat", "add", "vertical", "horizontal")


class RNNTokenMixer(QuantizedSublayers):
    """Mix-in of a ``keras.layers.Layer``: what the token mixers
    :class:`BiLSTM2D` and :class:`BiLSTM1D` share:
    the RNN settings, the size of one RNN's output and the optional ``fc``
    Dense back to the input channels. ``initialization``: their initial weights, ``"keras"`` or
    ``"original"`` (:mod:`keras_sequencer.initializers`; not saved: a loaded layer's come from the file).

    ``BLOCK_OPTIONS``: the settings of a :class:`Sequencer2DBlock` the mixer
    takes besides ``hidden_size``, ``bidirectional``, ``with_fc`` and
    ``rnn_type``.
    """

    BLOCK_OPTIONS: tuple[str, ...] = ()

    def __init__(
        self,
        hidden_size: int,
        bidirectional: bool,
        with_fc: bool,
        rnn_type: str,
        initialization: str = "keras",
        **kwargs,
    ):
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"Unrecognized rnn_type {rnn_type!r}; expected one of {tuple(RNN_TYPES)}.")
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.bidirectional = bool(bidirectional)
        self.with_fc = bool(with_fc)
        self.rnn_type = rnn_type
        self.initialization = check_initialization(initialization)
        self.fc = None

    @property
    def rnn_output_size(self) -> int:
        """Channels of one RNN's output (both directions)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def build_fc(self, channels: int, inputs: int):
        """Creates and builds ``fc``, ``Dense(channels)`` over ``inputs`` channels."""
        self.fc = keras.layers.Dense(
            channels, name="fc", dtype=self.sublayer_dtype("fc"), **layer_initializers(self.initialization, "dense")
        )
        self.fc.build((None, inputs))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "bidirectional": self.bidirectional,
            "with_fc": self.with_fc,
            "rnn_type": self.rnn_type,
        }


@register
class BiLSTM2D(RNNTokenMixer, keras.layers.Layer):
    """Vertical and horizontal (bi)directional RNNs over an image's columns and rows.

    Input ``(B, H, W, C)``. The vertical RNN runs down each column (sequences of
    length H, batch ``B*W``), the horizontal RNN along each row (length W, batch
    ``B*H``). Their outputs, ``(B, H, W, D)`` each with ``D = hidden_size * (2 if
    bidirectional else 1)``, are joined by ``union``:

    - ``"cat"``: ``concat([vertical, horizontal])`` -> ``2D`` channels (the paper);
    - ``"add"``: ``vertical + horizontal`` -> ``D`` channels;
    - ``"vertical"`` / ``"horizontal"``: only that RNN is built -> ``D`` channels.

    With ``with_fc`` a Dense layer maps the result back to ``C`` channels; without
    it the union must already have ``C`` channels. H and W may be unknown.

    Args:
        hidden_size: units of each RNN direction.
        bidirectional: run each RNN forwards and backwards (``Bidirectional``).
        union: how the two RNN outputs are combined, see above.
        with_fc: project the union back to the input channels.
        rnn_type: ``"lstm"`` (``keras.layers.LSTM``), ``"gru"`` or ``"rnn"``
            (``SimpleRNN``).
        implementation: ``"auto"`` (default): ``"fused"`` on CPU, ``"keras"``
            (cuDNN) on a GPU and for GRU/RNN, chosen at call time
            (``resolved_implementation``, :mod:`keras_sequencer.kernels`).
            ``"keras"`` calls the ``keras.layers.LSTM`` (or GRU/SimpleRNN)
            layers; ``"fused"`` (LSTM only) runs every direction of both RNNs
            as one batched recurrence (the backend's ``bilstm2d`` kernel) over
            the *same* LSTM layers' variables: weights, conversion and saved
            files are identical.
        initialization (keyword): ``"keras"`` or ``"original"`` initial weights (:class:`RNNTokenMixer`).
    """

    BLOCK_OPTIONS = ("union", "implementation")
    resolved_implementation = property(resolved_implementation)

    def __init__(
        self,
        hidden_size: int,
        bidirectional: bool = True,
        union: str = "cat",
        with_fc: bool = True,
        rnn_type: str = "lstm",
        implementation: str = "auto",
        **kwargs,
    ):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"Unrecognized implementation {implementation!r}; expected one of {IMPLEMENTATIONS}.")
        if implementation == "fused" and rnn_type != "lstm":
            raise ValueError(
                f"implementation='fused' supports only rnn_type='lstm', got rnn_type={rnn_type!r}; "
                "use implementation='keras' for other RNN types."
            )
        if union not in UNIONS:
            raise ValueError(f"Unrecognized union {union!r}; expected one of {UNIONS}.")
        super().__init__(hidden_size, bidirectional, with_fc, rnn_type, **kwargs)
        self.union = union
        self.implementation = implementation
        self.with_vertical = union != "horizontal"
        self.with_horizontal = union != "vertical"
        self.rnn_v = self._make_rnn("rnn_v") if self.with_vertical else None
        self.rnn_h = self._make_rnn("rnn_h") if self.with_horizontal else None

    @property
    def union_size(self):
        """Channels after the union, before ``fc``."""
        return self.rnn_output_size * (2 if self.union == "cat" else 1)

    def _make_rnn(self, name):
        return make_rnn(self.rnn_type, self.hidden_size, self.bidirectional, name, self.initialization)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("BiLSTM2D needs a known channel dimension.")
        for rnn in (self.rnn_v, self.rnn_h):
            if rnn is not None:
                rnn.build((None, None, channels))
        if self.with_fc:
            self.build_fc(channels, self.union_size)
        elif self.union_size != channels:
            raise ValueError(
                f"BiLSTM2D with with_fc=False and union={self.union!r} outputs "
                f"{self.union_size} channels, but its input has {channels}; "
                "the residual connection needs them equal."
            )

    def axis_rnns(self) -> list[tuple[int, keras.layers.Layer]]:
        """The built RNNs with the axis of ``(B, H, W, C)`` each runs along:
        ``(1, rnn_v)`` (down the columns) and ``(2, rnn_h)`` (along the rows)."""
        return [(axis, rnn) for axis, rnn in ((1, self.rnn_v), (2, self.rnn_h)) if rnn is not None]

    def call(self, x):
        y = self.mix(x)
        if self.fc is None:
            return y
        if self.resolved_implementation == "fused":
            return backend_kernels().dense(self.fc, y)
        return self.fc(y)

    def mix(self, x):
        """The RNNs' union before ``fc``: ``(B, H, W, C) -> (B, H, W, union_size)``."""
        if self.resolved_implementation == "fused":
            return self._mix_fused(x)
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        channels = x.shape[-1]
        size = self.rnn_output_size
        outputs = []
        if self.with_vertical:  # columns: (B*W, H, C) sequences
            columns = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, height, channels))
            v = ops.reshape(self.rnn_v(columns), (batch, width, height, size))
            outputs.append(ops.transpose(v, (0, 2, 1, 3)))
        if self.with_horizontal:  # rows: (B*H, W, C) sequences
            rows = ops.reshape(x, (-1, width, channels))
            outputs.append(ops.reshape(self.rnn_h(rows), (batch, height, width, size)))
        if len(outputs) == 1:
            return outputs[0]
        if self.union == "cat":
            return ops.concatenate(outputs, axis=-1)
        return outputs[0] + outputs[1]

    def _mix_fused(self, x):
        """:meth:`mix` by the backend's fused kernel (``bilstm2d``), over the
        same LSTM cells: the vertical RNN along axis 1 (columns), the
        horizontal one along axis 2 (rows)."""
        rnns = [(axis, rnn_cells(rnn)) for axis, rnn in self.axis_rnns()]
        kernels = backend_kernels()
        if self.union == "cat" or len(rnns) == 1:
            return kernels.bilstm2d(x, rnns, concat=True)
        vertical, horizontal = kernels.bilstm2d(x, rnns, concat=False)
        return vertical + horizontal

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self.with_fc else self.union_size
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        return {**super().get_config(), "union": self.union, "implementation": self.implementation}


@register
class BiLSTM1D(RNNTokenMixer, keras.layers.Layer):
    """A (bi)directional RNN over the flattened token sequence of an image
    (the VanillaSequencer's token mixer).

    ``(B, H, W, C)`` is read row by row as one sequence of ``H*W`` tokens, run
    through the RNN and reshaped back to ``(B, H, W, D)``, ``D = hidden_size * (2
    if bidirectional else 1)``. With ``with_fc`` a Dense maps ``D`` back to ``C``;
    without it (the paper's VanillaSequencer) ``D`` must equal ``C``.

    Args:
        hidden_size: units of each RNN direction.
        bidirectional: run the RNN forwards and backwards.
        with_fc: project the RNN output back to the input channels.
        rnn_type: ``"lstm"``, ``"gru"`` or ``"rnn"``, as in :class:`BiLSTM2D`.
        initialization (keyword): ``"keras"`` or ``"original"`` initial weights (:class:`RNNTokenMixer`).
    """

    def __init__(
        self, hidden_size: int, bidirectional: bool = True, with_fc: bool = False, rnn_type: str = "lstm", **kwargs
    ):
        super().__init__(hidden_size, bidirectional, with_fc, rnn_type, **kwargs)
        self.rnn = make_rnn(rnn_type, self.hidden_size, self.bidirectional, "rnn", self.initialization)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("BiLSTM1D needs a known channel dimension.")
        self.rnn.build((None, None, channels))
        if self.with_fc:
            self.build_fc(channels, self.rnn_output_size)
        elif self.rnn_output_size != channels:
            raise ValueError(
                f"BiLSTM1D with with_fc=False outputs {self.rnn_output_size} channels "
                f"(hidden_size {self.hidden_size}, bidirectional={self.bidirectional}), but "
                f"its input has {channels}; the residual connection needs them equal."
            )

    def call(self, x):
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        y = self.rnn(ops.reshape(x, (batch, -1, x.shape[-1])))
        y = ops.reshape(y, (batch, height, width, self.rnn_output_size))
        return self.fc(y) if self.fc is not None else y

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self.with_fc else self.rnn_output_size
        return tuple(input_shape[:-1]) + (channels,)


# The token mixers a Sequencer2DBlock can be built with (its ``token_mixer``).
TOKEN_MIXERS = {"2d": BiLSTM2D, "1d": BiLSTM1D}


@register
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch per sample while training.

    Kept samples are scaled by ``1 / (1 - rate)`` (timm's ``DropPath``).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class Sequencer2DBlock(QuantizedSublayers, keras.layers.Layer):
    """One Sequencer2D block, ``(B, H, W, C) -> (B, H, W, C)``.

    ``x + drop_path(mixer(LayerNorm(x)))`` then
    ``x + drop_path(MLP(LayerNorm(x)))`` with LayerNorm eps 1e-6 and an MLP of
    ``Dense(mlp_ratio * C) -> exact GELU -> Dense(C)``.
    Sublayers are named as timm's: ``norm1``, ``rnn_tokens``, ``norm2``,
    ``mlp_fc1``, ``mlp_fc2``; :meth:`parts` hands them to the kernels.

    The token mixer is a part, chosen by ``token_mixer`` (as timm's
    ``rnn_layer=``): ``"2d"`` :class:`BiLSTM2D` (which takes the block's
    ``union`` and ``implementation``) or ``"1d"`` :class:`BiLSTM1D` (one RNN
    over the ``H*W`` tokens; ``union`` unused, always the ``"keras"`` path).

    With ``implementation="fused"`` (or ``"auto"`` resolved to it, as in
    :class:`BiLSTM2D`) the call is the backend's ``fused_block`` kernel
    (:mod:`keras_sequencer.kernels`): the same computation, with fused GEMMs
    on torch and an XLA-compiled inference call on TensorFlow.

    ``initialization``: the initial weights of the MLP and the token mixer,
    ``"keras"`` or ``"original"`` (as :class:`RNNTokenMixer`; not saved).
    """

    # The token mixer of a block built without ``token_mixer`` (not saved in its config).
    DEFAULT_TOKEN_MIXER = "2d"

    def __init__(
        self,
        hidden_size: int,
        mlp_ratio: float = 3.0,
        bidirectional: bool = True,
        union: str = "cat",
        with_fc: bool = True,
        rnn_type: str = "lstm",
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        implementation: str = "auto",
        token_mixer: str | None = None,
        initialization: str = "keras",
        **kwargs,
    ):
        super().__init__(**kwargs)
        token_mixer = self.DEFAULT_TOKEN_MIXER if token_mixer is None else token_mixer
        if token_mixer not in TOKEN_MIXERS:
            raise ValueError(f"Unrecognized token_mixer {token_mixer!r}; expected one of {tuple(TOKEN_MIXERS)}.")
        self.hidden_size = int(hidden_size)
        self.mlp_ratio = float(mlp_ratio)
        self.bidirectional = bool(bidirectional)
        self.union = union
        self.with_fc = bool(with_fc)
        self.rnn_type = rnn_type
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.implementation = implementation
        self.token_mixer = token_mixer
        self.initialization = check_initialization(initialization)
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm1")
        mixer_class = TOKEN_MIXERS[token_mixer]
        self.rnn_tokens = mixer_class(
            self.hidden_size,
            bidirectional=self.bidirectional,
            with_fc=self.with_fc,
            rnn_type=self.rnn_type,
            initialization=self.initialization,
            name="rnn_tokens",
            **{option: getattr(self, option) for option in mixer_class.BLOCK_OPTIONS},
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm2")
        self.drop_path = DropPath(drop_path_rate, name="drop_path")
        self.mlp_fc1 = None
        self.mlp_fc2 = None

    @property
    def resolved_implementation(self) -> str:
        """What the block runs here: its token mixer's resolved implementation
        (``"keras"`` for a mixer without a fused path, :class:`BiLSTM1D`)."""
        return getattr(self.rnn_tokens, "resolved_implementation", "keras")

    def build(self, input_shape):
        dim = input_shape[-1]
        self.norm1.build(input_shape)
        self.rnn_tokens.build(input_shape)
        self.norm2.build(input_shape)
        self.drop_path.build(input_shape)
        self.mlp_fc1 = self._mlp_dense(int(self.mlp_ratio * dim), "mlp_fc1")
        self.mlp_fc1.build(input_shape)
        self.mlp_fc2 = self._mlp_dense(dim, "mlp_fc2")
        self.mlp_fc2.build(tuple(input_shape[:-1]) + (int(self.mlp_ratio * dim),))

    def _mlp_dense(self, units, name):
        """The MLP's Dense ``name`` of ``units``, with ``initialization``'s (fresh) initializers."""
        initializers = layer_initializers(self.initialization, "mlp")
        return keras.layers.Dense(units, name=name, dtype=self.sublayer_dtype(name), **initializers)

    def parts(self) -> BlockParts:
        """The block's sub-layers and settings as the kernels read them
        (:class:`~keras_sequencer.kernels.generic.BlockParts`): the one place
        that names them for code outside this class."""
        mixer = self.rnn_tokens
        return BlockParts(
            norm1=self.norm1,
            mixer=mixer,
            mix=getattr(mixer, "mix", None),
            mixer_fc=mixer.fc,
            norm2=self.norm2,
            mlp_fc1=self.mlp_fc1,
            mlp_fc2=self.mlp_fc2,
            drop_path=self.drop_path,
            drop_path_rate=self.drop_path_rate,
        )

    def call(self, x, training=None):
        if self.resolved_implementation == "fused":
            return backend_kernels().fused_block(self, x, training)
        return self.forward_pass(x, training=training)

    def forward_pass(self, x, training=None):
        """The block, as timm's ``Sequencer2dBlock.forward``:
        ``(B, H, W, C) -> (B, H, W, C)``, by
        :func:`~keras_sequencer.kernels.generic.block_forward` with the
        sub-layers called as Keras layers."""
        kernels = backend_kernels()
        return block_forward(
            x,
            self.parts(),
            norm=lambda layer, t: kernels.layer_norm(layer, t, training),
            residual=lambda t, layer, y: t + self.drop_path(layer(y), training=training),
            dense=lambda layer, t: layer(t),
            gelu=lambda t: ops.gelu(t, approximate=False),
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "mlp_ratio": self.mlp_ratio,
            "bidirectional": self.bidirectional,
            "union": self.union,
            "with_fc": self.with_fc,
            "rnn_type": self.rnn_type,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "implementation": self.implementation,
        }
        if "union" not in TOKEN_MIXERS[self.token_mixer].BLOCK_OPTIONS:
            del config["union"]
        if self.token_mixer != self.DEFAULT_TOKEN_MIXER:
            config["token_mixer"] = self.token_mixer
        return config


@register
class VanillaSequencerBlock(Sequencer2DBlock):
    """The VanillaSequencer block: :class:`Sequencer2DBlock` built with the
    :class:`BiLSTM1D` token mixer (``token_mixer="1d"``), under the name its
    saved files carry. ``(B, H, W, C) -> same``.

    ``with_fc`` defaults to ``False`` as in the paper (then ``2 * hidden_size``
    must equal ``C``); there is no ``union``.
    """

    DEFAULT_TOKEN_MIXER = "1d"

    def __init__(
        self,
        hidden_size: int,
        mlp_ratio: float = 3.0,
        bidirectional: bool = True,
        with_fc: bool = False,
        rnn_type: str = "lstm",
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(
            hidden_size,
            mlp_ratio=mlp_ratio,
            bidirectional=bidirectional,
            with_fc=with_fc,
            rnn_type=rnn_type,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            **kwargs,
        )


# The registered block class of each token mixer: the class name a saved model carries.
BLOCK_CLASSES = {"2d": Sequencer2DBlock, "1d": VanillaSequencerBlock}
