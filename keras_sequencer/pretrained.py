"""The published ImageNet-1k weights behind ``weights="imagenet"``.

Each published variant's timm checkpoint (``model.safetensors`` on the Hugging
Face Hub, pinned to the commit it was published at; see
:class:`keras_sequencer.variants.PublishedWeights`) is downloaded with
``keras.utils.get_file``, checked against its SHA-256 where one is published,
converted to a Keras ``.weights.h5`` and cached under
``$KERAS_HOME/models/keras_sequencer/`` (``~/.keras`` by default). Later loads
read the cached file: no network, no conversion. The raw checkpoint is deleted
once converted.

Offline: put the checkpoint at :func:`checkpoint_cache_path` (it is then
checked, converted and cached as if downloaded) or pass its path as
``weights=``. ``KERAS_SEQUENCER_WEIGHTS_BASE_URL`` replaces
``https://huggingface.co`` (a mirror with the Hub's URL layout).
"""

import dataclasses
import os

import keras

# variant_for_arch is also importable from here, its former home.
from keras_sequencer.variants import TableView, get_variant, variant_for_arch  # noqa: F401

BASE_URL_ENV = "KERAS_SEQUENCER_WEIGHTS_BASE_URL"
DEFAULT_BASE_URL = "https://huggingface.co"
CACHE_SUBDIR = os.path.join("models", "keras_sequencer")

# variant -> its PublishedWeights as a dict (repo, commit, sha256, original_url,
# top1, top5), for every variant with published weights: a read-only view of
# keras_sequencer.variants.VARIANTS.
PRETRAINED = TableView(
    "PRETRAINED", lambda v: dataclasses.asdict(v.weights) if v.pretrained else None
)


def published_weights(variant):
    """The :class:`~keras_sequencer.variants.PublishedWeights` of ``variant``.

    Raises:
        ValueError: ``variant`` is unknown or has no published weights.
    """
    weights = get_variant(variant).weights
    if weights is None:
        raise ValueError(f"{variant} has no published ImageNet weights.")
    return weights


def checkpoint_url(variant):
    """URL of ``variant``'s ``model.safetensors`` at its pinned commit."""
    info = published_weights(variant)
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{info.repo}/resolve/{info.commit}/model.safetensors"


def _keras_home():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.expanduser(home)


def cache_dir():
    """``$KERAS_HOME/models/keras_sequencer`` (``~/.keras/...`` without KERAS_HOME)."""
    return os.path.join(_keras_home(), CACHE_SUBDIR)


def _file_stem(variant):
    return f"{variant}.in1k-{published_weights(variant).commit[:8]}"


def weights_cache_path(variant):
    """Where the converted Keras weights of ``variant`` are cached."""
    return os.path.join(cache_dir(), _file_stem(variant) + ".weights.h5")


def checkpoint_cache_path(variant):
    """Where a pre-seeded (offline) ``model.safetensors`` of ``variant`` is picked up."""
    return os.path.join(cache_dir(), _file_stem(variant) + ".safetensors")


def _remove(*paths):
    for path in paths:
        if path and os.path.exists(path):
            os.remove(path)


def _offline_help(variant):
    return (
        f"To load it without network, fetch {checkpoint_url(variant)} on another machine and "
        f"either put it at {checkpoint_cache_path(variant)} (then weights='imagenet' checks, "
        "converts and caches it) or pass its local path as weights='/path/to/model.safetensors'. "
        f"The authors' original {published_weights(variant).original_url} works too "
        "as weights='/path/to/file.pth' when torch is installed."
    )


def imagenet_weights_path(variant, convert):
    """Path of the cached Keras ImageNet weights of ``variant``, fetched and converted on first use.

    Args:
        variant: a name with published weights (``list_models(pretrained=True)``).
        convert: ``convert(checkpoint_path, output_path)`` writes the full-model
            ``.weights.h5`` of ``variant`` converted from the downloaded
            checkpoint (``keras_sequencer.weights`` passes one that builds the
            model being loaded; this module builds no model).

    Raises:
        ValueError: ``variant`` has no published weights; the download is
            truncated, fails its SHA-256 check or is not a valid checkpoint of
            that variant (nothing is left in the cache).
        OSError: the checkpoint cannot be fetched (no network); the message
            says which file to fetch and where to put it.
    """
    target = weights_cache_path(variant)
    if os.path.exists(target):
        return target
    url = checkpoint_url(variant)
    sha256 = published_weights(variant).sha256
    raw = checkpoint_cache_path(variant)
    os.makedirs(cache_dir(), exist_ok=True)  # else get_file falls back to /tmp/.keras
    try:
        raw = keras.utils.get_file(
            fname=os.path.basename(raw),
            origin=url,
            file_hash=sha256,
            hash_algorithm="sha256",
            cache_dir=_keras_home(),
            cache_subdir=CACHE_SUBDIR,
        )
    except ValueError as error:  # hash mismatch: get_file leaves the file behind
        _remove(raw)
        raise ValueError(
            f"The checkpoint downloaded from {url} does not have the published SHA-256 "
            f"{sha256} (truncated or altered); it was deleted. Try again. {_offline_help(variant)}"
        ) from error
    except Exception as error:  # get_file turns URLError/HTTPError into Exception
        _remove(raw)
        raise OSError(
            f"Could not download the {variant} ImageNet weights from {url}: {error}. "
            + _offline_help(variant)
        ) from error
    partial = target[: -len(".weights.h5")] + ".partial.weights.h5"
    try:
        convert(raw, partial)
        os.replace(partial, target)
    except Exception as error:
        _remove(partial, raw)
        raise ValueError(
            f"The checkpoint fetched from {url} could not be converted ({error}); it was "
            f"deleted (a truncated download?). Try again. {_offline_help(variant)}"
        ) from error
    _remove(raw)
    return target
