"""Every change this package makes to Keras's private modules, in one place.

Keras has no public hook for four things the package needs:

- :func:`jax_trainer_jit`: compile options for one JAX compilation (the
  inference options of :func:`keras_sequencer.runtime.jax_inference_compilation`),
  by swapping the ``jit`` the JAX trainer module compiles its step functions with.
- :func:`install_tf_multi_worker_scalar_mean`: the TensorFlow trainer's
  ``reduce_per_replica`` averages scalar logs with ``axis=0`` under
  ``MultiWorkerMirroredStrategy``, which fails (tensorflow/tensorflow#72388).
- :func:`tf_multi_worker_symbolic_build`: before training, the TensorFlow
  trainer's ``_maybe_symbolic_build`` eagerly reduces an ``(x, y)`` tuple of
  per-replica batches, which ``MultiWorkerMirroredStrategy`` rejects; the model
  is built from the dataset's element spec with ``_symbolic_build`` instead.
- :func:`tf_build_before_tracing`: without a distribution strategy, the
  TensorFlow trainer leaves the optimizer's and the metrics' variables to be
  created while ``fit``'s train function is traced, and ``tf.function`` then
  traces the whole step a second time (a function that created variables is
  traced again without them). :class:`~keras_sequencer.models.SequencerModel`
  builds them first, as Keras does under a strategy.

Each patch is applied only on the Keras versions it was verified on
(:data:`VERIFIED`). On another version it is skipped with one warning and the
package falls back to Keras's own behaviour (inference compiles without the
extra options; multi-worker TensorFlow training relies on Keras). The tests in
``tests/test_keras_patches.py`` check the private names and signatures each
patch touches, so a Keras change fails there first.
"""

import contextlib
import functools
import re
import warnings

import keras

# patch -> the Keras versions it was verified on (">=X.Y,<X.Z" clauses, all must hold)
VERIFIED = {
    "jax_trainer_jit": ">=3.15,<3.16",
    "tf_multi_worker_scalar_mean": ">=3.15,<3.16",
    "tf_multi_worker_symbolic_build": ">=3.15,<3.16",
    "tf_build_before_tracing": ">=3.15,<3.16",
}

_WARNED = set()


def version_tuple(version):
    """``"3.15.1"`` -> ``(3, 15, 1)`` (pre-release / dev suffixes ignored)."""
    numbers = []
    for part in str(version).split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:
            break
    return tuple(numbers)


def version_matches(spec, version):
    """Whether ``version`` satisfies ``spec``, e.g. ``">=3.15,<3.16"``."""
    have = version_tuple(version)
    for clause in spec.split(","):
        operator, wanted = re.fullmatch(r"\s*(>=|<=|==|<|>)\s*([\d.]+)\s*", clause).groups()
        wanted = version_tuple(wanted)
        common = have[: len(wanted)] if operator == "==" else have
        holds = {
            ">=": have >= wanted,
            ">": have > wanted,
            "<": have < wanted,
            "<=": have <= wanted,
            "==": common == wanted,
        }[operator]
        if not holds:
            return False
    return True


def applies(patch, version=None):
    """Whether ``patch`` (a key of :data:`VERIFIED`) is applied with this Keras;
    if not, warns once naming the patch, the versions and what happens instead."""
    version = keras.__version__ if version is None else version
    if version_matches(VERIFIED[patch], version):
        return True
    if patch not in _WARNED:
        _WARNED.add(patch)
        warnings.warn(
            f"keras_sequencer: Keras {version} is outside the versions the {patch} patch "
            f"was verified on ({VERIFIED[patch]}); it is skipped and Keras's own behaviour "
            "is used.",
            stacklevel=3,
        )
    return False


@contextlib.contextmanager
def jax_trainer_jit(compiler_options):
    """Within this context, Keras's JAX trainer compiles its step functions with
    ``jax.jit(..., compiler_options=compiler_options)``; yields whether it does.

    Swaps ``keras.src.backend.jax.trainer.jit`` (``jax.jit``, or ``nnx.jit``
    with Flax NNX, left alone) for the duration, so another thread making a
    Keras JAX function at that moment would get the options too.
    """
    import jax
    from keras.src.backend.jax import trainer

    original = getattr(trainer, "jit", None)
    if original is not jax.jit or not applies("jax_trainer_jit"):
        yield False
        return
    trainer.jit = functools.partial(jax.jit, compiler_options=compiler_options)
    try:
        yield True
    finally:
        trainer.jit = original


def install_tf_multi_worker_scalar_mean():
    """Makes the TensorFlow trainer average scalar per-replica logs with
    ``axis=None`` under ``MultiWorkerMirroredStrategy`` (Keras uses ``axis=0``,
    which fails for scalars: "Invalid reduction dimension 0 for input with 0
    dimensions"); everything else is left to Keras. Idempotent; returns whether
    the patch is in place."""
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "keras_sequencer_patch", False):
        return True
    if not applies("tf_multi_worker_scalar_mean"):
        return False

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def mean(value):
            rank = strategy.experimental_local_results(value)[0].shape.rank
            return strategy.reduce("MEAN", value, axis=0 if rank else None)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica.keras_sequencer_patch = True
    trainer.reduce_per_replica = reduce_per_replica
    return True


def tf_multi_worker_symbolic_build(model, dataset):
    """Builds ``model`` (layers, loss, metrics, optimizer) from
    ``dataset.element_spec`` and turns off the TensorFlow trainer's own build
    step, which under ``MultiWorkerMirroredStrategy`` fails ("Attempt to convert
    a value (PerReplica...)"). Call inside the strategy's scope after
    ``compile``; returns whether it did."""
    if not applies("tf_multi_worker_symbolic_build"):
        return False
    model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    return True


def tf_build_before_tracing(model, iterator=None, data_batch=None):
    """The TensorFlow trainer's ``_maybe_symbolic_build`` for ``model`` without
    a distribution strategy: builds the loss, the metrics and the optimizer
    (``_symbolic_build``, as Keras does under a strategy and on JAX and torch),
    from ``data_batch`` or, only if something other than the optimizer is
    unbuilt, one batch of ``iterator`` (which ``fit`` and ``evaluate`` reset
    afterwards). Keras defers this to the tracing of the train function, where
    creating the optimizer's slots and the metrics' variables makes
    ``tf.function`` trace the step twice. Returns whether it built (False with
    a strategy, on another backend, or off the verified versions: Keras's own
    behaviour then)."""
    if keras.backend.backend() != "tensorflow" or model._distribute_strategy is not None:
        return False
    if not applies("tf_build_before_tracing"):
        return False
    model._symbolic_build(iterator=iterator, data_batch=data_batch)
    return True
