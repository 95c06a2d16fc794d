"""Settings for speed on CPU: process settings applied once when
``keras_sequencer`` is imported, and on JAX compiler options for inference.

Each was measured on CPU with Sequencer2D (the numbers are in
``benchmarks/RESULTS.md``); all are turned off together with
``KERAS_SEQUENCER_RUNTIME_TUNING=0``. ``runtime.APPLIED`` says what was done.

- **TensorFlow's XLA** (which runs the fused blocks' inference): XLA's
  YNNPACK fusions, its default for CPU dots, run this model slower than XLA's
  other dot path. So ``--xla_cpu_experimental_ynn_fusion_type=`` is appended
  to ``XLA_FLAGS`` unless ``XLA_FLAGS`` already chooses it; it touches only
  XLA's CPU compiler (``fit`` runs TensorFlow's graph executor, without XLA).
  Not on JAX, where everything is XLA: there the flag makes inference faster
  but a training step slower. So on JAX it is a per-compilation option
  instead (``compiler_options`` of ``jax.jit``), given only to the predict and
  evaluate functions of the package's models (:func:`jax_inference_compilation`,
  used by ``models.SequencerModel``); ``fit``'s train step compiles as usual.
- **torch**: glibc's ``malloc`` hands large tensors fresh pages from ``mmap``
  and trims freed heap memory, so every forward pass page-faults its
  activations in again (Keras's functional runner keeps each layer's output
  until the pass ends, which makes it worse than in timm). ``mallopt`` keeps
  blocks up to 32 MiB in the heap and stops trimming below 1 GiB, as the
  allocator advice in PyTorch's CPU tuning guide does with jemalloc/tcmalloc.
  Skipped off Linux, or when ``MALLOC_*_`` variables, ``GLIBC_TUNABLES`` or an
  ``LD_PRELOAD`` allocator already choose.
"""

import contextlib
import ctypes
import functools
import os
import sys

import keras

from keras_sequencer import keras_patches

OPT_OUT_ENV = "KERAS_SEQUENCER_RUNTIME_TUNING"
# XLA's CPU option naming the YNNPACK fusion types to use ("" for none).
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_OFF_FLAG = f"--{YNN_FUSION_OPTION}="
# mallopt(3) parameters -> values
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

# jax.jit(compiler_options=...) for inference on JAX's CPU backend (see above).
JAX_INFERENCE_COMPILER_OPTIONS = {YNN_FUSION_OPTION: ""}

APPLIED = {"xla_flags": False, "mallopt": False, "jax_inference_options": False}


def tuning_enabled(environ):
    return environ.get(OPT_OUT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _user_chose_ynn_fusion(environ):
    """Whether ``XLA_FLAGS`` already sets the YNN fusion types (the user's choice wins)."""
    return YNN_FUSION_OPTION in environ.get("XLA_FLAGS", "")


def xla_cpu_flags_to_add(environ, backend):
    """The ``XLA_FLAGS`` value to set, or ``None`` to leave it as it is.

    Pure, for testing: ``environ`` is a mapping like ``os.environ``, ``backend``
    the Keras backend name.
    """
    if backend != "tensorflow" or not tuning_enabled(environ):
        return None
    if _user_chose_ynn_fusion(environ):
        return None
    return f"{environ.get('XLA_FLAGS', '')} {YNN_OFF_FLAG}".strip()


def jax_inference_compiler_options(environ, backend, platform):
    """``compiler_options`` for JAX's inference compilations (empty: none).
    Pure, for testing: ``platform`` is ``jax.default_backend()``."""
    if backend != "jax" or platform != "cpu" or not tuning_enabled(environ):
        return {}
    if _user_chose_ynn_fusion(environ):
        return {}
    return dict(JAX_INFERENCE_COMPILER_OPTIONS)


@functools.cache
def _jax_accepts(options):
    """Whether this jaxlib compiles with ``options`` (``tuple`` of items): a
    newer XLA may drop an experimental option, and then the model must still
    compile, only without it."""
    import jax

    try:
        jax.jit(lambda t: t + 1, compiler_options=dict(options)).lower(0.0).compile()
    except Exception:  # noqa: BLE001 -- any refusal means "don't use it"
        return False
    return True


@contextlib.contextmanager
def jax_inference_compilation():
    """Within this context, Keras's JAX trainer jits with
    :data:`JAX_INFERENCE_COMPILER_OPTIONS` (wrap ``make_predict_function`` /
    ``make_test_function`` in it). Does nothing off JAX's CPU backend, when
    turned off or chosen by the user (see :func:`jax_inference_compiler_options`),
    when jaxlib refuses the options, or when the patch does not apply
    (:func:`keras_sequencer.keras_patches.jax_trainer_jit`: another Keras
    version, or a trainer that does not jit with plain ``jax.jit``, e.g. with
    Flax NNX)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    options = jax_inference_compiler_options(os.environ, "jax", jax.default_backend())
    if not options or not _jax_accepts(tuple(sorted(options.items()))):
        yield
        return
    with keras_patches.jax_trainer_jit(options) as applied:
        if applied:
            APPLIED["jax_inference_options"] = True
        yield


def malloc_settings(environ, backend, platform):
    """``{mallopt parameter: value}`` to apply (empty: none). Pure, for testing."""
    if backend != "torch" or platform != "linux" or not tuning_enabled(environ):
        return {}
    if any(name in environ for name in _ALLOCATOR_ENV):
        return {}
    if "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return {}
    if any(name in environ.get("LD_PRELOAD", "") for name in _PRELOADED_ALLOCATORS):
        return {}
    return dict(MALLOC_SETTINGS)


def apply_mallopt(settings, libc=None):
    """Calls ``mallopt`` for each setting; returns whether all were accepted
    (False without glibc)."""
    if not settings:
        return False
    if libc is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in settings.items())


def configure_backend():
    """Applies the settings above for the current Keras backend; returns
    :data:`APPLIED`."""
    backend = keras.backend.backend()
    flags = xla_cpu_flags_to_add(os.environ, backend)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags
        APPLIED["xla_flags"] = True
    settings = malloc_settings(os.environ, backend, sys.platform)
    if settings and apply_mallopt(settings):
        APPLIED["mallopt"] = True
    return APPLIED
