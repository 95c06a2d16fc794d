"""The weights='imagenet' cache under concurrent use and faults, with real processes.

The tiny published variant, checkpoint and 127.0.0.1 server of tests/conftest.py
(the fixtures of tests/test_pretrained.py) are reused; child processes register the same variant
in their own keras_sequencer.variants.VARIANTS and build
``Sequencer2D(weights="imagenet")`` with the parent's backend, KERAS_HOME and
KERAS_SEQUENCER_WEIGHTS_BASE_URL.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from keras_sequencer import pretrained
from tests.helpers import (
    COMMIT,
    REPO,
    TINY_ARCH,
    URL_PATH,
    VARIANT,
    assert_weights_equal,
    closed_port_url,
    requires_timm,
    run_in_one_backend_pass,
    tiny_imagenet_model,
    to_numpy,
)

pytestmark = requires_timm

# Seconds a child may take to start and finish; generous for a loaded machine,
# only there so that a hang fails instead of blocking the suite.
CHILD_TIMEOUT = 240

_PRELUDE = r"""
import hashlib, json, os, sys, time, types

spec = json.loads(sys.argv[1])
if spec["light"]:
    # keras_sequencer's cache modules without the package's __init__ (which imports
    # keras and its backend): the file locking and publishing run for real, the
    # conversion is a copy.
    package = types.ModuleType("keras_sequencer")
    package.__path__ = [os.path.join(os.getcwd(), "keras_sequencer")]
    sys.modules["keras_sequencer"] = package
from keras_sequencer import pretrained, variants

variants.VARIANTS[spec["variant"]] = variants.Variant(
    spec["variant"], "sequencer2d", spec["arch"], weights=variants.PublishedWeights(**spec["weights"])
)


def stall():
    # Say so, and wait to be killed.
    open(spec["stall_conversion"], "w").close()
    time.sleep(600)


if spec.get("barrier"):
    # Ready after the imports; start together when the parent says go.
    open(os.path.join(spec["barrier"], f"ready-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(spec["barrier"], "go")):
        time.sleep(0.01)
"""

LIGHT_CHILD = (
    _PRELUDE
    + r"""

def convert(checkpoint, output):
    with open(checkpoint, "rb") as src:
        data = src.read()
    with open(output, "wb") as dst:
        dst.write(data[: len(data) // 2])
        dst.flush()
        if spec.get("stall_conversion"):
            stall()
        time.sleep(0.2)  # a slow conversion: a reader of a partial file would see half
        dst.write(data[len(data) // 2 :])


with pretrained.filling_cache(spec["variant"]) as fill:
    if fill is not None:
        convert(fill.checkpoint, fill.output)
with open(pretrained.weights_cache_path(spec["variant"]), "rb") as f:
    print("weights-sha256", hashlib.sha256(f.read()).hexdigest())
"""
)

MODEL_CHILD = (
    _PRELUDE
    + r"""
from keras_sequencer import Sequencer2D, weights

if spec.get("stall_conversion"):
    convert = weights.save_converted

    def stalled(model, state_dict, output):
        # Half of the converted file on disk.
        convert(model, state_dict, output)
        with open(output, "r+b") as f:
            f.truncate(os.path.getsize(output) // 2)
        stall()

    weights.save_converted = stalled
model = Sequencer2D(**spec["arch"], weights="imagenet", classifier_activation=None)
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
print("weights-sha256", digest)
"""
)


def _spec(sha256, light=True, **extra):
    return dict(
        light=light,
        variant=VARIANT,
        arch={k: list(v) for k, v in TINY_ARCH.items()},
        weights=dict(
            repo=f"test/{VARIANT}.in1k",
            commit=COMMIT,
            sha256=sha256,
            original_url="https://example.invalid/tiny.pth",
        ),
        **extra,
    )


@pytest.fixture
def children():
    """Starts child processes (``start(spec)``); kills any still running at the end."""
    started = []

    def start(spec):
        process = subprocess.Popen(
            [sys.executable, "-c", LIGHT_CHILD if spec["light"] else MODEL_CHILD, json.dumps(spec)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _digest(process):
    out, err = process.communicate(timeout=CHILD_TIMEOUT)
    assert process.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("weights-sha256")]
    assert out.splitlines() == lines, out  # nothing else on stdout (no download messages)
    return lines[0].split()[1]


def _wait_for(condition, what, process=None, timeout=CHILD_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the child exited ({process.returncode}) before {what}: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _temp_files(cache):
    return [name for name in os.listdir(cache) if ".partial." in name]


def _only_weights(cache):
    return os.listdir(cache) == [os.path.basename(pretrained.weights_cache_path(VARIANT))]


def _start_together(children, specs, barrier):
    barrier.mkdir()
    processes = [children(spec) for spec in specs]
    _wait_for(lambda: len(os.listdir(barrier)) == len(specs), "all children are ready")
    (barrier / "go").touch()
    return processes


def test_four_processes_at_once_download_once(checkpoint, server, register, children, tmp_path):
    body, _ = checkpoint
    sha256 = hashlib.sha256(body).hexdigest()
    server.files[URL_PATH] = (body, len(body))
    server.delay = 0.5  # the first process holds the lock while the others arrive
    cache = register(sha256, server.base_url)

    spec = _spec(sha256, barrier=str(tmp_path / "barrier"))
    processes = _start_together(children, [spec] * 4, tmp_path / "barrier")
    digests = [_digest(process) for process in processes]

    assert digests == [sha256] * 4  # every process read the complete file
    assert server.requests == [URL_PATH]  # downloaded once
    assert _only_weights(cache)  # no lock, temporary or raw checkpoint file left


@pytest.mark.slow  # four processes importing the backend and building a model
def test_four_models_at_once_download_once(checkpoint, server, register, reference_weights, children, tmp_path):
    run_in_one_backend_pass("four processes share one download")  # file locking, not the backend
    body, _ = checkpoint
    sha256 = hashlib.sha256(body).hexdigest()
    server.files[URL_PATH] = (body, len(body))
    server.delay = 1.0
    cache = register(sha256, server.base_url)

    spec = _spec(sha256, light=False, barrier=str(tmp_path / "barrier"))
    processes = _start_together(children, [spec] * 4, tmp_path / "barrier")
    digests = [_digest(process) for process in processes]

    assert len(set(digests)) == 1  # the same weights in every process
    assert server.requests == [URL_PATH]
    assert _only_weights(cache)
    model = tiny_imagenet_model()  # what the processes loaded is the checkpoint
    assert_weights_equal(model, reference_weights)
    weights = b"".join(to_numpy(w).tobytes() for w in model.get_weights())
    assert hashlib.sha256(weights).hexdigest() == digests[0]


def test_process_killed_mid_download_then_next_call_succeeds(checkpoint, server, register, reference_weights, children):
    body, _ = checkpoint
    sha256 = hashlib.sha256(body).hexdigest()
    server.files[URL_PATH] = (body, len(body))
    stalled = server.stalls[URL_PATH] = threading.Event()
    cache = register(sha256, server.base_url)

    process = children(_spec(sha256))
    _wait_for(stalled.is_set, "the server sent half the checkpoint", process)
    _wait_for(
        lambda: any(os.path.getsize(os.path.join(cache, name)) > 0 for name in _temp_files(cache)),
        "half the checkpoint is on disk",
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=CHILD_TIMEOUT)
    assert len(_temp_files(cache)) == 1  # the partial download of the killed process
    assert not os.path.exists(pretrained.checkpoint_cache_path(VARIANT))
    assert not os.path.exists(pretrained.weights_cache_path(VARIANT))

    del server.stalls[URL_PATH]
    assert_weights_equal(tiny_imagenet_model(), reference_weights)  # this process converts for real
    assert server.requests == [URL_PATH, URL_PATH]
    assert _only_weights(cache)


@pytest.mark.parametrize("light", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["copy", "model"])
def test_process_killed_mid_conversion_then_next_call_succeeds(
    checkpoint, server, register, reference_weights, children, tmp_path, light
):
    body, _ = checkpoint
    sha256 = hashlib.sha256(body).hexdigest()
    server.files[URL_PATH] = (body, len(body))
    cache = register(sha256, server.base_url)
    marker = tmp_path / "converting"

    process = children(_spec(sha256, light=light, stall_conversion=str(marker)))
    _wait_for(marker.exists, "the child is converting", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=CHILD_TIMEOUT)
    assert [name.endswith(".weights.h5") for name in _temp_files(cache)] == [True]
    assert not os.path.exists(pretrained.weights_cache_path(VARIANT))
    # The verified download was published before converting: it is reused.
    assert os.path.exists(pretrained.checkpoint_cache_path(VARIANT))

    assert_weights_equal(tiny_imagenet_model(), reference_weights)
    assert server.requests == [URL_PATH]
    assert _only_weights(cache)


def test_lock_holder_killed_while_others_wait(checkpoint, server, register, children, tmp_path):
    body, _ = checkpoint
    sha256 = hashlib.sha256(body).hexdigest()
    server.files[URL_PATH] = (body, len(body))
    cache = register(sha256, server.base_url)
    marker = tmp_path / "converting"

    holder = children(_spec(sha256, stall_conversion=str(marker)))
    _wait_for(marker.exists, "the first child is converting", holder)
    waiters = _start_together(children, [_spec(sha256, barrier=str(tmp_path / "barrier"))] * 2, tmp_path / "barrier")
    time.sleep(0.5)
    assert [waiter.poll() for waiter in waiters] == [None, None]  # waiting for the lock
    holder.send_signal(signal.SIGKILL)
    assert [_digest(waiter) for waiter in waiters] == [sha256] * 2
    assert server.requests == [URL_PATH]  # the holder's verified download is reused
    assert _only_weights(cache)


# The cache cannot be written: one line naming the cache and KERAS_HOME.


def _assert_cache_error(error):
    message = str(error)
    assert "\n" not in message
    assert pretrained.cache_dir() in message
    assert "set KERAS_HOME to a writable folder" in message


def test_cache_under_a_file_names_the_cache_and_keras_home(register, monkeypatch, tmp_path):
    register(None, closed_port_url())
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a_file" / "keras_home"))
    with pytest.raises(OSError) as info:
        tiny_imagenet_model()
    _assert_cache_error(info.value)
    assert "Not a directory" in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_cache_names_the_cache_and_keras_home(register):
    cache = register(None, closed_port_url())
    os.makedirs(cache)
    os.chmod(cache, 0o500)
    try:
        with pytest.raises(OSError) as info:
            tiny_imagenet_model()
    finally:
        os.chmod(cache, 0o700)
    _assert_cache_error(info.value)


def _copy_convert(checkpoint_path, output_path):
    with open(checkpoint_path, "rb") as src, open(output_path, "wb") as dst:
        dst.write(src.read())


def _fill_cache(convert):
    """What weights='imagenet' does with the cache, with ``convert(checkpoint, output)``
    in place of the conversion; returns the cached file's path."""
    with pretrained.filling_cache(VARIANT) as fill:
        if fill is not None:
            convert(fill.checkpoint, fill.output)
    return pretrained.weights_cache_path(VARIANT)


def test_full_disk_while_converting_names_the_cache_and_leaves_nothing(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)

    def convert(checkpoint_path, output_path):
        with open(output_path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", output_path)

    with pytest.raises(OSError, match="No space left on device") as info:
        _fill_cache(convert)
    _assert_cache_error(info.value)
    assert os.listdir(cache) == []
    # With room again it works.
    path = _fill_cache(_copy_convert)
    assert open(path, "rb").read() == body


def test_full_disk_while_downloading_names_the_cache_and_leaves_nothing(checkpoint, server, register, monkeypatch):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)

    class Full:
        def __init__(self, path, mode):
            self.file = open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(pretrained, "open", Full, raising=False)
    with pytest.raises(OSError, match="No space left on device") as info:
        _fill_cache(_copy_convert)
    _assert_cache_error(info.value)
    assert os.listdir(cache) == []


def test_preseeded_checkpoint_with_wrong_hash_is_named_and_kept(checkpoint, register):
    body, _ = checkpoint
    cache = register(hashlib.sha256(body).hexdigest(), closed_port_url())
    os.makedirs(cache)
    seeded = pretrained.checkpoint_cache_path(VARIANT)
    with open(seeded, "wb") as f:
        f.write(body[:-10])
    with pytest.raises(ValueError, match="does not have the published SHA-256") as info:
        _fill_cache(_copy_convert)
    assert seeded in str(info.value)
    assert os.listdir(cache) == [os.path.basename(seeded)]


def test_leftover_temp_files_are_removed(checkpoint, server, register):
    body, _ = checkpoint
    server.files[URL_PATH] = (body, len(body))
    cache = register(hashlib.sha256(body).hexdigest(), server.base_url)
    os.makedirs(cache)
    stem = os.path.basename(pretrained.weights_cache_path(VARIANT))[: -len(".weights.h5")]
    leftovers = [f"{stem}.123-abcd.partial.safetensors", f"{stem}.partial.weights.h5", f"{stem}.lock"]
    other = "sequencer2d_s.in1k-00000000.999-beef.partial.safetensors"  # another variant's
    for name in leftovers + [other]:
        with open(os.path.join(cache, name), "wb") as f:
            f.write(b"partial")
    _fill_cache(_copy_convert)
    assert sorted(os.listdir(cache)) == sorted([stem + ".weights.h5", other])
