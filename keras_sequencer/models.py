"""Sequencer2D models in the style of ``keras.applications``.

One builder, :func:`Sequencer2D`, takes the architecture as arguments;
:func:`VanillaSequencer` is its 1-D token-mixer form. The published variants
have thin wrappers (:func:`Sequencer2DS`, :func:`Sequencer2DM`,
:func:`Sequencer2DL`); every registered variant is a row of
:data:`keras_sequencer.variants.VARIANTS` (build one by name with
:func:`keras_sequencer.create_model`).

Layer names follow timm's module names so the weight port is a direct map:
``stem`` (timm ``stem.proj``), ``stages_{i}_downsample`` (``stages.{i}.downsample.down``),
``stages_{i}_blocks_{j}`` (``stages.{i}.blocks.{j}``), ``norm``, ``head`` (``head.fc``).
"""

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_sequencer import keras_patches, runtime
from keras_sequencer import weights as weights_lib
from keras_sequencer.initializers import check_initialization, layer_initializers
from keras_sequencer.kernels import resolved_implementations
from keras_sequencer.layers import BLOCK_CLASSES, PACKAGE, ImageInputCheck, PatchEmbedding, PositionEmbedding

# ImageNet-1k normalisation used by the published checkpoints (timm defaults),
# also importable from here.
from keras_sequencer.preprocessing import IMAGENET_MEAN, IMAGENET_STD, TensorLike

# MODEL_CONFIGS (a view of keras_sequencer.variants.VARIANTS) is also importable from here.
from keras_sequencer.variants import MODEL_CONFIGS, check_arch, get_variant, variant_for_arch  # noqa: F401

# Every layer of the network is channels-last, whatever
# keras.config.image_data_format() says; a channels_first model transposes its
# input (and its 4-D features output) once.
CHANNELS_LAST = "channels_last"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequencerModel(keras.Model):
    """The functional ``keras.Model`` the builders here return (and
    :func:`keras_sequencer.feature_extractor`): a plain ``keras.Model`` except
    that on JAX's CPU backend ``predict`` and ``evaluate`` compile with
    :data:`runtime.JAX_INFERENCE_COMPILER_OPTIONS` (XLA's YNNPACK fusions off,
    which makes the LSTM-heavy inference graph faster on CPU); ``fit``'s train
    step, which those options slow down, compiles as usual.
    ``KERAS_SEQUENCER_RUNTIME_TUNING=0`` turns it off (see :mod:`runtime`).

    ``class_names``: the names of the classifier's outputs, in order (``None``
    by default); set it before ``model.save`` and it is saved with the model
    (``keras-sequencer train`` sets it to the data's class folders, and
    ``keras-sequencer predict`` prints it)."""

    class_names: list[str] | None = None

    def get_config(self) -> dict:
        config = super().get_config()
        if self.class_names is not None:
            config["class_names"] = [str(name) for name in self.class_names]
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: Any = None) -> "SequencerModel":
        config = dict(config)
        class_names = config.pop("class_names", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if class_names is not None:
            model.class_names = list(class_names)
        return model

    @property
    def implementations(self) -> dict[str, str]:
        """``{layer path: "keras" | "fused"}``: what each BiLSTM2D and block runs
        here (``implementation="auto"`` resolved for this backend and device)."""
        return resolved_implementations(self)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TensorFlow: the optimizer and the metrics are built before the train
        # function is traced, so that it is traced once (keras_patches).
        if not keras_patches.tf_build_before_tracing(self, iterator=iterator, data_batch=data_batch):
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_predict_function(self, force: bool = False) -> Callable:
        with _inference_compilation(self.predict_function, force):
            return super().make_predict_function(force=force)

    def make_test_function(self, force: bool = False) -> Callable:
        with _inference_compilation(self.test_function, force):
            return super().make_test_function(force=force)

    def export(
        self,
        filepath: str | os.PathLike,
        format: str = "tf_saved_model",
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs,
    ) -> str:
        """Writes the model as ``"tf_saved_model"``, ``"onnx"`` or ``"litert"``
        from any backend, with no prior call: :func:`keras_sequencer.export.export_model`
        (``input_shape=(height, width)`` fixes the size of a model that has none)."""
        from keras_sequencer.export import export_model

        return export_model(self, filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelsFirstInput(keras.layers.Layer):
    """The input of a model built under ``image_data_format() == "channels_first"``:
    checks a batch ``(batch, channels, height, width)`` and transposes it to the
    ``(batch, height, width, channels)`` every later layer computes in.

    Raises a ``ValueError`` naming the expected layout for another rank or
    channel count (a channels-last batch given to a channels-first model).
    """

    def __init__(self, channels: int, model_name: str = "model", **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.model_name = model_name

    def call(self, x):
        shape = tuple(x.shape)
        if len(shape) != 4 or (shape[1] is not None and shape[1] != self.channels):
            raise ValueError(
                f"{self.model_name} was built with image_data_format 'channels_first' and "
                f"expects images of shape (batch, {self.channels}, height, width); got an "
                f"input of shape {shape}."
            )
        return keras.ops.transpose(x, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        batch, channels, height, width = input_shape
        return (batch, height, width, channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "model_name": self.model_name}


def _inference_compilation(existing_function, force):
    """:func:`runtime.jax_inference_compilation` when Keras is about to build the
    function (Keras calls ``make_*_function`` on every ``predict_on_batch`` /
    ``test_on_batch`` and returns the built one), else nothing: the trainer's
    ``jit`` is swapped only while a function is really being compiled."""
    if existing_function is None or force:
        return runtime.jax_inference_compilation()
    return contextlib.nullcontext()


def _resolve_input(input_tensor, input_shape, channels_first):
    layout = "(channels, height, width)" if channels_first else "(height, width, channels)"
    if input_shape is None:
        input_shape = (3, None, None) if channels_first else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be {layout}; got {input_shape}.")
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="images"), None
    if not keras.utils.is_keras_tensor(input_tensor):
        return keras.Input(tensor=input_tensor, shape=input_shape, name="images"), input_tensor
    return input_tensor, input_tensor


def Sequencer2D(
    layers: Sequence[int],
    patch_sizes: Sequence[int],
    embed_dims: Sequence[int],
    hidden_sizes: Sequence[int],
    mlp_ratios: Sequence[float] = (3.0, 3.0, 3.0, 3.0),
    bidirectional: bool = True,
    union: str = "cat",
    with_fc: bool = True,
    rnn_type: str = "lstm",
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor: TensorLike | None = None,
    input_shape: Sequence[int | None] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | Callable | None = "softmax",
    drop_path_rate: float = 0.0,
    include_preprocessing: bool = False,
    name: str = "sequencer2d",
    implementation: str = "auto",
    stem_norm: bool = False,
    position_embedding: bool = False,
    token_mixer: str = "2d",
    dropout_rate: float = 0.0,
    weights_name: str | None = None,
    initialization: str = "keras",
) -> keras.Model:
    """Builds a Sequencer2D network (Tatsunami & Taki, NeurIPS 2022).

    Stem ``PatchEmbedding(patch_sizes[0])`` -> stages of ``Sequencer2DBlock``
    (stages 1.. start with ``PatchEmbedding(patch_sizes[i])``) -> LayerNorm
    (eps 1e-6) -> global average pooling -> ``head`` Dense. Identical to timm's
    ``Sequencer2d`` in inference; in training the drop-path rate grows linearly
    over the blocks as in the original repository (timm's port uses one rate).

    Args:
        layers, patch_sizes, embed_dims, hidden_sizes, mlp_ratios: per-stage
            depth, patch size of the stem/downsampling, channels, RNN units and
            MLP expansion.
        bidirectional, union, with_fc, rnn_type: the BiLSTM2D options (see
            :class:`keras_sequencer.layers.BiLSTM2D`).
        include_top: add the pooling + classification head.
        weights: ``None`` (random init), ``"imagenet"``, or a path to a
            ``.weights.h5`` (Keras), ``.safetensors`` (timm) or ``.pth``/``.bin``
            (timm or okojoalg/sequencer) file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: ``(height, width, 3)``; default ``(None, None, 3)``: any
            size of at least the total stride (14 for S/M/L) works. Under
            ``keras.config.image_data_format() == "channels_first"``:
            ``(3, height, width)``, default ``(3, None, None)``.
        pooling: with ``include_top=False``: ``None`` (4-D features after the
            final norm, ``(batch, height / stride, width / stride, channels)``,
            or ``(batch, channels, height / stride, width / stride)`` under
            ``channels_first``), ``"avg"`` or ``"max"``.
        classes: classifier outputs.
        classifier_activation: activation of the head (``None`` for logits).
        drop_path_rate: stochastic depth rate of the last block: block ``k`` of
            the ``n`` blocks (counted over all stages) drops its residual
            branches with rate ``drop_path_rate * k / (n - 1)`` (the original's
            linear schedule, ``linspace(0, drop_path_rate, n)``). Each block
            saves its own rate, so saved models keep theirs (also those saved
            when every block had the same rate).
        include_preprocessing: accept raw ``[0, 255]`` images and normalise them
            with the ImageNet mean/std inside the model.
        name: model name.
        implementation: how BiLSTM2D runs its LSTMs: ``"auto"`` (``"fused"``
            on CPU, ``"keras"``/cuDNN on a GPU), ``"keras"`` or ``"fused"``
            (LSTM only; same weights), see :class:`keras_sequencer.layers.BiLSTM2D`;
            the model's ``implementations`` lists what each layer runs.
        stem_norm: LayerNorm (eps 1e-6) right after the stem (``stem_norm``).
        position_embedding: add a learned absolute position embedding after the
            stem (:class:`~keras_sequencer.layers.PositionEmbedding`); needs a
            fixed ``input_shape``.
        token_mixer: ``"2d"`` (BiLSTM2D blocks) or ``"1d"`` (the VanillaSequencer's
            BiLSTM1D over the flattened tokens; ``union`` is then unused).
        dropout_rate: dropout before the classifier (with ``include_top``).
        weights_name: the registered variant whose published weights
            ``weights="imagenet"`` loads (``"sequencer2d_s"``, ...); it must have
            this architecture. ``Sequencer2DS/M/L`` and
            :func:`keras_sequencer.create_model` pass it. Left out, a published
            architecture is looked up by its arguments here, once
            (:func:`keras_sequencer.variants.variant_for_arch`).
        initialization: the initial values of the weights (before any
            ``weights`` are loaded over them): ``"keras"`` (each layer's Keras
            defaults) or ``"original"`` (the paper's, as timm's model
            initialises itself: head zeros, LSTMs uniform(+-1/sqrt(h)), ...,
            the table of :mod:`keras_sequencer.initializers`). The layers are
            built with those initializers; the option is not saved (a loaded
            model takes its weights from the file), and
            ``keras.utils.set_random_seed`` before building makes the values
            reproducible.

    Under ``channels_first`` the model takes ``(batch, 3, height, width)``
    images and transposes them once (:class:`ChannelsFirstInput`); every layer
    after it, and so every weight and stage feature map, stays channels-last,
    and the outputs equal the channels-last model's on the transposed images.

    Stages may have 0 blocks: such a stage is only its ``PatchEmbedding`` (a
    patch merging, or a pointwise linear layer with patch size 1).

    Returns:
        A ``keras.Model``.
    """
    _check_architecture(layers, patch_sizes, embed_dims, hidden_sizes, mlp_ratios, token_mixer, pooling)
    check_initialization(initialization)
    channels_first = keras.config.image_data_format() == "channels_first"
    inputs, source_tensor = _resolve_input(input_tensor, input_shape, channels_first)
    x = _image_input(inputs, channels_first, math.prod(patch_sizes), include_preprocessing, name)
    x = _stem(
        x, embed_dims[0], patch_sizes[0], stem_norm, position_embedding, name, tuple(inputs.shape[1:]), initialization
    )
    rates = iter(drop_path_schedule(drop_path_rate, sum(layers)))  # one per block, over all stages
    block_options = dict(
        bidirectional=bidirectional,
        union=union,
        with_fc=with_fc,
        rnn_type=rnn_type,
        implementation=implementation,
        initialization=initialization,
    )  # (union: BiLSTM2D's only)
    for i, depth in enumerate(layers):
        options = dict(hidden_size=hidden_sizes[i], mlp_ratio=mlp_ratios[i], **block_options)
        blocks = [dict(options, drop_path_rate=next(rates)) for _ in range(depth)]
        x = _stage(x, i, BLOCK_CLASSES[token_mixer], blocks, embed_dims[i], patch_sizes[i], initialization)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = _head(x, include_top, pooling, classes, classifier_activation, dropout_rate, channels_first, initialization)

    model_inputs = inputs
    if source_tensor is not None:
        model_inputs = keras.utils.get_source_inputs(source_tensor)
    model = SequencerModel(model_inputs, x, name=name)

    if weights is not None:
        if weights == "imagenet":
            arch = dict(
                layers=layers,
                patch_sizes=patch_sizes,
                embed_dims=embed_dims,
                hidden_sizes=hidden_sizes,
                mlp_ratios=mlp_ratios,
                bidirectional=bidirectional,
                union=union,
                with_fc=with_fc,
                rnn_type=rnn_type,
                stem_norm=stem_norm,
                position_embedding=position_embedding,
                token_mixer=token_mixer,
            )
            if weights_name is None:
                weights_name = variant_for_arch(arch)
            else:
                check_arch(weights_name, arch)
        weights_lib.load_weights(model, weights, variant=weights_name)
    return model


def _check_architecture(layers, patch_sizes, embed_dims, hidden_sizes, mlp_ratios, token_mixer, pooling):
    """Raises a ``ValueError`` naming the argument for per-stage lists of
    another length than ``layers``, an unknown ``token_mixer`` or ``pooling``."""
    for arg_name, values in (
        ("patch_sizes", patch_sizes),
        ("embed_dims", embed_dims),
        ("hidden_sizes", hidden_sizes),
        ("mlp_ratios", mlp_ratios),
    ):
        if len(values) != len(layers):
            raise ValueError(f"{arg_name} has {len(values)} entries but layers has {len(layers)}.")
    if token_mixer not in BLOCK_CLASSES:
        raise ValueError(f"token_mixer must be one of {tuple(BLOCK_CLASSES)}; got {token_mixer!r}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}.")


def _image_input(inputs, channels_first, total_stride, include_preprocessing, name):
    """The layers from the model's input to the stem's: the transpose of a
    ``channels_first`` input to ``(B, H, W, C)``, the size check (at least
    ``total_stride`` pixels, now for a known size, at call time for a free
    one: :class:`ImageInputCheck`) and, with ``include_preprocessing``, the
    scaling of ``[0, 255]`` RGB images by the ImageNet mean and std."""
    channels = inputs.shape[1 if channels_first else -1]
    if channels is None:
        raise ValueError("The number of input channels must be known.")
    x = inputs
    if channels_first:
        # The network computes channels-last: one transpose at the input.
        x = ChannelsFirstInput(channels, model_name=name, name="to_channels_last")(x)
    for size in x.shape[1:3]:
        if size is not None and size < total_stride:
            raise ValueError(
                f"{name} needs images of at least {total_stride}x{total_stride} pixels "
                f"(its total stride); got input_shape {tuple(inputs.shape[1:])}."
            )
    x = ImageInputCheck(channels, total_stride, model_name=name, name="input_check")(x)
    if include_preprocessing:
        if channels != 3:
            raise ValueError("include_preprocessing needs RGB inputs (3 channels).")
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(x)
        x = keras.layers.Normalization(
            mean=IMAGENET_MEAN,
            variance=[s**2 for s in IMAGENET_STD],
            name="normalization",
        )(x)
    return x


def _stem(x, embed_dim, patch_size, stem_norm, position_embedding, name, input_shape, initialization):
    """The stem, ``(B, H, W, C) -> (B, H / p, W / p, embed_dim)``: the patch
    embedding ``stem`` (with ``initialization``'s initializers), then
    optionally ``stem_norm`` (LayerNorm, eps 1e-6) and a learned position
    embedding ``pos_embed``, which needs a fixed size (the error names the
    model's ``input_shape``)."""
    x = _patch_embedding(embed_dim, patch_size, "stem", initialization)(x)
    if stem_norm:
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="stem_norm")(x)
    if position_embedding:
        if None in x.shape[1:3]:
            raise ValueError(
                f"{name}: position_embedding=True needs a fixed input_shape "
                f"(height, width, channels); got {input_shape}."
            )
        x = PositionEmbedding(name="pos_embed")(x)
    return x


def _patch_embedding(embed_dim, patch_size, name, initialization):
    """A channels-last ``PatchEmbedding`` named ``name`` whose convolution
    starts as ``initialization`` says (its ``kernel_initializer`` /
    ``bias_initializer``, saved as any ``Conv2D``'s)."""
    initializers = layer_initializers(initialization, "conv")
    return PatchEmbedding(embed_dim, patch_size, data_format=CHANNELS_LAST, name=name, **initializers)


def _stage(x, index, block_class, blocks, embed_dim, patch_size, initialization):
    """Stage ``index``: after the first, a ``PatchEmbedding`` to ``embed_dim``
    channels (``stages_{index}_downsample``), then one ``block_class`` block
    per entry of ``blocks`` (its keyword arguments), ``stages_{index}_blocks_{j}``;
    ``initialization`` for the downsample's initializers."""
    if index > 0:
        x = _patch_embedding(embed_dim, patch_size, f"stages_{index}_downsample", initialization)(x)
    for j, options in enumerate(blocks):
        x = block_class(name=f"stages_{index}_blocks_{j}", **options)(x)
    return x


def _head(x, include_top, pooling, classes, classifier_activation, dropout_rate, channels_first, initialization):
    """What follows the final norm: with ``include_top`` average pooling,
    dropout and the ``head`` Dense (float32 under a mixed policy, for a
    stable softmax and loss; zeros with ``initialization="original"``); else
    the ``pooling`` or, without one, the 4-D features (transposed back for a
    ``channels_first`` model)."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(data_format=CHANNELS_LAST, name="avg_pool")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        mixed = keras.config.dtype_policy().name.startswith("mixed")
        return keras.layers.Dense(
            classes,
            activation=classifier_activation,
            name="head",
            dtype="float32" if mixed else None,
            **layer_initializers(initialization, "head"),
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(data_format=CHANNELS_LAST, name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(data_format=CHANNELS_LAST, name="max_pool")(x)
    if channels_first:  # 4-D features in the configured layout, as keras.applications models
        return keras.layers.Permute((3, 1, 2), name="to_channels_first")(x)
    return x


def drop_path_schedule(drop_path_rate: float, num_blocks: int) -> list[float]:
    """The original's per-block drop-path rates: ``num_blocks`` values from 0
    to ``drop_path_rate``, evenly spaced (``[0.0]`` for one block)."""
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [drop_path_rate * k / (num_blocks - 1) for k in range(num_blocks)]


def VanillaSequencer(
    layers: Sequence[int],
    patch_sizes: Sequence[int],
    embed_dims: Sequence[int],
    hidden_sizes: Sequence[int],
    mlp_ratios: Sequence[float] = (3.0, 3.0, 3.0, 3.0),
    bidirectional: bool = True,
    with_fc: bool = False,
    rnn_type: str = "lstm",
    position_embedding: bool = False,
    name: str = "vanilla_sequencer",
    **kwargs,
) -> keras.Model:
    """Builds the paper's VanillaSequencer: :func:`Sequencer2D` whose blocks mix
    tokens with one (Bi)LSTM over the flattened ``H*W`` sequence
    (:class:`~keras_sequencer.layers.VanillaSequencerBlock`) instead of BiLSTM2D.

    As in the paper, ``with_fc`` defaults to ``False`` (so ``2 * hidden_sizes[i]``
    must equal ``embed_dims[i]``). ``position_embedding=True`` (``v_sequencer_s_pe``)
    fixes the input size. Other arguments (``initialization``, ...) as :func:`Sequencer2D`.
    """
    return Sequencer2D(
        layers,
        patch_sizes,
        embed_dims,
        hidden_sizes,
        mlp_ratios=mlp_ratios,
        bidirectional=bidirectional,
        with_fc=with_fc,
        rnn_type=rnn_type,
        position_embedding=position_embedding,
        token_mixer="1d",
        name=name,
        **kwargs,
    )


def _variant(variant: str, doc_name: str) -> Callable[..., keras.Model]:
    def builder(
        include_top: bool = True,
        weights: str | os.PathLike | None = None,
        input_tensor: TensorLike | None = None,
        input_shape: Sequence[int | None] | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | Callable | None = "softmax",
        drop_path_rate: float = 0.0,
        include_preprocessing: bool = False,
        name: str = variant,
        implementation: str = "auto",
        initialization: str = "keras",
    ) -> keras.Model:
        return Sequencer2D(
            **get_variant(variant).arch,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            drop_path_rate=drop_path_rate,
            include_preprocessing=include_preprocessing,
            name=name,
            implementation=implementation,
            weights_name=variant,
            initialization=initialization,
        )

    builder.__name__ = doc_name
    builder.__doc__ = (
        f"{doc_name}: timm's ``{variant}`` "
        f"(layers {get_variant(variant).arch['layers']}). Arguments as :func:`Sequencer2D`."
    )
    return builder


Sequencer2DS = _variant("sequencer2d_s", "Sequencer2DS")
Sequencer2DM = _variant("sequencer2d_m", "Sequencer2DM")
Sequencer2DL = _variant("sequencer2d_l", "Sequencer2DL")
