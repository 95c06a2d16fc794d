"""Backend settings applied at import (keras_sequencer/runtime.py)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
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
        ({}, "jax", "cpu", runtime.JAX_INFERENCE_COMPILER_OPTIONS),
        ({"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, "jax", "cpu", runtime.JAX_INFERENCE_COMPILER_OPTIONS),
        # the user's own choice of the flag wins
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, "jax", "cpu", {}),
        ({runtime.OPT_OUT_ENV: "0"}, "jax", "cpu", {}),
        ({}, "jax", "gpu", {}),  # a CPU-compiler option
        ({}, "tensorflow", "cpu", {}),  # TensorFlow gets it through XLA_FLAGS
        ({}, "torch", "cpu", {}),
    ],
)
def test_jax_inference_compiler_options(environ, backend, platform, expected):
    assert runtime.jax_inference_compiler_options(environ, backend, platform) == expected


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


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow subprocess; run once, on tensorflow")
def test_import_sets_xla_flags_for_tensorflow_unless_opted_out():
    default = _probe("tensorflow")
    assert default["applied"] == {"xla_flags": True, "mallopt": False, "jax_inference_options": False}
    assert runtime.YNN_OFF_FLAG in default["flags"]
    opted_out = _probe("tensorflow", **{runtime.OPT_OUT_ENV: "0"})
    assert opted_out["applied"]["xla_flags"] is False and runtime.YNN_OFF_FLAG not in opted_out["flags"]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a torch subprocess; run once, on torch")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_import_tunes_malloc_for_torch_unless_opted_out():
    assert _probe("torch")["applied"] == {"xla_flags": False, "mallopt": True, "jax_inference_options": False}
    opted_out = _probe("torch", **{runtime.OPT_OUT_ENV: "0"})
    assert opted_out["applied"] == {"xla_flags": False, "mallopt": False, "jax_inference_options": False}


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX subprocess; run once, on jax")
def test_import_changes_nothing_process_wide_for_jax():
    probe = _probe("jax")
    assert probe == {
        "flags": "",
        "applied": {"xla_flags": False, "mallopt": False, "jax_inference_options": False},
    }


@pytest.fixture
def jit_spy(monkeypatch):
    """Replaces ``jax.jit`` (and the name Keras's JAX trainer jits with) by a
    wrapper that records the ``compiler_options`` of each call."""
    import jax
    from keras.src.backend.jax import trainer

    real_jit, calls = jax.jit, []
    runtime._jax_accepts(tuple(sorted(runtime.JAX_INFERENCE_COMPILER_OPTIONS.items())))  # cached

    def spy(fn, **kwargs):
        calls.append(kwargs.get("compiler_options"))
        return real_jit(fn, **kwargs)

    monkeypatch.setattr(jax, "jit", spy)
    monkeypatch.setattr(trainer, "jit", spy)
    monkeypatch.delenv(runtime.OPT_OUT_ENV, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    return calls


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's trainer")
def test_jax_predict_and_evaluate_compile_with_inference_options_fit_without(jit_spy):
    from keras_sequencer import Sequencer2D
    from tests.helpers import TINY_ARCH, random_images

    model = Sequencer2D(**TINY_ARCH, classes=3)
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    x, y = random_images(2, 28, 28), np.array([0, 2])
    eager = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(model.predict_on_batch(x), eager, rtol=1e-5, atol=1e-6)
    model.test_on_batch(x, y)
    assert jit_spy == [runtime.JAX_INFERENCE_COMPILER_OPTIONS] * 2
    model.train_on_batch(x, y)
    assert jit_spy[2:] == [None]
    import jax
    from keras.src.backend.jax import trainer

    assert trainer.jit is jax.jit  # restored after each compilation


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's trainer")
def test_jax_inference_options_left_out_when_opted_out_or_refused(jit_spy, monkeypatch):
    from keras_sequencer import Sequencer2D
    from tests.helpers import TINY_ARCH, random_images

    x = random_images(1, 28, 28)
    monkeypatch.setenv(runtime.OPT_OUT_ENV, "0")
    Sequencer2D(**TINY_ARCH).predict_on_batch(x)
    monkeypatch.delenv(runtime.OPT_OUT_ENV)
    # an option this jaxlib does not know (as a future XLA may drop the flag)
    monkeypatch.setattr(runtime, "JAX_INFERENCE_COMPILER_OPTIONS", {"xla_cpu_no_such_option": ""})
    assert not runtime._jax_accepts((("xla_cpu_no_such_option", ""),))
    del jit_spy[1:]  # _jax_accepts's own probe
    Sequencer2D(**TINY_ARCH).predict_on_batch(x)  # still compiles and runs
    assert jit_spy == [None, None]
