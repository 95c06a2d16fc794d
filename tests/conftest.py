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

import http.server
import threading
import time

import keras
import pytest

from keras_sequencer import Sequencer2D, pretrained, variants
from keras_sequencer.conversion import load_state_dict
from tests.helpers import (
    COMMIT,
    TINY_ARCH,
    VARIANT,
    layer_weights,
    state_dict_numpy,
    timm_model,
)

if keras.backend.backend() == "jax":
    # Called eagerly, every keras.layers.LSTM compiles its own lax.scan; JAX's
    # persistent cache (keyed by the compiled program, not the Python function)
    # lets the many identical LSTMs of a model share one compilation: a model
    # call in eager mode gets ~5x faster.
    import tempfile

    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "keras-sequencer-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    # Without the full garbage collection clear_session() does by default: with
    # TensorFlow, torch and JAX loaded it takes 0.5-3 s, after every test.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def full_size():
    """``full_size(name)``: the published full-size model ``name`` (``sequencer2d_s``,
    ``_m`` or ``_l``) from its builder (``Sequencer2DS`` ...), logits head, any input
    size; built once per test session. Building is most of a full-size test's time
    (random initialisers over 27-54M parameters), so the tests whose subject is the
    full size share these: parity with timm (which loads timm's weights into them),
    feature shapes, export. None of them depends on the weights' values."""
    import keras_sequencer

    builders = {
        "sequencer2d_s": keras_sequencer.Sequencer2DS,
        "sequencer2d_m": keras_sequencer.Sequencer2DM,
        "sequencer2d_l": keras_sequencer.Sequencer2DL,
    }
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = builders[name](classifier_activation=None)
        return cache[name]

    yield get
    cache.clear()


@pytest.fixture(autouse=True, scope="module")
def _free_memory_per_module():
    yield
    gc.collect()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight timm-format checkpoint of the tiny architecture: (bytes, timm model)."""
    from safetensors.numpy import save_file

    model = timm_model(TINY_ARCH, num_classes=1000, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_file(state_dict_numpy(model), str(path))
    return path.read_bytes(), model


@pytest.fixture(scope="module")
def reference_weights(checkpoint):
    """``{layer name: [arrays]}`` of the tiny model loaded straight from the checkpoint."""
    model = Sequencer2D(**TINY_ARCH, classifier_activation=None)
    load_state_dict(model, checkpoint[1].state_dict())
    return layer_weights(model)


class CheckpointHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path] = (body, declared Content-Length)``, each answer
    after ``server.delay`` seconds. For a path in ``server.stalls`` it sends half
    the body, sets ``server.stalls[path]`` and waits for ``server.release``."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path not in self.server.files:
            self.send_error(404)
            return
        time.sleep(self.server.delay)
        body, length = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        stalled = self.server.stalls.get(self.path)
        if stalled is not None:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            stalled.set()
            self.server.release.wait(120)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CheckpointHandler)
    httpd.daemon_threads = True  # a stalled answer does not hold up the shutdown
    httpd.files, httpd.requests, httpd.stalls, httpd.delay = {}, [], {}, 0
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def register(monkeypatch, tmp_path):
    """Registers the tiny variant with ``sha256`` and an empty KERAS_HOME; returns the cache dir."""

    def _register(sha256, base_url):
        monkeypatch.setitem(
            variants.VARIANTS,
            VARIANT,
            variants.Variant(
                VARIANT,
                "sequencer2d",
                TINY_ARCH,
                weights=variants.PublishedWeights(
                    repo=f"test/{VARIANT}.in1k",
                    commit=COMMIT,
                    sha256=sha256,
                    original_url="https://example.invalid/tiny.pth",
                    top1=None,
                    top5=None,
                ),
            ),
        )
        monkeypatch.setenv(pretrained.BASE_URL_ENV, base_url)
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        return pretrained.cache_dir()

    return _register
