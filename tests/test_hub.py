"""keras_sequencer.hub: the KerasHub Backbone / ImageConverter / Preprocessor /
ImageClassifier and the named presets.

The named preset is that of the tiny architecture registered as a published
variant (the ``register`` fixture) and served from 127.0.0.1: the code path of
``sequencer2d_{s,m,l}_imagenet`` (weights download, hash check, conversion,
cache, preset written once), at a size the tests afford.
"""

import hashlib
import os

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from keras_sequencer import Sequencer2D, hub, load_image, preprocess_input, pretrained  # noqa: E402
from tests.helpers import (  # noqa: E402
    MICRO_ARCH,
    REPO,
    TINY_ARCH,
    URL_PATH,
    VARIANT,
    closed_port_url,
    random_images,
    requires_timm,
    run_hidden,
    run_in_one_backend_pass,
    run_model,
)

PRESET = f"{VARIANT}{hub.PRESET_SUFFIX}"
PHOTO = os.path.join(REPO, "examples", "images", "chelsea.jpg")


def micro_classifier(num_classes=3, image_size=(32, 32)):
    backbone = hub.Sequencer2DBackbone(**MICRO_ARCH)
    preprocessor = hub.Sequencer2DImageClassifierPreprocessor(hub.Sequencer2DImageConverter(image_size=image_size))
    return hub.Sequencer2DImageClassifier(backbone=backbone, num_classes=num_classes, preprocessor=preprocessor)


def raw_photo():
    """examples/images/chelsea.jpg as it is stored: 0-255 RGB, its own size."""
    from PIL import Image

    with Image.open(PHOTO) as image:
        return np.asarray(image.convert("RGB"), dtype="float32")


def raw_images(batch=2, height=40, width=36, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (batch, height, width, 3)).astype("float32")


def test_the_package_does_not_import_keras_hub_and_a_missing_one_is_one_line(tmp_path):
    run_in_one_backend_pass("hub-import")
    proc = run_hidden(
        tmp_path,
        """
        import keras_sequencer
        print("keras_hub" in sys.modules)
        sys.modules["keras_hub"] = None  # as if not installed
        try:
            import keras_sequencer.hub
        except ImportError as error:
            print(error)
        """,
        KERAS_BACKEND=keras.backend.backend(),
    )
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "False", proc.stderr[-2000:]
    assert len(lines) == 2 and lines[1].startswith("keras_sequencer.hub needs the keras_hub package")
    assert lines[1].endswith('install it with: pip install "keras-sequencer[hub]" (or pip install keras-hub).')


def test_backbone_is_the_package_network_without_top():
    backbone = hub.Sequencer2DBackbone(**MICRO_ARCH)
    network = Sequencer2D(**MICRO_ARCH, include_top=False)
    network.set_weights(backbone.get_weights())
    images = random_images(2, 24, 20)
    features = run_model(backbone, images)
    assert features.shape == (2, 3, 2, MICRO_ARCH["embed_dims"][-1])  # 4-D, before pooling
    np.testing.assert_array_equal(features, run_model(network, images))
    config = backbone.get_config()
    assert {k: config[k] for k in ("layers", "patch_sizes", "union", "token_mixer")} == {
        "layers": [1, 1],
        "patch_sizes": [4, 2],
        "union": "cat",
        "token_mixer": "2d",
    }
    again = hub.Sequencer2DBackbone.from_config(config)
    assert again.count_params() == backbone.count_params()
    named = hub.Sequencer2DBackbone.from_model_name("vanilla_bilstm_cifar")  # a 1-D mixer, a 0-block stage
    assert named.get_config()["token_mixer"] == "1d" and named.get_config()["layers"] == [4, 3, 0]
    assert named.output_shape == (None, None, None, 192)


def test_converter_is_timm_s_eval_transform():
    converter = hub.Sequencer2DImageConverter(image_size=(224, 224))
    assert converter.image_size == (224, 224) and converter.resizing.height == 256  # floor(224 / 0.875)
    photo = raw_photo()  # the photo, not resized
    expected = preprocess_input(load_image(PHOTO))
    actual = keras.ops.convert_to_numpy(converter(photo))
    assert actual.shape == expected.shape == (224, 224, 3)
    # PIL's bicubic and Keras's antialiased bicubic differ a little, pixel by pixel.
    assert np.mean(np.abs(actual - expected)) < 0.05
    restored = hub.Sequencer2DImageConverter.from_config(converter.get_config())
    assert (restored.image_size, restored.crop_pct) == ((224, 224), 0.875)


def test_preset_round_trip_and_new_head(tmp_path):
    classifier = micro_classifier()
    images = raw_images()
    expected = classifier.predict(images, verbose=0)  # preprocessor included
    classifier.save_to_preset(str(tmp_path))
    assert {"config.json", "task.json", "model.weights.h5", "image_converter.json"} <= set(os.listdir(tmp_path))

    loaded = keras_hub.models.ImageClassifier.from_preset(str(tmp_path))
    assert type(loaded) is hub.Sequencer2DImageClassifier
    assert type(loaded.preprocessor.image_converter) is hub.Sequencer2DImageConverter
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(backbone) is hub.Sequencer2DBackbone
    features = run_model(backbone, classifier.preprocessor(images))
    np.testing.assert_allclose(features, run_model(classifier.backbone, classifier.preprocessor(images)), atol=1e-6)

    five = keras_hub.models.ImageClassifier.from_preset(str(tmp_path), num_classes=5)
    assert five.predict(images, verbose=0).shape == (2, 5)
    for a, b in zip(five.backbone.get_weights(), classifier.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_a_step_on_raw_images():
    classifier = micro_classifier()
    classifier.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in classifier.backbone.get_weights()]
    history = classifier.fit(raw_images(4), np.array([0, 1, 2, 1]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, classifier.backbone.get_weights()))


def test_unknown_preset_names_the_presets():
    assert hub.preset_variant("sequencer2d_s_imagenet") == "sequencer2d_s"
    assert hub.preset_variant("hf://user/sequencer2d_s_imagenet") is None
    assert sorted(hub.list_presets()) == ["sequencer2d_l_imagenet", "sequencer2d_m_imagenet", "sequencer2d_s_imagenet"]
    with pytest.raises(
        ValueError, match="Unknown preset 'sequencer2d_xs_imagenet'; choose one of: sequencer2d_l_imagenet, "
    ):
        hub.save_imagenet_preset("sequencer2d_xs_imagenet", "unused")


@requires_timm
def test_named_preset_online_then_offline_equals_the_package(checkpoint, server, register, capsys):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)

    classifier = hub.Sequencer2DImageClassifier.from_preset(PRESET)
    assert server.requests == [URL_PATH]
    folder = hub.preset_path(PRESET)
    assert folder.startswith(cache) and "license: apache-2.0" in open(os.path.join(folder, "README.md")).read()

    # The preset on a raw photo == Sequencer2D(weights="imagenet") on load_image + preprocess_input.
    photo = raw_photo()[None]
    logits = classifier.predict(photo, verbose=0)
    reference = Sequencer2D(**TINY_ARCH, weights="imagenet", classifier_activation=None)
    expected = run_model(reference, preprocess_input(load_image(PHOTO))[None])
    difference = float(np.max(np.abs(logits - expected)))
    with capsys.disabled():
        print(f"\n{PRESET} on chelsea.jpg: max |logit difference| {difference:.4f} ({keras.backend.backend()})")
    assert np.argmax(logits) == np.argmax(expected)
    assert difference < 0.1

    server.shutdown()
    server.server_close()  # no network from here on: the cached preset folder
    again = keras_hub.models.ImageClassifier.from_preset(folder)
    np.testing.assert_allclose(again.predict(photo, verbose=0), logits, atol=1e-5)
    backbone = hub.Sequencer2DBackbone.from_preset(PRESET)
    assert type(backbone) is hub.Sequencer2DBackbone
    preprocessor = hub.Sequencer2DImageClassifierPreprocessor.from_preset(PRESET)
    assert preprocessor.image_converter.image_size == (224, 224)
    assert hub.Sequencer2DImageConverter.from_preset(PRESET).crop_pct == 0.875


@requires_timm
def test_named_preset_offline_from_a_seeded_checkpoint(checkpoint, register, tmp_path):
    body, _ = checkpoint
    register(hashlib.sha256(body).hexdigest(), closed_port_url())
    os.makedirs(pretrained.cache_dir())
    with open(pretrained.checkpoint_cache_path(VARIANT), "wb") as f:
        f.write(body)  # put where the offline error says

    classifier = hub.Sequencer2DImageClassifier.from_preset(PRESET, num_classes=5)
    assert classifier.predict(raw_images(1, 32, 32), verbose=0).shape == (1, 5)
    written = hub.save_imagenet_preset(PRESET, str(tmp_path / "out"))
    assert {"README.md", "task.json", "model.weights.h5"} <= set(os.listdir(written))
    with pytest.raises(ValueError, match="is not empty"):
        hub.save_imagenet_preset(PRESET, written)


def test_no_network_and_no_cache_says_what_to_fetch(register):
    register("0" * 64, closed_port_url())
    with pytest.raises(OSError, match="Without network: fetch"):
        hub.Sequencer2DImageClassifier.from_preset(PRESET)
