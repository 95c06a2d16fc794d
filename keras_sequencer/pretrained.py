"""The published ImageNet-1k weights behind ``weights="imagenet"``.

Each published variant's timm checkpoint (``model.safetensors`` on the Hugging
Face Hub, pinned to the commit it was published at; see
:class:`keras_sequencer.variants.PublishedWeights`) is downloaded once,
checked against its SHA-256 where one is published, converted to a Keras
``.weights.h5`` and cached under ``$KERAS_HOME/models/keras_sequencer/``
(``~/.keras`` by default). Later loads read the cached file: no network, no
conversion, nothing written (a read-only cache that holds the file works).
This module fetches, checks and publishes files and builds no model: the
conversion is done by its caller, :mod:`keras_sequencer.weights`, inside
:func:`filling_cache`.

Several processes may ask for the same weights at once (data-parallel
workers, parallel test runs): one of them downloads and converts while
holding a lock file next to the cache (an OS lock, released when its holder
exits or is killed); the others wait for it, then read what it published.
Every file is written under a private temporary name and renamed into place
once complete, so no process reads a partial file, and the temporary files a
killed process leaves behind are removed by the next call.

Offline: put the checkpoint at :func:`checkpoint_cache_path` (it is then
checked, converted and cached as if downloaded) or pass its path as
``weights=``. ``KERAS_SEQUENCER_WEIGHTS_BASE_URL`` replaces
``https://huggingface.co`` (a mirror with the Hub's URL layout).
"""

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import secrets
import sys
import time
import urllib.error
import urllib.request

# variant_for_arch and PRETRAINED are also importable from here.
from keras_sequencer.variants import PRETRAINED, get_variant, variant_for_arch  # noqa: F401

# The OS file lock: flock on POSIX, msvcrt.locking on Windows. Python builds with
# neither (Emscripten, WASI) cannot start a second process, so there is no one to wait for.
try:
    import fcntl
except ImportError:
    fcntl = None
try:
    import msvcrt
except ImportError:
    msvcrt = None

BASE_URL_ENV = "KERAS_SEQUENCER_WEIGHTS_BASE_URL"
DEFAULT_BASE_URL = "https://huggingface.co"
CACHE_SUBDIR = os.path.join("models", "keras_sequencer")
# Seconds a connection may wait for the server (to connect, or for each chunk)
# before the download is given up.
DOWNLOAD_TIMEOUT = 60
_CHUNK_BYTES = 1 << 20
# Infix of the private temporary names (``<stem>.<pid>-<random>.partial.<suffix>``).
_PARTIAL = ".partial."

logger = logging.getLogger(__name__)


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


def lock_path(variant):
    """The lock file held while ``variant``'s weights are fetched and converted."""
    return os.path.join(cache_dir(), _file_stem(variant) + ".lock")


def _temp_path(variant, suffix):
    """A private name in the cache for a file being written (``suffix``: its type)."""
    name = f"{_file_stem(variant)}.{os.getpid()}-{secrets.token_hex(4)}{_PARTIAL}{suffix}"
    return os.path.join(cache_dir(), name)


def _remove(*paths):
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _remove_leftovers(variant):
    """Removes the temporary files of ``variant`` left by a killed process (run
    under the lock: no live process is writing them)."""
    stem = _file_stem(variant) + "."
    for name in os.listdir(cache_dir()):
        if name.startswith(stem) and _PARTIAL in name:
            _remove(os.path.join(cache_dir(), name))


def cache_write_error(error):
    """The one-line ``OSError`` for a cache that cannot be written (read-only,
    full, or not a folder), naming the cache and ``KERAS_HOME``."""
    reason = getattr(error, "strerror", None) or str(error)
    return OSError(
        f"Cannot write the weights cache {cache_dir()} ({reason}); "
        "set KERAS_HOME to a writable folder (weights='imagenet' caches under "
        "$KERAS_HOME/models/keras_sequencer)."
    )


@contextlib.contextmanager
def _cache_writes():
    """Turns an ``OSError`` of the file operations inside into :func:`cache_write_error`."""
    try:
        yield
    except OSError as error:
        raise cache_write_error(error) from error


def _lock_fd(fd):
    """Blocks until this process holds an exclusive lock on the open file ``fd``."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    if msvcrt is None:
        return
    while True:  # msvcrt: a lock on the file's first byte; LK_LOCK gives up after 10 tries
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return
        except OSError:
            time.sleep(0.1)


def _unlock_fd(fd):
    if fcntl is None and msvcrt is not None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def _os_lock(path):
    """Holds an exclusive OS lock on the file ``path`` (created if missing).

    The OS releases it when the holder exits or is killed, so a lock file left
    behind never blocks anyone. The holder removes the file before releasing
    it; a waiter that then gets the lock of the removed file sees that the
    path no longer names it and locks the file now at the path instead.
    """
    while True:
        with _cache_writes():
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_fd(fd)
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.remove(path)
        except OSError:  # Windows cannot remove a file others have open
            pass
        _unlock_fd(fd)
        os.close(fd)


class DownloadError(OSError):
    """The checkpoint could not be fetched (no network, refused, timed out, cut short)."""


def megabytes(size):
    return f"{size / 1e6:.1f} MB"


class DownloadProgress:
    """What a download shows on stderr: a line naming the file and its size, then,
    on a terminal, a progress bar updated in place (about 5 times a second), and
    the size received at the end (as ``keras.utils.get_file`` shows one)."""

    WIDTH = 30

    def __init__(self, url, total, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = 0.0
        size = f" ({megabytes(total)})" if total else ""
        print(f"keras-sequencer: downloading {url}{size}", file=self.stream, flush=True)

    def update(self, received):
        now = time.monotonic()
        if not self.interactive or now - self.shown < 0.2:
            return
        self.shown = now
        if self.total:
            done = min(received / self.total, 1.0)
            bar = "=" * int(done * self.WIDTH)
            text = f"[{bar:<{self.WIDTH}}] {megabytes(received)} / {megabytes(self.total)} {done:4.0%}"
        else:
            text = megabytes(received)
        print(f"\r{text}", end="", file=self.stream, flush=True)

    def close(self, received):
        end = "\n" if self.interactive and self.shown else ""
        print(f"{end}keras-sequencer: downloaded {megabytes(received)}", file=self.stream, flush=True)


def _fetch(url, destination):
    """Streams ``url`` into the new file ``destination``; returns its SHA-256.

    Raises:
        DownloadError: the server cannot be reached, answers an error, or
            sends fewer bytes than its ``Content-Length``.
        OSError: ``destination`` cannot be written (:func:`cache_write_error`).
    """
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)
    except urllib.error.HTTPError as error:
        raise DownloadError(str(error)) from error
    except urllib.error.URLError as error:
        raise DownloadError(str(error.reason)) from error
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(str(error) or type(error).__name__) from error
    digest, received = hashlib.sha256(), 0
    with response:
        expected = response.headers.get("Content-Length")
        progress = DownloadProgress(url, int(expected) if expected and expected.isdigit() else None)
        with _cache_writes():
            out = open(destination, "xb")
        with out:
            while True:
                try:
                    chunk = response.read1(_CHUNK_BYTES)  # what has arrived, up to a chunk
                except (OSError, http.client.HTTPException) as error:
                    raise DownloadError(str(error) or type(error).__name__) from error
                if not chunk:
                    break
                digest.update(chunk)
                received += len(chunk)
                progress.update(received)
                with _cache_writes():
                    out.write(chunk)
            with _cache_writes():
                out.flush()
                os.fsync(out.fileno())
    progress.close(received)
    if expected is not None and received < int(expected):
        raise DownloadError(f"retrieval incomplete: got only {received} out of {expected} bytes")
    return digest.hexdigest()


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_help(variant):
    return (
        f"Without network: fetch {checkpoint_url(variant)} elsewhere and put it at "
        f"{checkpoint_cache_path(variant)} (weights='imagenet' then checks, converts and caches "
        "it), or load it from any path with weights=PATH in Python or --weights PATH on the "
        f"command line (the authors' {published_weights(variant).original_url} works too "
        "when torch is installed)."
    )


def _download_checkpoint(variant, checkpoint):
    """Downloads ``variant``'s checkpoint to a private name, checks its SHA-256
    and renames it to ``checkpoint``."""
    url = checkpoint_url(variant)
    sha256 = published_weights(variant).sha256
    temp = _temp_path(variant, "safetensors")
    logger.info("Downloading %s to %s", url, checkpoint)
    try:
        digest = _fetch(url, temp)
        if sha256 is not None and digest != sha256:
            raise ValueError(
                f"The checkpoint downloaded from {url} has SHA-256 {digest}, not the published "
                f"{sha256} (truncated or altered); it was deleted. Try again. " + _offline_help(variant)
            )
        with _cache_writes():
            os.replace(temp, checkpoint)
    except DownloadError as error:
        raise DownloadError(
            f"Could not download the {variant} ImageNet weights from {url} ({error}). " + _offline_help(variant)
        ) from error
    finally:
        _remove(temp)


def _check_seeded(variant, checkpoint):
    sha256 = published_weights(variant).sha256
    if sha256 is not None and _file_sha256(checkpoint) != sha256:
        raise ValueError(
            f"{checkpoint} does not have the published SHA-256 {sha256} (a truncated or "
            f"altered copy?); replace it with {checkpoint_url(variant)} or delete it to "
            "download again."
        )


@dataclasses.dataclass(frozen=True)
class CacheFill:
    """What :func:`filling_cache` hands its caller to convert.

    Attributes:
        checkpoint: the downloaded (or pre-seeded) ``model.safetensors``,
            SHA-256-checked where a hash is published.
        output: the private temporary path to write the converted full-model
            ``.weights.h5`` to; renamed to :func:`weights_cache_path` when the
            ``with`` block ends without an exception.
    """

    checkpoint: str
    output: str


@contextlib.contextmanager
def filling_cache(variant):
    """Fills the cache of ``variant``'s converted ImageNet weights, once per host.

    Yields ``None`` when :func:`weights_cache_path` already holds them
    (possibly published by another process while this one waited for the
    lock; read it); otherwise a :class:`CacheFill` whose ``checkpoint`` the
    ``with`` block converts into ``output``. This module only fetches, checks
    and publishes files: the caller does the conversion, so it builds no model.

    Safe to use from several processes at once: one downloads and converts
    under the lock, the others wait and then get ``None``.

    Raises:
        ValueError: ``variant`` has no published weights; the download fails
            its SHA-256 check, or the ``with`` block fails to convert it (not a
            valid checkpoint of that variant; nothing is left in the cache); a
            pre-seeded checkpoint fails its SHA-256 check.
        OSError: the checkpoint cannot be fetched (no network; the message
            says which file to fetch and where to put it), or the cache cannot
            be written (the message names it and ``KERAS_HOME``).
    """
    target = weights_cache_path(variant)
    if os.path.exists(target):
        yield None
        return
    with _cache_writes():
        os.makedirs(cache_dir(), exist_ok=True)
    with _os_lock(lock_path(variant)):
        if os.path.exists(target):  # published while this process waited
            yield None
            return
        _remove_leftovers(variant)
        checkpoint = checkpoint_cache_path(variant)
        downloaded = not os.path.exists(checkpoint)
        if downloaded:
            _download_checkpoint(variant, checkpoint)
        else:
            _check_seeded(variant, checkpoint)
        temp = _temp_path(variant, "weights.h5")
        print(f"keras-sequencer: converting {checkpoint} to Keras weights {target}", file=sys.stderr, flush=True)
        try:
            yield CacheFill(checkpoint, temp)
            os.replace(temp, target)
        except OSError as error:  # writing the .weights.h5: the checkpoint itself was read
            if downloaded:
                _remove(checkpoint)
            raise cache_write_error(error) from error
        except Exception as error:
            _remove(checkpoint)
            raise ValueError(
                f"The checkpoint {checkpoint_url(variant)} could not be converted ({error}); "
                f"it was deleted (a truncated download?). Try again. {_offline_help(variant)}"
            ) from error
        finally:
            _remove(temp)
        _remove(checkpoint)
