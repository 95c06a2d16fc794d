"""Backend settings for speed, applied once when ``keras_sequencer`` is imported.

JAX on CPU: XLA's YNNPACK fusions (the default for dots in jax 0.10) run this
model's GEMMs ~10-15 % slower than XLA's other CPU dot path on the 2-core
Xeon the README's "Speed" section was measured on: a Sequencer2D-S forward
pass at batch 8, 224x224 went from ~810 ms to ~695 ms with them off. So, when
the Keras backend is JAX and JAX has not yet created its backends (XLA reads
``XLA_FLAGS`` once, then), ``--xla_cpu_experimental_ynn_fusion_type=`` is
appended to ``XLA_FLAGS``. The flag is process-wide but touches only XLA's CPU
compiler (GPU/TPU are unaffected). It is left alone if ``XLA_FLAGS`` already
sets it, and not applied at all with ``KERAS_SEQUENCER_XLA_FLAGS=0``.
"""

import os

import keras

YNN_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
OPT_OUT_ENV = "KERAS_SEQUENCER_XLA_FLAGS"


def _jax_backends_initialized():
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # unknown JAX internals: do not guess
        return True


def xla_cpu_flags_to_add(environ, backend, backends_initialized):
    """The ``XLA_FLAGS`` value to set, or ``None`` to leave it as it is.

    Pure, for testing: ``environ`` is a mapping like ``os.environ``, ``backend``
    the Keras backend name, ``backends_initialized`` whether JAX already read
    its flags.
    """
    if backend != "jax" or backends_initialized:
        return None
    if environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    current = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:  # the user chose
        return None
    return f"{current} {YNN_OFF_FLAG}".strip()


def configure_backend():
    """Applies :func:`xla_cpu_flags_to_add` to ``os.environ``; returns whether
    it changed ``XLA_FLAGS``."""
    backend = keras.backend.backend()
    flags = xla_cpu_flags_to_add(
        os.environ, backend, backend == "jax" and _jax_backends_initialized()
    )
    if flags is None:
        return False
    os.environ["XLA_FLAGS"] = flags
    return True
