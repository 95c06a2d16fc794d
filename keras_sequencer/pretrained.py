"""The published ImageNet-1k weights behind ``weights="imagenet"``.

Each variant's timm checkpoint (``model.safetensors`` on the Hugging Face Hub,
pinned to the commit it was published at) is downloaded with
``keras.utils.get_file``, checked against its SHA-256 where one is published,
converted with :func:`keras_sequencer.conversion.convert_checkpoint` and cached
as a Keras ``.weights.h5`` under ``$KERAS_HOME/models/keras_sequencer/``
(``~/.keras`` by default). Later loads read the cached file: no network, no
conversion. The raw checkpoint is deleted once converted.

Offline: put the checkpoint at :func:`checkpoint_cache_path` (it is then
checked, converted and cached as if downloaded) or pass its path as
``weights=``. ``KERAS_SEQUENCER_WEIGHTS_BASE_URL`` replaces
``https://huggingface.co`` (a mirror with the Hub's URL layout).
"""

import os

BASE_URL_ENV = "KERAS_SEQUENCER_WEIGHTS_BASE_URL"
DEFAULT_BASE_URL = "https://huggingface.co"
CACHE_SUBDIR = os.path.join("models", "keras_sequencer")

# variant -> where its ImageNet-1k weights are published. ``sha256`` is the
# Hub's published hash of model.safetensors (None: not published, not checked).
# ``original_url``: the authors' release (okojoalg/sequencer), a .pth that
# ``weights=`` / ``keras-sequencer convert`` also read when torch is installed.
# ``top1``/``top5``: timm's results-imagenet.csv at 224 px, crop 0.875.
PRETRAINED = {
    "sequencer2d_s": dict(
        repo="timm/sequencer2d_s.in1k",
        commit="dfd8e6955f97c4fe7b18ed439dcac56f33f6acac",
        sha256="ef70ff18ff4f615c53009fde2ffe2f00e47376858d6da329fca2017baaffa946",
        original_url="https://github.com/okojoalg/sequencer/releases/download/weights/sequencer2d_s.pth",
        top1=82.34,
        top5=96.03,
    ),
    "sequencer2d_m": dict(
        repo="timm/sequencer2d_m.in1k",
        commit="391329ebe646393e88be9499eaa7b79af1c92f11",
        sha256=None,
        original_url="https://github.com/okojoalg/sequencer/releases/download/weights/sequencer2d_m.pth",
        top1=82.84,
        top5=96.28,
    ),
    "sequencer2d_l": dict(
        repo="timm/sequencer2d_l.in1k",
        commit="f0f041c30b6ae2c2d991b45e107f3a4a22839b15",
        sha256="4104172887d330aec2e0ab09705e09962fa2a77a475a7792e36e0d6065f231a2",
        original_url="https://github.com/okojoalg/sequencer/releases/download/weights/sequencer2d_l.pth",
        top1=83.41,
        top5=96.50,
    ),
}

# Builder arguments that every published variant leaves at these values.
_FIXED_ARCH = dict(bidirectional=True, union="cat", with_fc=True, rnn_type="lstm")


def checkpoint_url(variant):
    """URL of ``variant``'s ``model.safetensors`` at its pinned commit."""
    info = PRETRAINED[variant]
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{info['repo']}/resolve/{info['commit']}/model.safetensors"


def _keras_home():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.expanduser(home)


def cache_dir():
    """``$KERAS_HOME/models/keras_sequencer`` (``~/.keras/...`` without KERAS_HOME)."""
    return os.path.join(_keras_home(), CACHE_SUBDIR)


def _file_stem(variant):
    return f"{variant}.in1k-{PRETRAINED[variant]['commit'][:8]}"


def weights_cache_path(variant):
    """Where the converted Keras weights of ``variant`` are cached."""
    return os.path.join(cache_dir(), _file_stem(variant) + ".weights.h5")


def checkpoint_cache_path(variant):
    """Where a pre-seeded (offline) ``model.safetensors`` of ``variant`` is picked up."""
    return os.path.join(cache_dir(), _file_stem(variant) + ".safetensors")


def _normalize(arch):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}


def variant_for_arch(arch):
    """Name of the published variant whose architecture is ``arch`` (builder kwargs)."""
    from keras_sequencer.models import MODEL_CONFIGS

    arch = _normalize(arch)
    for variant in PRETRAINED:
        if _normalize({**_FIXED_ARCH, **MODEL_CONFIGS[variant]}) == arch:
            return variant
    raise ValueError(
        "weights='imagenet' exists only for the published architectures "
        f"({', '.join(PRETRAINED)}: Sequencer2DS/M/L); this model's architecture "
        f"{arch} is none of them. Use weights=None or a path to a checkpoint."
    )


def _remove(*paths):
    for path in paths:
        if path and os.path.exists(path):
            os.remove(path)


def _offline_help(variant):
    return (
        f"To load it without network, fetch {checkpoint_url(variant)} on another machine and "
        f"either put it at {checkpoint_cache_path(variant)} (then weights='imagenet' checks, "
        "converts and caches it) or pass its local path as weights='/path/to/model.safetensors'. "
        f"The authors' original {PRETRAINED[variant]['original_url']} works too "
        "as weights='/path/to/file.pth' when torch is installed."
    )


def imagenet_weights_path(arch):
    """Path of the cached Keras ImageNet weights for ``arch``, fetched and converted on first use.

    Raises:
        ValueError: ``arch`` is not a published variant; the download is
            truncated, fails its SHA-256 check or is not a valid checkpoint of
            that variant (nothing is left in the cache).
        OSError: the checkpoint cannot be fetched (no network); the message
            says which file to fetch and where to put it.
    """
    import keras

    from keras_sequencer.conversion import convert_checkpoint

    variant = variant_for_arch(arch)
    target = weights_cache_path(variant)
    if os.path.exists(target):
        return target
    url = checkpoint_url(variant)
    sha256 = PRETRAINED[variant]["sha256"]
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
        convert_checkpoint(raw, partial, model_name=variant)
        os.replace(partial, target)
    except Exception as error:
        _remove(partial, raw)
        raise ValueError(
            f"The checkpoint fetched from {url} could not be converted ({error}); it was "
            f"deleted (a truncated download?). Try again. {_offline_help(variant)}"
        ) from error
    _remove(raw)
    return target
