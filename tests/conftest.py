"""Shared pytest setup.

The backend is chosen with ``KERAS_BACKEND`` (jax, tensorflow or torch);
``python tests/run_all_backends.py`` runs the suite once per backend.
"""

import gc
import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# CUDA builds of torch ship triton, whose LLVM clashes with TensorFlow's when it is
# loaded *after* TensorFlow ("LLVM ERROR: inconsistency in registered CommandLine
# options"). Importing timm (-> torchvision -> triton) first avoids it.
if importlib.util.find_spec("timm") is not None:
    import timm  # noqa: F401

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "jax":
    # Called eagerly, every keras.layers.LSTM compiles its own lax.scan; JAX's
    # persistent cache (keyed by the compiled program, not the Python function)
    # lets the many identical LSTMs of a model share one compilation: a model
    # call in eager mode gets ~5x faster.
    import tempfile  # noqa: E402

    import jax  # noqa: E402

    jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "keras-sequencer-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    # Without the full garbage collection clear_session() does by default: with
    # TensorFlow, torch and JAX loaded it takes 0.5-3 s, after every test.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _free_memory_per_module():
    yield
    gc.collect()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
