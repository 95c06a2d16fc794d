"""Sequencer2D in KerasHub's conventions: a ``Backbone``, an ``ImageConverter``
(timm's evaluation transform, ``crop_pct`` included), an
``ImageClassifierPreprocessor``, an ``ImageClassifier`` and the presets
``sequencer2d_{s,m,l}_imagenet``.

Needs keras-hub (the ``[hub]`` extra); ``import keras_sequencer`` does not
import this module. The classes are registered with Keras under the
``keras_sequencer`` package, so once ``keras_sequencer.hub`` is imported
KerasHub's own entry points find them in a saved preset::

    import keras_hub
    import keras_sequencer.hub

    classifier = keras_hub.models.ImageClassifier.from_preset("path/or/hf://handle")

The named presets are made on first use from the same pinned, hashed, cached
timm checkpoints as ``weights="imagenet"`` (:mod:`keras_sequencer.pretrained`):
the preset folder is written under ``$KERAS_HOME/models/keras_sequencer/presets/``
and later loads read it, with no network.
"""

import contextlib
import math
import os
import shutil
import tempfile

import keras

from keras_sequencer import __version__, optional, pretrained, runtime
from keras_sequencer.layers import PACKAGE
from keras_sequencer.models import Sequencer2D
from keras_sequencer.preprocessing import DEFAULT_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD
from keras_sequencer.registry import create_model
from keras_sequencer.variants import ARCH_DEFAULTS, get_variant, list_models

keras_hub = optional.require("keras_hub", "keras_sequencer.hub")

# "<model name>_imagenet": the named presets, one per variant with published weights.
PRESET_SUFFIX = "_imagenet"
PRESET_SUBDIR = "presets"
# (x * scale + offset) == (x / 255 - mean) / std: ImageNet normalisation of 0-255 pixels.
IMAGENET_SCALE = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)
IMAGENET_OFFSET = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
# The keyword arguments of Sequencer2D that define an architecture (a backbone's config).
ARCH_ARGUMENTS = ("layers", "patch_sizes", "embed_dims", "hidden_sizes", *ARCH_DEFAULTS["sequencer2d"])
MODEL_CARD = "README.md"

__all__ = [
    "Sequencer2DBackbone",
    "Sequencer2DImageClassifier",
    "Sequencer2DImageClassifierPreprocessor",
    "Sequencer2DImageConverter",
    "imagenet_classifier",
    "list_presets",
    "preset_path",
    "save_imagenet_preset",
]


def list_presets():
    """The named presets: ``<name>_imagenet`` for each name with published weights."""
    return [f"{name}{PRESET_SUFFIX}" for name in list_models(pretrained=True)]


def preset_variant(preset):
    """The model name behind the named preset ``preset``, or ``None`` when
    ``preset`` is anything else (a folder, a ``hf://`` or ``kaggle://`` handle,
    one of KerasHub's own presets)."""
    if not isinstance(preset, str) or not preset.endswith(PRESET_SUFFIX) or "/" in preset or os.path.exists(preset):
        return None
    name = preset[: -len(PRESET_SUFFIX)]
    try:
        variant = get_variant(name)
    except ValueError:
        return None
    return name if variant.pretrained else None


def check_preset(preset):
    """The model name of the named preset ``preset``; a one-line ``ValueError``
    listing the names otherwise."""
    name = preset_variant(preset)
    if name is None:
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(list_presets())}.")
    return name


@contextlib.contextmanager
def dtype_policy(dtype):
    """Builds layers under ``dtype`` (a policy or its name; ``None``: the global one)."""
    if dtype is None:
        yield
        return
    if isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
        dtype = dtype.default_policy
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class NamedPresets:
    """``from_preset`` that also takes the named presets (:func:`list_presets`):
    the name is turned into its cached preset folder (:func:`preset_path`)."""

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        if preset_variant(preset) is not None:
            preset = preset_path(preset)
        return super().from_preset(preset, *args, **kwargs)


def inference_compilation(existing_function, force):
    """The package's JAX inference compile options while Keras builds a
    predict / test function (:func:`keras_sequencer.runtime.jax_inference_compilation`)."""
    if existing_function is None or force:
        return runtime.jax_inference_compilation()
    return contextlib.nullcontext()


class InferenceCompilation:
    """``predict`` and ``evaluate`` compiled as the package's models compile them:
    on JAX's CPU backend with :data:`keras_sequencer.runtime.JAX_INFERENCE_COMPILER_OPTIONS`
    (as :class:`keras_sequencer.SequencerModel`), so the numbers are the package's."""

    def make_predict_function(self, force=False):
        with inference_compilation(self.predict_function, force):
            return super().make_predict_function(force=force)

    def make_test_function(self, force=False):
        with inference_compilation(self.test_function, force):
            return super().make_test_function(force=force)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sequencer2DBackbone(NamedPresets, InferenceCompilation, keras_hub.models.Backbone):
    """A Sequencer2D network without its head, as a KerasHub ``Backbone``.

    Built by :func:`keras_sequencer.Sequencer2D` with ``include_top=False``, so
    its layers, weights, fast paths (``implementation="auto"``) and numbers are
    the package's. Input: images ``image_shape`` (normalised as
    :func:`keras_sequencer.preprocess_input` does); output: the 4-D feature map
    after the final norm, before pooling, ``(batch, height / stride, width / stride,
    channels)`` (channels first under ``image_data_format() == "channels_first"``).

    Args:
        layers, patch_sizes, embed_dims, hidden_sizes, mlp_ratios, bidirectional,
            union, with_fc, rnn_type, stem_norm, position_embedding, token_mixer:
            the architecture, as :func:`keras_sequencer.Sequencer2D` takes it
            (any registered variant: ``Sequencer2DBackbone.from_model_name(name)``).
        image_shape: ``(height, width, 3)``; ``(None, None, 3)`` (default) takes any size.
        drop_path_rate, implementation: as :func:`keras_sequencer.Sequencer2D`.
        dtype: the dtype policy of the layers.
    """

    def __init__(
        self,
        layers,
        patch_sizes,
        embed_dims,
        hidden_sizes,
        image_shape=None,
        drop_path_rate=0.0,
        implementation="auto",
        dtype=None,
        **kwargs,
    ):
        # The optional architecture arguments, with Sequencer2D's defaults, from the one table.
        options = {key: kwargs.pop(key, default) for key, default in ARCH_DEFAULTS["sequencer2d"].items()}
        arch = dict(layers=layers, patch_sizes=patch_sizes, embed_dims=embed_dims, hidden_sizes=hidden_sizes, **options)
        name = kwargs.setdefault("name", "sequencer2d_backbone")
        with dtype_policy(dtype):
            network = Sequencer2D(
                **arch,
                include_top=False,
                input_shape=image_shape,
                drop_path_rate=drop_path_rate,
                implementation=implementation,
                name=name,
            )
        super().__init__(inputs=network.input, outputs=network.output, dtype=dtype, **kwargs)
        # Plain values (lists, not the tuples Keras would track) for get_config.
        self.architecture = {key: list(v) if isinstance(v, (list, tuple)) else v for key, v in arch.items()}
        self.image_shape = None if image_shape is None else list(image_shape)
        self.drop_path_rate = drop_path_rate
        self.implementation = implementation
        self.data_format = keras.config.image_data_format()

    @classmethod
    def from_model_name(cls, name, **kwargs):
        """The backbone of the registered model ``name`` (``keras_sequencer.list_models()``),
        random weights; ``kwargs``: ``image_shape``, ``drop_path_rate``, ``implementation``,
        ``dtype``, ``name``."""
        variant = get_variant(name)
        if variant.fixed_input_size:
            kwargs.setdefault("image_shape", (variant.input_size, variant.input_size, 3))
        return cls(**variant.full_arch, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(dict(self.architecture))
        config.update(
            image_shape=self.image_shape,
            drop_path_rate=self.drop_path_rate,
            implementation=self.implementation,
        )
        return config


def crop_and_resize_sizes(image_size, crop_pct):
    """``(crop (h, w), resize (h, w))`` of timm's eval transform: resize to
    ``floor(size / crop_pct)``, then centre-crop ``size``."""
    if image_size is None:
        return None, None
    height, width = (int(image_size), int(image_size)) if isinstance(image_size, int) else map(int, image_size)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct}.")
    return (height, width), (math.floor(height / crop_pct), math.floor(width / crop_pct))


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sequencer2DImageConverter(NamedPresets, keras_hub.layers.ImageConverter):
    """timm's evaluation transform as a KerasHub ``ImageConverter``: resize to
    ``floor(image_size / crop_pct)`` (the centre of the image, at the crop's
    aspect ratio: for a square crop, the shorter side), centre-crop
    ``image_size``, then ``x * scale + offset`` (by default ImageNet's
    ``(x / 255 - mean) / std``).

    Takes 0-255 RGB images, channels last (first under ``channels_first``),
    batched or not, any size. Resizing is bicubic with antialiasing, close to
    PIL's bicubic that :func:`keras_sequencer.load_image` uses (not equal: the
    two resize implementations differ in their last digits).

    Args:
        image_size: ``(height, width)`` of the output; ``None``: no resize or crop.
        crop_pct: the fraction of the resized image kept (timm's ``crop_pct``).
        scale, offset, interpolation, antialias: as KerasHub's ``ImageConverter``.
    """

    backbone_cls = Sequencer2DBackbone

    def __init__(
        self,
        image_size=(224, 224),
        crop_pct=DEFAULT_CROP_PCT,
        scale=IMAGENET_SCALE,
        offset=IMAGENET_OFFSET,
        interpolation="bicubic",
        antialias=True,
        **kwargs,
    ):
        kwargs.pop("crop_to_aspect_ratio", None)  # always True: the centre at the crop's aspect ratio
        crop, resize = crop_and_resize_sizes(image_size, crop_pct)
        super().__init__(
            image_size=resize,
            scale=None if scale is None else list(scale) if isinstance(scale, (list, tuple)) else scale,
            offset=None if offset is None else list(offset) if isinstance(offset, (list, tuple)) else offset,
            crop_to_aspect_ratio=True,
            interpolation=interpolation,
            antialias=antialias,
            **kwargs,
        )
        self.crop_pct = float(crop_pct)
        self.crop = None
        self.set_crop(crop)

    def set_crop(self, crop):
        self.crop = None
        if crop is not None:
            self.crop = keras.layers.CenterCrop(
                crop[0], crop[1], data_format=self.data_format, dtype=self.dtype_policy, name="center_crop"
            )

    @property
    def image_size(self):
        """The ``(height, width)`` of the output (the crop)."""
        if self.crop is None:
            return None
        return (self.crop.height, self.crop.width)

    @image_size.setter
    def image_size(self, value):
        crop, resize = crop_and_resize_sizes(value, self.crop_pct)
        self.resizing.height, self.resizing.width = resize or (None, None)
        self.set_crop(crop)

    def call(self, inputs):
        outputs = super().call(inputs)
        if self.crop is None:
            return outputs
        return self.crop(outputs)

    def get_config(self):
        config = super().get_config()
        config.update(crop_pct=self.crop_pct)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sequencer2DImageClassifierPreprocessor(NamedPresets, keras_hub.models.ImageClassifierPreprocessor):
    """KerasHub's ``ImageClassifierPreprocessor`` with :class:`Sequencer2DImageConverter`."""

    backbone_cls = Sequencer2DBackbone
    image_converter_cls = Sequencer2DImageConverter


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sequencer2DImageClassifier(NamedPresets, InferenceCompilation, keras_hub.models.ImageClassifier):
    """KerasHub's ``ImageClassifier`` on a :class:`Sequencer2DBackbone`: average
    pooling, then a ``Dense`` head (logits by default, as KerasHub's), the head of
    :func:`keras_sequencer.Sequencer2D`. ``from_preset("sequencer2d_s_imagenet")``
    gives the ImageNet classifier; with its preprocessor it takes raw 0-255 images.

    On JAX's CPU backend ``predict`` and ``evaluate`` compile with the package's
    inference options, as the package's models do (:mod:`keras_sequencer.runtime`)."""

    backbone_cls = Sequencer2DBackbone
    preprocessor_cls = Sequencer2DImageClassifierPreprocessor


def imagenet_classifier(name):
    """The :class:`Sequencer2DImageClassifier` of ``name`` (a model with published
    weights) with its ImageNet weights, head included (logits), and timm's
    evaluation transform for its input size as preprocessor."""
    variant = get_variant(name)
    reference = create_model(name, weights="imagenet", classifier_activation=None)
    backbone = Sequencer2DBackbone.from_model_name(name)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    converter = Sequencer2DImageConverter(image_size=(variant.input_size, variant.input_size))
    classifier = Sequencer2DImageClassifier(
        backbone=backbone,
        num_classes=reference.output_shape[-1],
        preprocessor=Sequencer2DImageClassifierPreprocessor(converter),
    )
    classifier.output_dense.set_weights(reference.get_layer("head").get_weights())
    return classifier


def model_card(name):
    """The preset's ``README.md``: what it is, where its weights come from, their license, how to load it."""
    weights = get_variant(name).weights
    preset = f"{name}{PRESET_SUFFIX}"
    accuracy = ""
    if weights.top1 is not None:
        accuracy = (
            f" ImageNet-1k validation accuracy: top-1 {weights.top1} %, top-5 {weights.top5} % (224 px, crop 0.875)."
        )
    sha = f", SHA-256 `{weights.sha256}`" if weights.sha256 else ""
    return f"""---
library_name: keras-hub
license: apache-2.0
pipeline_tag: image-classification
tags:
- keras-sequencer
- sequencer
- image-classification
---
# {preset}

`{name}`: Sequencer2D (Tatsunami & Taki, "Sequencer: Deep LSTM for Image Classification",
NeurIPS 2022) as a KerasHub `ImageClassifier` preset, written by keras-sequencer {__version__}
for Keras 3 on JAX, TensorFlow and PyTorch.

## Weights

The paper authors' ImageNet-1k weights as published for timm:
https://huggingface.co/{weights.repo} at commit `{weights.commit}` (`model.safetensors`{sha}),
converted to Keras by keras-sequencer; the authors' original release is
{weights.original_url}.{accuracy}

License: Apache-2.0, the license of the weights (timm's model card for {weights.repo} and the
authors' repository okojoalg/sequencer).

## Use

```python
# pip install "keras-sequencer[hub,jax]"
import keras_hub
import keras_sequencer.hub  # registers the Sequencer2D classes with Keras

classifier = keras_hub.models.ImageClassifier.from_preset("PRESET")  # this folder or its hf:// / kaggle:// handle
logits = classifier.predict(images)  # raw 0-255 RGB images, any size
```

The preprocessor is timm's evaluation transform (bicubic resize to size / 0.875, centre crop,
ImageNet mean/std). `num_classes=N` replaces the head for fine-tuning.
"""


def write_preset(classifier, directory, name):
    """``classifier.save_to_preset(directory)`` plus the model card of ``name``."""
    classifier.save_to_preset(directory)
    with open(os.path.join(directory, MODEL_CARD), "w", encoding="utf-8") as f:
        f.write(model_card(name))


def save_imagenet_preset(preset, directory):
    """Writes the named preset ``preset`` (e.g. ``"sequencer2d_s_imagenet"``) to
    the folder ``directory`` (created; it must be empty or missing), model card
    included: ready for ``keras_hub.upload_preset``. Returns ``directory``."""
    name = check_preset(preset)
    if os.path.isdir(directory) and os.listdir(directory):
        raise ValueError(f"{directory} is not empty; give a new or empty folder.")
    write_preset(imagenet_classifier(name), directory, name)
    return directory


def preset_path(preset):
    """The cached folder of the named preset ``preset``, written on first use
    from the ImageNet weights (downloaded, or read from the weights cache).

    Safe to call from several processes: each writes a private folder and
    renames it into place; the first to finish wins, the others reuse it."""
    name = check_preset(preset)
    commit = get_variant(name).weights.commit
    parent = os.path.join(pretrained.cache_dir(), PRESET_SUBDIR)
    target = os.path.join(parent, f"{preset}-{commit[:8]}")
    if os.path.exists(os.path.join(target, MODEL_CARD)):  # written last
        return target
    classifier = imagenet_classifier(name)
    try:
        os.makedirs(parent, exist_ok=True)
        temp = tempfile.mkdtemp(prefix=f".{preset}-", dir=parent)
    except OSError as error:
        raise pretrained.cache_write_error(error) from error
    try:
        write_preset(classifier, temp, name)
        try:
            os.rename(temp, target)  # atomic: a folder at target is always complete
        except OSError:
            if not os.path.exists(os.path.join(target, MODEL_CARD)):  # not another process's
                raise
    except OSError as error:
        raise pretrained.cache_write_error(error) from error
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target
