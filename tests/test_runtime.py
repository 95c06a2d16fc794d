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
    "environ, backend, initialized, expected",
    [
        ({}, "jax", False, runtime.YNN_OFF_FLAG),
        ({"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, "jax", False, "--xla_dump_to=/tmp/d " + runtime.YNN_OFF_FLAG),
        # the user's own choice of the flag wins
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, "jax", False, None),
        ({runtime.OPT_OUT_ENV: "0"}, "jax", False, None),
        ({runtime.OPT_OUT_ENV: "off"}, "jax", False, None),
        ({runtime.OPT_OUT_ENV: "1"}, "jax", False, runtime.YNN_OFF_FLAG),
        # too late: JAX read its flags already
        ({}, "jax", True, None),
        ({}, "tensorflow", False, None),
        ({}, "torch", False, None),
    ],
)
def test_xla_cpu_flags_to_add(environ, backend, initialized, expected):
    assert runtime.xla_cpu_flags_to_add(environ, backend, initialized) == expected


_PROBE = """
import json, os
import keras_sequencer, jax, jax.numpy as jnp
f = jax.jit(lambda a, b: a @ b)
hlo = f.lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile().as_text()
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn" in hlo}))
"""


def _probe(**env):
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.OPT_OUT_ENV)}
    environ.update(env, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX subprocess; run once, on jax")
def test_import_turns_off_ynn_dots_for_jax_unless_opted_out():
    default = _probe()
    assert runtime.YNN_OFF_FLAG in default["xla_flags"]
    assert not default["ynn"], "the compiled dot still uses a YNNPACK fusion"
    opted_out = _probe(**{runtime.OPT_OUT_ENV: "0"})
    assert runtime.YNN_OFF_FLAG not in opted_out["xla_flags"]
    if not opted_out["ynn"]:
        pytest.skip("this XLA does not use YNNPACK for dots by default")
