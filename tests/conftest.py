"""Shared pytest setup.

The backend is chosen with ``KERAS_BACKEND`` (jax, tensorflow or torch);
``python tests/run_all_backends.py`` runs the suite once per backend.
"""

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


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    keras.backend.clear_session()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
