"""Backend settings applied at import (keras_sequencer/runtime.py)."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_sequencer import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "environ, backend, expected",
    [
        ({}, "tensorflow", runtime.YNN_OFF_FLAG),
        ({"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, "tensorflow", "--xla_dump_to=/tmp/d " + runtime.YNN_OFF_FLAG),
        # the user's own choice of the flag wins
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, "tensorflow", None),
        ({runtime.OPT_OUT_ENV: "0"}, "tensorflow", None),
        ({runtime.OPT_OUT_ENV: "off"}, "tensorflow", None),
        ({runtime.OPT_OUT_ENV: "1"}, "tensorflow", runtime.YNN_OFF_FLAG),
        # JAX: the flag slows training down (see runtime.py)
        ({}, "jax", None),
        ({}, "torch", None),
    ],
)
def test_xla_cpu_flags_to_add(environ, backend, expected):
    assert runtime.xla_cpu_flags_to_add(environ, backend) == expected


@pytest.mark.parametrize(
    "environ, backend, platform, expected",
    [
        ({}, "torch", "linux", runtime.MALLOC_SETTINGS),
        ({runtime.OPT_OUT_ENV: "0"}, "torch", "linux", {}),
        ({}, "torch", "darwin", {}),
        ({}, "jax", "linux", {}),
        ({}, "tensorflow", "linux", {}),
        # the user already chose an allocator or its settings
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "torch", "linux", {}),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}, "torch", "linux", {}),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "torch", "linux", {}),
    ],
)
def test_malloc_settings(environ, backend, platform, expected):
    assert runtime.malloc_settings(environ, backend, platform) == expected


def test_apply_mallopt_calls_mallopt_per_setting():
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 0 if param == 99 else 1

    assert runtime.apply_mallopt(runtime.MALLOC_SETTINGS, FakeLibc())
    assert sorted(calls) == sorted(runtime.MALLOC_SETTINGS.items())
    assert not runtime.apply_mallopt({99: 1}, FakeLibc())  # refused -> False
    assert not runtime.apply_mallopt({}, FakeLibc())
    assert not runtime.apply_mallopt(runtime.MALLOC_SETTINGS, object())  # no mallopt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_accepts_the_malloc_settings():
    assert runtime.apply_mallopt(runtime.MALLOC_SETTINGS)


_APPLIED_PROBE = """
import json, os
import keras_sequencer
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "applied": keras_sequencer.runtime.APPLIED}))
"""


def _probe(backend, **env):
    """Imports keras_sequencer in a fresh process; returns what it applied."""
    drop = ("XLA_FLAGS", runtime.OPT_OUT_ENV, "LD_PRELOAD", "GLIBC_TUNABLES", *runtime._ALLOCATOR_ENV)
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(env, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", _APPLIED_PROBE], env=environ, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a TensorFlow subprocess; run once, on tensorflow"
)
def test_import_sets_xla_flags_for_tensorflow_unless_opted_out():
    default = _probe("tensorflow")
    assert default["applied"] == {"xla_flags": True, "mallopt": False}
    assert runtime.YNN_OFF_FLAG in default["flags"]
    opted_out = _probe("tensorflow", **{runtime.OPT_OUT_ENV: "0"})
    assert opted_out["applied"]["xla_flags"] is False and runtime.YNN_OFF_FLAG not in opted_out["flags"]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a torch subprocess; run once, on torch")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_import_tunes_malloc_for_torch_unless_opted_out():
    assert _probe("torch")["applied"] == {"xla_flags": False, "mallopt": True}
    opted_out = _probe("torch", **{runtime.OPT_OUT_ENV: "0"})
    assert opted_out["applied"] == {"xla_flags": False, "mallopt": False}


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX subprocess; run once, on jax")
def test_import_changes_nothing_for_jax():
    probe = _probe("jax")
    assert probe == {"flags": "", "applied": {"xla_flags": False, "mallopt": False}}
