"""weights='imagenet': the real download -> check -> convert -> cache path, served from 127.0.0.1.

A tiny architecture is registered as a published variant (monkeypatched into
keras_sequencer.variants.VARIANTS) so the checkpoint is small; everything else
(URL layout, streamed download, SHA-256 check, conversion, cache) is the
code path of sequencer2d_s/m/l.
"""

import hashlib
import io
import os
import warnings

import numpy as np
import pytest

from keras_sequencer import Sequencer2D, pretrained
from keras_sequencer.models import MODEL_CONFIGS
from tests.helpers import (
    TINY_ARCH,
    URL_PATH,
    VARIANT,
    assert_weights_equal,
    closed_port_url,
    layer_weights,
    random_images,
    requires_timm,
    timm_forward,
    tiny_imagenet_model,
    to_numpy,
)

pytestmark = requires_timm


def test_download_convert_cache_then_offline(checkpoint, server, register, capfd):
    body, torch_model = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)
    images = random_images(2, 42, 56, seed=1)
    expected = timm_forward(torch_model, images)

    model = tiny_imagenet_model()
    np.testing.assert_allclose(to_numpy(model(images)), expected, atol=1e-4)
    assert server.requests == [URL_PATH]
    out, err = capfd.readouterr()
    assert out == ""  # a download prints nothing on stdout; on stderr what it fetches and converts
    assert f"keras-sequencer: downloading {server.base_url}{URL_PATH} ({len(body) / 1e6:.1f} MB)" in err
    assert f"keras-sequencer: downloaded {len(body) / 1e6:.1f} MB" in err
    assert f"keras-sequencer: converting {pretrained.checkpoint_cache_path(VARIANT)} to Keras weights" in err
    # Only the converted weights stay in the cache (under KERAS_HOME); the raw checkpoint,
    # the lock file and the temporary files are gone.
    assert os.listdir(cache) == [os.path.basename(pretrained.weights_cache_path(VARIANT))]
    assert cache.startswith(os.environ["KERAS_HOME"])

    progress = io.StringIO()
    progress.isatty = lambda: True  # a terminal: the bar, updated in place
    bar = pretrained.DownloadProgress("http://x/y", 2_000_000, stream=progress)
    bar.update(1_000_000)
    bar.close(2_000_000)
    assert "\r[" + "=" * 15 + " " * 15 + "] 1.0 MB / 2.0 MB  50%" in progress.getvalue()

    server.shutdown()
    server.server_close()  # no network from here on
    again = tiny_imagenet_model()
    assert_weights_equal(again, layer_weights(model))
    assert server.requests == [URL_PATH]


def test_other_classes_and_no_top_keep_the_imagenet_body(checkpoint, server, register, reference_weights):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    register(hashlib.sha256(body).hexdigest(), server.base_url)

    with pytest.warns(UserWarning, match="1000 classes and the model 10"):
        model = tiny_imagenet_model(classes=10)
    assert model.output_shape == (None, 10)
    assert_weights_equal(model, dict(reference_weights, head=model.get_layer("head").get_weights()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pooled = Sequencer2D(**TINY_ARCH, weights="imagenet", include_top=False, pooling="avg")
    assert_weights_equal(pooled, reference_weights, skip=["head"])
    assert pooled.output_shape == (None, TINY_ARCH["embed_dims"][-1])
    assert server.requests == [URL_PATH]  # converted once, reused


def test_wrong_hash_fails_and_leaves_nothing(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register("0" * 64, server.base_url)
    with pytest.raises(ValueError, match="SHA-256"):
        tiny_imagenet_model()
    assert os.listdir(cache) == []


def test_truncated_transfer_fails_and_leaves_nothing(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body[: len(body) // 2], len(body))  # connection closes early
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)
    with pytest.raises(OSError, match="retrieval incomplete"):
        tiny_imagenet_model()
    assert os.listdir(cache) == []


def test_truncated_file_without_published_hash_fails_and_leaves_nothing(checkpoint, server, register):
    # sequencer2d_m has no published hash: a complete transfer of a truncated
    # file is caught by the conversion.
    body, _ = checkpoint
    cut = body[: len(body) - 1000]
    server.files[URL_PATH] = (cut, len(cut))
    cache = register(None, server.base_url)
    with pytest.raises(ValueError, match="could not be converted"):
        tiny_imagenet_model()
    assert os.listdir(cache) == []


def test_no_network_says_what_to_fetch_and_where(register, capfd):
    cache = register("0" * 64, closed_port_url())
    url = pretrained.checkpoint_url(VARIANT)
    with pytest.raises(OSError) as info:
        tiny_imagenet_model()
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
    cache = register(hashlib.sha256(body).hexdigest(), closed_port_url())
    os.makedirs(cache, exist_ok=True)
    with open(pretrained.checkpoint_cache_path(VARIANT), "wb") as f:
        f.write(body)
    assert_weights_equal(tiny_imagenet_model(), reference_weights)
    assert os.listdir(cache) == [os.path.basename(pretrained.weights_cache_path(VARIANT))]


def test_imagenet_only_for_published_architectures(register):
    register(None, closed_port_url())
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


@pytest.fixture
def built_models(monkeypatch):
    """The Keras models constructed while the test runs (each once, however many
    ``__init__`` calls its construction makes)."""
    import keras

    built = {}
    init = keras.Model.__init__

    def counting(self, *args, **kwargs):
        built[id(self)] = self
        init(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "__init__", counting)
    return built


@pytest.mark.parametrize("first", [dict(classes=10), dict(include_top=False), dict()], ids=["10", "no_top", "1000"])
def test_imagenet_builds_only_the_model_asked_for(first, checkpoint, server, register, reference_weights, built_models):
    """The first load converts into the model being built and writes the cache from it;
    later loads read the cache into it: no second model, whatever the head."""
    from keras_sequencer import create_model
    from keras_sequencer.weights import stored_classes

    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    register(hashlib.sha256(body).hexdigest(), server.base_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 10-class head's warning
        create_model(VARIANT, weights="imagenet", classifier_activation=None, **first)
    assert len(built_models) == 1
    # The cache holds the checkpoint's full model, its 1000-class head included.
    assert stored_classes(pretrained.weights_cache_path(VARIANT)) == 1000
    for kwargs in (dict(classes=10), dict(include_top=False), dict()):
        built_models.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(VARIANT, weights="imagenet", classifier_activation=None, **kwargs)
        assert len(built_models) == 1
        if "classes" in kwargs:  # a fresh 10-class head on the ImageNet body
            assert_weights_equal(model, dict(reference_weights, head=model.get_layer("head").get_weights()))
        else:
            assert_weights_equal(model, reference_weights, skip=["head"] if kwargs else [])
    assert server.requests == [URL_PATH]


def test_weights_name_must_name_the_models_architecture(register):
    cache = register(None, closed_port_url())
    with pytest.raises(ValueError, match=f"weights_name='{VARIANT}' names another architecture.*hidden_sizes"):
        Sequencer2D(**dict(TINY_ARCH, hidden_sizes=(4, 6, 6, 8)), weights="imagenet", weights_name=VARIANT)
    assert not os.path.exists(cache)  # refused before any download
    with pytest.raises(ValueError, match="Unknown model 'sequencer2d_tinyy'"):
        Sequencer2D(**TINY_ARCH, weights="imagenet", weights_name="sequencer2d_tinyy")
