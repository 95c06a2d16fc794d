"""Exports Sequencer models to ONNX, TensorFlow SavedModel and LiteRT, from
every Keras backend (JAX, TensorFlow, torch), with no prior call.

``SequencerModel.export(path, format=...)`` (so ``model.export`` of every
model the builders return) comes here. The model is translated layer by
layer into a TensorFlow function over copies of its weights
(:mod:`keras_sequencer.kernels.export_tf`): static Python loops for the
recurrences (a backward direction reads its steps last to first), exact GELU
as one ``Gelu``, plain ``Conv2D``/``MatMul`` and element-wise ops. That
function is what every format stores, whatever the backend: a SavedModel
(``tf.saved_model.save``), ONNX (``tf2onnx``), LiteRT (the TFLite converter
with builtin ops only, no Flex delegate). No cuDNN, XLA, scan or custom
gradient reaches the file, and the user's model is only read.

Input: one batch of images, the model's own layout (``(batch, height,
width, 3)``, or ``(batch, 3, height, width)`` for a model built under
``channels_first``), float32, batch size free. The spatial size is fixed at
export (the recurrences are unrolled over it): the model's own input size
when it has one, else ``input_shape=(height, width)`` (non-square allowed),
else the registered variant's ``input_size`` (224 for an unknown name).
``input_shape=(None, None)`` leaves it free instead (ONNX and SavedModel;
the recurrences then run as loops): one file serves every image size the
model takes.
"""

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_sequencer import optional
from keras_sequencer.preprocessing import TensorLike

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from keras_sequencer.kernels.export_tf import WeightStore

FORMATS = ("tf_saved_model", "onnx", "litert")
# Format -> the modules the export needs (their distributions: keras_sequencer.optional.PACKAGES).
EXPORT_PACKAGES = {
    "tf_saved_model": ("tensorflow",),
    "onnx": ("tensorflow", "tf2onnx", "onnx"),
    "litert": ("tensorflow",),
}
# Format -> the module of the runtime that runs the artefact.
RUNTIME_PACKAGES = {
    "tf_saved_model": "tensorflow",
    "onnx": "onnxruntime",
    "litert": "ai_edge_litert",
}
ONNX_OPSET = 17
DEFAULT_INPUT_SIZE = 224
INPUT_NAME = "images"
OUTPUT_NAME = "output_0"


def check_format(format: str) -> str:
    """Returns ``format`` if it is one of :data:`FORMATS`, else raises a one-line ``ValueError``."""
    if format not in FORMATS:
        raise ValueError(
            f"Unsupported export format {format!r}; Sequencer models export to {', '.join(repr(f) for f in FORMATS)}."
        )
    return format


def export_input_shape(model: "keras.Model", input_shape: Sequence[int | None] | None = None) -> tuple[int | None, ...]:
    """The per-image input shape the export takes, in the model's layout:
    ``(height, width, channels)`` or, channels-first, ``(channels, height, width)``.

    ``input_shape``: ``(height, width)`` or a full per-image shape; needed only
    where the model's own size is unknown (defaults to the registered
    variant's ``input_size``); a ``None`` height or width stays free. Raises
    a ``ValueError`` when it contradicts a fixed model size."""
    if len(model.inputs) != 1:
        raise ValueError(f"export needs a model with one image input; {model.name} has {len(model.inputs)}.")
    shape = tuple(model.inputs[0].shape[1:])
    channels_first = model.layers[1].__class__.__name__ == "ChannelsFirstInput"
    spatial_axes = (1, 2) if channels_first else (0, 1)
    own = tuple(shape[a] for a in spatial_axes)
    if input_shape is not None:
        given = tuple(input_shape)
        if len(given) == 3:
            given = tuple(given[a] for a in spatial_axes)
        if len(given) != 2:
            raise ValueError(
                f"input_shape must be (height, width) or the full per-image shape; got {tuple(input_shape)}."
            )
        given = tuple(None if s is None else int(s) for s in given)
        for own_size, size in zip(own, given):
            if own_size is not None and own_size != size:
                raise ValueError(f"{model.name} takes {own[0]}x{own[1]} images; got input_shape {tuple(input_shape)}.")
        spatial = given
    elif None in own:
        from keras_sequencer.variants import get_variant

        try:
            size = get_variant(model.name).input_size
        except ValueError:
            size = DEFAULT_INPUT_SIZE
        spatial = tuple(size if s is None else s for s in own)
    else:
        spatial = own
    checks = [layer for layer in model.layers if type(layer).__name__ == "ImageInputCheck"]
    known = [s for s in spatial if s is not None]
    if checks and known and min(known) < checks[0].min_size:
        raise ValueError(
            f"{model.name} needs images of at least {checks[0].min_size}x{checks[0].min_size} "
            f"pixels (its total stride); got {spatial[0]}x{spatial[1]}."
        )
    full = list(shape)
    for axis, size in zip(spatial_axes, spatial):
        full[axis] = size
    return tuple(full)


def export_model(
    model: "keras.Model",
    filepath: str | os.PathLike,
    format: str = "tf_saved_model",
    verbose: bool | None = None,
    input_signature: Any = None,
    input_shape: Sequence[int | None] | None = None,
    **kwargs,
) -> str:
    """Writes ``model`` to ``filepath`` as ``format`` (:data:`FORMATS`); returns ``filepath``.

    Args:
        model: a Sequencer ``keras.Model`` (one image input, one output), as
            built or loaded; it is not called or changed.
        filepath: the SavedModel directory, ``.onnx`` or ``.tflite`` file.
        format: ``"tf_saved_model"``, ``"onnx"`` or ``"litert"``.
        verbose: print where the artefact was written.
        input_signature: optional; a ``keras.InputSpec``, ``tf.TensorSpec`` or
            shape (in a list or not) whose spatial size is used as
            ``input_shape``.
        input_shape: the spatial size ``(height, width)`` for a model of
            unknown size (see :func:`export_input_shape`); ``(None, None)``
            leaves it free in the artefact (ONNX and SavedModel).
        **kwargs: ``opset`` (ONNX, default 17); anything else raises.

    The artefact takes float32 images of any batch size at the fixed (or
    free) spatial size and returns the model's output (``output_0``): what
    ``model.predict`` returns, to float32 rounding.
    """
    check_format(format)
    opset = kwargs.pop("opset", ONNX_OPSET)
    if kwargs:
        raise ValueError(
            f"Unsupported export option(s) {', '.join(sorted(kwargs))} for Sequencer models; "
            "accepted: format, verbose, input_signature, input_shape, opset."
        )
    if input_signature is not None and input_shape is None:
        input_shape = signature_shape(input_signature)
    optional.require_installed(EXPORT_PACKAGES[format], f"export to {format}", extra="export")
    shape = export_input_shape(model, input_shape)
    if format == "litert" and None in shape:
        raise ValueError(
            "litert export needs a fixed image size; give input_shape=(height, width) "
            "(ONNX and SavedModel take a free one)."
        )
    store, function = build_function(model, shape)
    filepath = os.fspath(filepath)
    if format == "tf_saved_model":
        save_saved_model(store, function, filepath)
    elif format == "onnx":
        save_onnx(function, filepath, opset)
    else:
        save_litert(store, function, filepath)
    if verbose:
        print(f"Saved {format} artefact at '{filepath}' (input (batch, {describe_shape(shape)})).")
    return filepath


def describe_shape(shape: Sequence[int | None]) -> str:
    """``(224, 224, 3)`` as ``"224, 224, 3"``, a free size as ``"any"``."""
    return ", ".join("any" if s is None else str(s) for s in shape)


def signature_shape(input_signature: Any) -> tuple[int | None, ...]:
    """The per-image shape of an ``input_signature`` (spec or shape, or a list of one)."""
    if (
        isinstance(input_signature, (list, tuple))
        and input_signature
        and not isinstance(input_signature[0], (int, type(None)))
    ):
        if len(input_signature) != 1:
            raise ValueError("input_signature: Sequencer models take one input.")
        input_signature = input_signature[0]
    shape = getattr(input_signature, "shape", input_signature)
    shape = tuple(None if s is None else int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"input_signature must describe (batch, height, width, channels); got {shape}.")
    return shape[1:]


# ------------------------------------------------------------- the TF graph --
def layer_function(store: "WeightStore", layer: "keras.layers.Layer") -> Callable[[Any], Any]:
    """The TensorFlow function of one layer of a Sequencer model (inference)."""
    import tensorflow as tf

    from keras_sequencer.kernels import export_tf as k

    name = type(layer).__name__
    if name == "ImageInputCheck":
        return k.input_check(layer.min_size, layer.model_name)
    if name in ("Dropout", "DropPath"):
        return lambda x: x
    if name == "ChannelsFirstInput":
        return lambda x: tf.transpose(x, (0, 2, 3, 1))
    if name == "Permute":
        return lambda x: tf.transpose(x, (0,) + tuple(layer.dims))
    if name == "Rescaling":
        scale, offset = float(layer.scale), float(layer.offset)
        return lambda x: x * scale + offset
    if name == "Normalization":
        return k.normalization(store, layer.mean, layer.variance)
    if name == "PatchEmbedding":
        return k.patch_embedding(store, layer.kernel, layer.bias, layer.patch_size)
    if name == "LayerNormalization":
        return k.layer_norm(store, layer.gamma, layer.beta, layer.epsilon)
    if name == "PositionEmbedding":
        embedding = store.add(layer.embedding)
        return lambda x: x + embedding
    if name in ("Sequencer2DBlock", "VanillaSequencerBlock"):
        return k.sequencer_block(store, layer)
    if name == "GlobalAveragePooling2D":
        return lambda x: tf.reduce_mean(x, axis=(1, 2))
    if name == "GlobalMaxPooling2D":
        return lambda x: tf.reduce_max(x, axis=(1, 2))
    if name == "Dense":
        project = k.dense_layer(store, layer)
        activate = k.activation(getattr(layer.activation, "__name__", str(layer.activation)))
        return lambda x: activate(project(x))
    raise ValueError(f"export does not support the layer {layer.name!r} ({name}).")


def chain(model: "keras.Model") -> list["keras.layers.Layer"]:
    """The layers of ``model`` after its input, checked to form one chain
    (each takes the previous one's output), as every builder's model does."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    previous = model.inputs[0]
    for layer in layers:
        try:
            source = layer.input
        except (AttributeError, ValueError):
            source = None
        if source is not previous:
            raise ValueError(
                f"export supports Sequencer models whose layers form one chain; "
                f"{model.name}'s layer {layer.name!r} does not take the previous layer's output."
            )
        previous = layer.output
    if len(model.outputs) != 1 or model.outputs[0] is not previous:
        raise ValueError(f"export needs a model with one output; {model.name} has {len(model.outputs)}.")
    return layers


def build_function(
    model: "keras.Model", shape: Sequence[int | None]
) -> tuple["WeightStore", "tf.types.experimental.GenericFunction"]:
    """``(store, function)``: the model as a ``tf.function`` of one float32
    batch ``(None,) + shape``, returning its output, and the
    :class:`~keras_sequencer.kernels.export_tf.WeightStore` holding its weights."""
    import tensorflow as tf

    from keras_sequencer.kernels.export_tf import WeightStore

    store = WeightStore()
    steps = [layer_function(store, layer) for layer in chain(model)]

    def forward(images):
        x = images
        for step in steps:
            x = step(x)
        return x

    spec = tf.TensorSpec((None,) + tuple(shape), tf.float32, name=INPUT_NAME)
    function = tf.function(forward, input_signature=[spec], autograph=False)
    return store, function


def one_line_failure(what: str, error: BaseException) -> RuntimeError:
    """A ``RuntimeError`` with the first line of a converter's error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return RuntimeError(f"{what} failed: {lines[0] if lines else type(error).__name__}")


def save_saved_model(store: "WeightStore", function: "tf.types.experimental.GenericFunction", filepath: str) -> None:
    """A SavedModel with the weights as variables and the ``serving_default``
    signature ``images -> output_0``."""
    import tensorflow as tf

    store.serve = function
    tf.saved_model.save(store, filepath, signatures={"serving_default": function.get_concrete_function()})


def save_onnx(function: "tf.types.experimental.GenericFunction", filepath: str, opset: int) -> None:
    """An ONNX file by tf2onnx, the batch axis dynamic."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    try:
        tf2onnx.convert.from_function(
            function,
            input_signature=function.input_signature,
            opset=opset,
            output_path=filepath,
        )
    except Exception as error:  # noqa: BLE001 (reported as one line, chained)
        raise one_line_failure("ONNX conversion", error) from error


def save_litert(store: "WeightStore", function: "tf.types.experimental.GenericFunction", filepath: str) -> None:
    """A LiteRT (``.tflite``) flatbuffer of builtin ops only (runs on the
    plain interpreter, no Flex delegate), the batch axis dynamic."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], store)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 (reported as one line, chained)
        raise one_line_failure("LiteRT conversion", error) from error
    os.makedirs(os.path.dirname(os.path.abspath(filepath)), exist_ok=True)
    with open(filepath, "wb") as file:
        file.write(flatbuffer)


# ------------------------------------------------------------- the runtimes --
def load_exported(filepath: str | os.PathLike, format: str) -> Callable[[TensorLike], np.ndarray]:
    """Loads an exported artefact with its own runtime (onnxruntime,
    ``tf.saved_model.load``, the LiteRT interpreter); returns ``run(images)``:
    a float32 batch -> the artefact's output as numpy."""
    check_format(format)
    optional.require_installed((RUNTIME_PACKAGES[format],), f"running a {format} artefact", extra="export")
    filepath = os.fspath(filepath)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(filepath, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: np.asarray(images, "float32")})[0]
    if format == "tf_saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(filepath).signatures["serving_default"]
        return lambda images: serve(**{INPUT_NAME: tf.constant(np.asarray(images, "float32"))})[OUTPUT_NAME].numpy()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=filepath)
    index = interpreter.get_input_details()[0]["index"]

    def run(images):
        images = np.asarray(images, "float32")
        interpreter.resize_tensor_input(index, images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def run_exported(filepath: str | os.PathLike, format: str, images: TensorLike) -> np.ndarray:
    """:func:`load_exported` then one run on ``images``."""
    return load_exported(filepath, format)(images)


def artefact_size(filepath: str | os.PathLike) -> int:
    """Bytes of an exported file, or of every file under a SavedModel directory."""
    if os.path.isdir(filepath):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(filepath) for name in names)
    return os.path.getsize(filepath)


def sample_images(
    shape: Sequence[int], batch: int = 2, include_preprocessing: bool = False, seed: int = 0
) -> np.ndarray:
    """A reproducible float32 batch ``(batch,) + shape``: pixel values in
    ``[0, 255]`` for a model with preprocessing inside, else roughly
    normalised values."""
    rng = np.random.default_rng(seed)
    if include_preprocessing:
        return rng.uniform(0, 255, (batch,) + tuple(shape)).astype("float32")
    return rng.normal(0, 1, (batch,) + tuple(shape)).astype("float32")


def max_difference(model: "keras.Model", filepath: str | os.PathLike, format: str, images: TensorLike) -> float:
    """The largest absolute difference between ``model.predict(images)`` and
    the artefact's output on the same batch."""
    expected = np.asarray(model.predict(images, verbose=0), dtype="float32")
    actual = run_exported(filepath, format, images)
    if actual.shape != expected.shape:
        raise ValueError(f"the exported output has shape {actual.shape}, the model's {expected.shape}.")
    return float(np.max(np.abs(actual - expected)))
