"""Process settings for speed on CPU, applied once when ``keras_sequencer`` is imported.

Both were measured on the 2-core Xeon of the README's "Speed" section
(Sequencer2D-S, batch 8, 224x224, fp32) and are turned off together with
``KERAS_SEQUENCER_RUNTIME_TUNING=0``. ``runtime.APPLIED`` says what was done.

- **TensorFlow's XLA** (which runs the fused blocks' inference): XLA's
  YNNPACK fusions, its default for CPU dots, ran this model slower than XLA's
  other dot path: forward ~705 -> 630-675 ms with them off. So
  ``--xla_cpu_experimental_ynn_fusion_type=`` is appended to ``XLA_FLAGS``
  unless ``XLA_FLAGS`` already chooses it; it touches only XLA's CPU compiler
  (``fit`` runs TensorFlow's graph executor, without XLA). Not on JAX, where
  everything is XLA: there the flag made inference faster (~810 -> ~690 ms) but
  a training step much slower (1.60 -> 0.93 images/s); the README shows how to
  set it for inference-only JAX jobs.
- **torch**: glibc's ``malloc`` hands large tensors fresh pages from ``mmap``
  and trims freed heap memory, so every forward pass page-faults its
  activations in again (Keras's functional runner keeps each layer's output
  until the pass ends, which makes it worse than in timm). ``mallopt`` keeps
  blocks up to 32 MiB in the heap and stops trimming below 1 GiB, as the
  allocator advice in PyTorch's CPU tuning guide does with jemalloc/tcmalloc:
  forward ~760 -> ~685 ms (timm under the same setting: ~720 -> ~685 ms).
  Skipped off Linux, or when ``MALLOC_*_`` variables, ``GLIBC_TUNABLES`` or an
  ``LD_PRELOAD`` allocator already choose.
"""

import ctypes
import os
import sys

import keras

OPT_OUT_ENV = "KERAS_SEQUENCER_RUNTIME_TUNING"
YNN_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
# mallopt(3) parameters -> values
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

APPLIED = {"xla_flags": False, "mallopt": False}


def tuning_enabled(environ):
    return environ.get(OPT_OUT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def xla_cpu_flags_to_add(environ, backend):
    """The ``XLA_FLAGS`` value to set, or ``None`` to leave it as it is.

    Pure, for testing: ``environ`` is a mapping like ``os.environ``, ``backend``
    the Keras backend name.
    """
    if backend != "tensorflow" or not tuning_enabled(environ):
        return None
    current = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:  # the user chose
        return None
    return f"{current} {YNN_OFF_FLAG}".strip()


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
