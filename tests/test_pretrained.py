"""weights='imagenet': the real download -> check -> convert -> cache path, served from 127.0.0.1.

A tiny architecture is registered as a published variant (monkeypatched into
keras_sequencer.variants.VARIANTS) so the checkpoint is small; everything else
(URL layout, streamed download, SHA-256 check, conversion, cache) is the
code path of sequencer2d_s/m/l.
"""

import hashlib
import http.server
import os
import socket
import threading
import time
import warnings

import numpy as np
import pytest

from keras_sequencer import Sequencer2D, pretrained, variants
from keras_sequencer.conversion import load_state_dict
from keras_sequencer.models import MODEL_CONFIGS
from tests.helpers import (
    TINY_ARCH,
    random_images,
    requires_timm,
    state_dict_numpy,
    timm_forward,
    timm_model,
    to_numpy,
)

pytestmark = requires_timm

VARIANT = "sequencer2d_tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
URL_PATH = f"/test/{VARIANT}.in1k/resolve/{COMMIT}/model.safetensors"


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
    return _layer_weights(model)


def _layer_weights(model):
    return {layer.name: [to_numpy(w) for w in layer.weights] for layer in model.layers if layer.weights}


def _assert_weights_equal(model, reference, skip=()):
    weights = _layer_weights(model)
    assert set(weights) == set(reference) - set(skip)
    for name, arrays in weights.items():
        for actual, expected in zip(arrays, reference[name]):
            np.testing.assert_array_equal(actual, expected, err_msg=name)


class _Handler(http.server.BaseHTTPRequestHandler):
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
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _tiny(**kwargs):
    return Sequencer2D(**TINY_ARCH, weights="imagenet", classifier_activation=None, **kwargs)


def test_download_convert_cache_then_offline(checkpoint, server, register, capfd):
    body, torch_model = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)
    images = random_images(2, 42, 56, seed=1)
    expected = timm_forward(torch_model, images)

    model = _tiny()
    np.testing.assert_allclose(to_numpy(model(images)), expected, atol=1e-4)
    assert server.requests == [URL_PATH]
    assert capfd.readouterr().out == ""  # a download prints nothing
    # Only the converted weights stay in the cache (under KERAS_HOME); the raw checkpoint,
    # the lock file and the temporary files are gone.
    assert os.listdir(cache) == [os.path.basename(pretrained.weights_cache_path(VARIANT))]
    assert cache.startswith(os.environ["KERAS_HOME"])

    server.shutdown()
    server.server_close()  # no network from here on
    again = _tiny()
    _assert_weights_equal(again, _layer_weights(model))
    assert server.requests == [URL_PATH]


def test_other_classes_and_no_top_keep_the_imagenet_body(checkpoint, server, register, reference_weights):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    register(hashlib.sha256(body).hexdigest(), server.base_url)

    with pytest.warns(UserWarning, match="1000 classes and the model 10"):
        model = _tiny(classes=10)
    assert model.output_shape == (None, 10)
    _assert_weights_equal(model, dict(reference_weights, head=model.get_layer("head").get_weights()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pooled = Sequencer2D(**TINY_ARCH, weights="imagenet", include_top=False, pooling="avg")
    _assert_weights_equal(pooled, reference_weights, skip=["head"])
    assert pooled.output_shape == (None, TINY_ARCH["embed_dims"][-1])
    assert server.requests == [URL_PATH]  # converted once, reused


def test_wrong_hash_fails_and_leaves_nothing(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register("0" * 64, server.base_url)
    with pytest.raises(ValueError, match="SHA-256"):
        _tiny()
    assert os.listdir(cache) == []


def test_truncated_transfer_fails_and_leaves_nothing(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body[: len(body) // 2], len(body))  # connection closes early
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)
    with pytest.raises(OSError, match="retrieval incomplete"):
        _tiny()
    assert os.listdir(cache) == []


def test_truncated_file_without_published_hash_fails_and_leaves_nothing(checkpoint, server, register):
    # sequencer2d_m has no published hash: a complete transfer of a truncated
    # file is caught by the conversion.
    body, _ = checkpoint
    cut = body[: len(body) - 1000]
    server.files[URL_PATH] = (cut, len(cut))
    cache = register(None, server.base_url)
    with pytest.raises(ValueError, match="could not be converted"):
        _tiny()
    assert os.listdir(cache) == []


def test_no_network_says_what_to_fetch_and_where(register, capfd):
    cache = register("0" * 64, _closed_port_url())
    url = pretrained.checkpoint_url(VARIANT)
    with pytest.raises(OSError) as info:
        _tiny()
    message = str(info.value)
    assert "\n" not in message
    assert url in message
    assert pretrained.checkpoint_cache_path(VARIANT) in message
    # Advice usable from Python and from the command line.
    assert "weights=PATH" in message and "--weights PATH" in message
    assert "Connection refused" in message
    assert os.listdir(cache) == []
    assert capfd.readouterr().out == ""  # no "Downloading data from ..." on stdout


def test_preseeded_checkpoint_loads_offline(checkpoint, register, reference_weights):
    body, _ = checkpoint
    cache = register(hashlib.sha256(body).hexdigest(), _closed_port_url())
    os.makedirs(cache, exist_ok=True)
    with open(pretrained.checkpoint_cache_path(VARIANT), "wb") as f:
        f.write(body)
    _assert_weights_equal(_tiny(), reference_weights)
    assert os.listdir(cache) == [os.path.basename(pretrained.weights_cache_path(VARIANT))]


def test_imagenet_only_for_published_architectures(register):
    register(None, _closed_port_url())
    with pytest.raises(ValueError, match="exists only for the published architectures"):
        Sequencer2D(**dict(TINY_ARCH, hidden_sizes=(4, 6, 6, 8)), weights="imagenet")
    with pytest.raises(ValueError, match="exists only for the published architectures"):
        Sequencer2D(**TINY_ARCH, rnn_type="gru", weights="imagenet")


def test_published_table_matches_the_release(monkeypatch):
    monkeypatch.delenv(pretrained.BASE_URL_ENV, raising=False)
    for name in ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l"):
        arch = dict(MODEL_CONFIGS[name], bidirectional=True, union="cat", with_fc=True, rnn_type="lstm")
        arch["layers"] = list(arch["layers"])  # lists and tuples both match
        assert pretrained.variant_for_arch(arch) == name
        commit = pretrained.PRETRAINED[name]["commit"]
        assert len(commit) == 40
        assert pretrained.checkpoint_url(name) == (
            f"https://huggingface.co/timm/{name}.in1k/resolve/{commit}/model.safetensors"
        )
    hashes = {name: info["sha256"] for name, info in pretrained.PRETRAINED.items()}
    assert hashes["sequencer2d_m"] is None
    assert all(len(hashes[n]) == 64 for n in ("sequencer2d_s", "sequencer2d_l"))
