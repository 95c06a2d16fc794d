"""Kernels for the TensorFlow backend: the fused recurrence with its gates
split by one ``Split`` op, and a fused block's inference call compiled as one
XLA cluster. The other kernels are :mod:`.generic`'s."""

import functools
import json

import keras
import tensorflow as tf
from keras import ops

from keras_sequencer.kernels import generic
from keras_sequencer.kernels.generic import (  # noqa: F401  (the kernel API)
    dense,
    layer_norm,
    patch_embedding,
    residual_dense,
)


def split_gates(z, units):
    """:func:`generic.lstm_gates` by one ``Split`` into the four gates
    ``(..., 4U) -> 4 x (..., U)``: TensorFlow runs each slice of the last
    axis as its own StridedSlice copy, which made training steps slower and
    their first call longer. (On JAX the split lengthened the first training
    call, so JAX keeps slices.)"""
    i, f, g, o = ops.split(z, 4, axis=-1)
    return ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)


def scanned_lstm_with_gradient(projections, recurrent, per_seq, reverse):
    """:func:`generic.scanned_lstm` (with :func:`split_gates`) whose scan is a
    ``tf.custom_gradient``: projections ``S x (T, N, D, 4U)`` and recurrent
    kernels ``(S*D, U, 4U)`` -> outputs ``S x (T, N, D*U)``. The forward is
    one loop that keeps the steps' activations
    (:func:`generic.scanned_lstm_states`), the backward one reverse loop
    (:func:`generic.scanned_lstm_backward`). TensorFlow's own derivative of
    the scan kept every step's loop state and ran slower."""

    @tf.custom_gradient
    def run(z, recurrent):
        states, saved = generic.scanned_lstm_states(z, recurrent, split_gates)

        def backward(h_grads):
            return generic.scanned_lstm_backward(recurrent, saved, h_grads)

        return states, backward

    states = run(generic.stacked_inputs(projections, per_seq, reverse), recurrent)
    return generic.outputs_from_stacked(states, len(projections), per_seq, reverse)


def unrolled_lstm_with_gradient(projections, recurrent, per_seq, reverse):
    """:func:`generic.unrolled_lstm` (with :func:`split_gates`) whose backward
    is :func:`generic.unrolled_lstm_backward`, as a ``tf.custom_gradient``:
    projections ``S x (T, N, D, 4U)`` and recurrent kernels ``(S*D, U, 4U)``
    -> outputs ``S x (T, N, D*U)``."""

    @tf.custom_gradient
    def run(recurrent, *projections):
        outputs, saved = generic.unrolled_lstm(list(projections), recurrent, per_seq, reverse, split_gates)

        def backward(*output_grads):
            grads, recurrent_grad = generic.unrolled_lstm_backward(recurrent, saved, output_grads, per_seq, reverse)
            return (recurrent_grad, *grads)

        return outputs, backward

    return list(run(recurrent, *projections))


def unrolled_outputs(projections, recurrent, per_seq, reverse):
    """The unrolled loop's outputs: bidirectional, differentiated by TensorFlow's
    autodiff (faster here than the hand-written backward); unidirectional
    (``per_seq`` 1), by :func:`unrolled_lstm_with_gradient`. Grappler's
    arithmetic optimizer was seen to rewrite autodiff's graph of a
    unidirectional recurrence over two same-shape sequences into wrong
    gradients in ``tf.function`` (TensorFlow 2.21, AVX-512 CPU); the
    hand-written backward has no such stack/unstack chain."""
    if per_seq == 1:
        return unrolled_lstm_with_gradient(projections, recurrent, per_seq, reverse)
    return generic.unrolled_outputs(projections, recurrent, per_seq, reverse, split_gates)


def fused_lstm(sequences, cells, reverse, unroll=None):
    """:func:`generic.fused_lstm` with :func:`split_gates`. The unrolled loop
    (the default for a static ``T``) is :func:`unrolled_outputs`; the scanned
    one (``unroll=False``, or an unknown ``T``) has its own backward
    (:func:`scanned_lstm_with_gradient`). Scanned, ``fit``'s first call took
    as long as unrolled and each step longer on CPU, so the unrolled loop
    stays the default."""
    return generic.recurrence(
        sequences,
        cells,
        reverse,
        unroll,
        gates=split_gates,
        unrolled=unrolled_outputs,
        scanned=scanned_lstm_with_gradient,
    )


def bilstm2d(x, rnns, concat):
    """:func:`generic.bilstm2d` with this module's :func:`fused_lstm`."""
    recurrences = functools.partial(generic.grouped_recurrences, fused_lstm=fused_lstm)
    return generic.time_major_bilstm2d(x, rnns, concat, recurrences)


# One compiled inference function per distinct block: the weights are its
# arguments, not captured variables, so every block with the same configuration
# and weights (shapes, dtypes) in any model shares it. TensorFlow's XLA
# compilation cache is never freed; with a function per block, each model built
# in a process kept its own executables (memory and memory maps) for good.
_INFERENCE_FUNCTIONS = {}
ATTRIBUTE = "_xla_inference_fn"  # the block's SharedInference, looked up once


class SharedInference:
    """A template block and its compiled inference function. A plain object,
    not a tuple: Keras's saving walks containers held by a layer, and the
    template (another block, or the block itself) would be walked again."""

    __slots__ = ("template", "fn")

    def __init__(self, template, fn):
        self.template, self.fn = template, fn


def weight_signature(layer):
    """The shapes and dtypes of ``layer.weights``, in order."""
    return tuple((tuple(w.shape), str(w.dtype)) for w in layer.weights)


def shared_entry(block, functions, signature_of, make):
    """The entry of ``functions`` (a registry above) for every block like
    ``block``: the same configuration (but the name) and ``signature_of``.
    ``make(block)`` makes it, with ``block`` as the template, when there is none
    or when the template has changed since (quantized: other weights)."""
    config = {k: v for k, v in block.get_config().items() if k != "name"}
    signature = signature_of(block)
    key = (json.dumps(config, sort_keys=True, default=str), signature)
    entry = functions.get(key)
    if entry is None or signature_of(entry.template) != signature:
        entry = functions[key] = make(block)
    return entry


def block_entry(block, attribute, signature_of, lookup):
    """``block``'s entry, kept off Keras's tracking in ``block.__dict__[attribute]``
    and looked up again (``lookup(block)``) when its signature has changed."""
    entry = block.__dict__.get(attribute)
    if entry is None or signature_of(entry.template) != signature_of(block):
        entry = lookup(block)
        object.__setattr__(block, attribute, entry)
    return entry


def inference_function(block):
    """A :class:`SharedInference`: the shared ``tf.function(jit_compile=True)`` that
    computes ``forward_pass(x, training=False)`` of any block like ``block``
    from ``(weights, x)``, ``weights`` being the block's ``weights`` as
    tensors, put in place of the template block's variables by a
    ``keras.StatelessScope``. The template is the first such block; if it has
    changed since (quantized: other weights), ``block`` takes its place."""

    def make(template):
        def run(weights, x):
            with keras.StatelessScope(state_mapping=list(zip(template.weights, weights))):
                return template.forward_pass(x, training=False)

        return SharedInference(template, tf.function(run, jit_compile=True, autograph=False))

    return shared_entry(block, _INFERENCE_FUNCTIONS, weight_signature, make)


# One traced training function per distinct block (weights, seed state and
# shapes): the identical blocks of a stage call it instead of each adding its
# own forward and backward to ``fit``'s graph.
_TRAINING_FUNCTIONS = {}
TRAINING_ATTRIBUTE = "_shared_training_fn"


def variable_signature(layer):
    """The shapes and dtypes of ``layer.variables`` (weights and seed states), in order."""
    return tuple((tuple(v.shape), str(v.dtype)) for v in layer.variables)


class SharedTraining(SharedInference):
    """A :class:`SharedInference` for training, plus ``assigned``: the indices in
    ``template.variables`` of the variables its function assigns (found when it
    is traced; the same for every block alike)."""

    __slots__ = ("assigned",)

    def __init__(self, template, fn):
        super().__init__(template, fn)
        self.assigned = []


def training_function(block):
    """A :class:`SharedTraining` whose ``fn(values, x) -> (y, new values)``
    computes ``forward_pass(x, training=True)`` of any block like ``block``
    from ``values``, the block's ``variables`` as tensors (weights and seed
    states), and returns the new values of those it assigned (the DropPath
    seed state, when its rate is > 0). Traced once per distinct block and
    not inlined (``_noinline``): TensorFlow builds and optimizes its forward
    and its gradient once, and the graph of ``fit`` calls them block by block
    instead of holding a copy per block."""

    def make(template):
        def run(values, x):
            with keras.StatelessScope(state_mapping=list(zip(template.variables, values))) as scope:
                y = template.forward_pass(x, training=True)
                new = [scope.get_current_value(v) for v in template.variables]
            entry.assigned[:] = [i for i, (n, v) in enumerate(zip(new, values)) if n is not v]
            return y, [new[i] for i in entry.assigned]

        entry = SharedTraining(template, tf.function(run, autograph=False, experimental_attributes={"_noinline": True}))
        return entry

    return shared_entry(block, _TRAINING_FUNCTIONS, variable_signature, make)


def shared_training_call(block, x):
    """``block.forward_pass(x, training=True)`` by :func:`training_function`,
    the block's variables assigned as the direct call would (its seed states
    advanced)."""
    entry = block_entry(block, TRAINING_ATTRIBUTE, variable_signature, training_function)
    variables = block.variables
    y, new = entry.fn([v.value for v in variables], x)
    for i, value in zip(entry.assigned, new):
        variables[i].assign(value)
    return y


def fused_block(block, x, training):
    """A fused ``Sequencer2DBlock``'s call, ``(B, H, W, C) -> (B, H, W, C)``;
    for inference (``training`` false) ``block.forward_pass(x,
    training=False)`` as one XLA cluster (:func:`inference_function`, kept
    off Keras's tracking in ``block.__dict__["_xla_inference_fn"]``).

    The fused path's unrolled recurrence is hundreds of small ops per block,
    which TensorFlow's graph executor runs slowly on CPU and Keras's
    ``jit_compile="auto"`` does not put under XLA there. Per block, so
    ``fit`` (slower under XLA on CPU) keeps the graph path; the first call
    of each distinct block compiles it.
    """
    if training:
        return shared_training_call(block, x)
    entry = block_entry(block, ATTRIBUTE, weight_signature, inference_function)
    return entry.fn([tf.convert_to_tensor(w.value) for w in block.weights], x)
