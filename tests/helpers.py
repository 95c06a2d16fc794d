"""One shared helper for tests that compare against timm or round-trip models."""

import importlib.util
import os
import tempfile
import zlib

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TIMM = importlib.util.find_spec("timm") is not None
requires_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed")

# Reduced architectures that reach every code path of the full models (stem,
# patch-2 downsample, 1x1 downsample, several blocks per stage) in a fraction of
# the time. Keys are Sequencer2D / timm Sequencer2d keyword arguments.
TINY_ARCH = dict(
    layers=(2, 1, 2, 1),
    patch_sizes=(7, 2, 1, 1),
    embed_dims=(16, 24, 24, 24),
    hidden_sizes=(4, 6, 6, 6),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)


BACKENDS = ("jax", "tensorflow", "torch")


def run_in_one_backend_pass(key):
    """Skips the calling test unless this is the one backend pass, among the
    installed backends, that ``key`` maps to (a fixed hash, so keys spread over
    the passes). For checks whose result does not depend on the Keras backend
    (a TensorFlow graph, tf.data or numpy code, file locking between processes),
    or whose backend-dependent part every pass covers at a smaller size: run
    once by ``run_all_backends.py``, and still run by a single backend's pass."""
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    owners = installed or [keras.backend.backend()]
    owner = owners[zlib.crc32(key.encode()) % len(owners)]
    if keras.backend.backend() != owner:
        pytest.skip(f"run in one backend's pass only: KERAS_BACKEND={owner}")


def load_script(path):
    """Imports a script of the repository that is not a package module (an
    example, a benchmark) from its path relative to the repository root."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_images(batch, height, width, channels=3, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, height, width, channels)).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def run_model(model, inputs):
    """``model(inputs)`` as numpy. On JAX through the jit-compiled
    ``predict_on_batch``: called eagerly, JAX compiles each LSTM layer's scan
    separately, which makes a full-size forward pass several times slower."""
    if keras.backend.backend() == "jax":
        return keras.tree.map_structure(to_numpy, model.predict_on_batch(inputs))
    return keras.tree.map_structure(to_numpy, model(inputs))


def timm_model(arch=None, variant=None, num_classes=1000, seed=0, **kwargs):
    """A timm Sequencer2d in eval mode with *all* parameters random.

    timm initialises LayerNorms to 1/0 and the head to zeros; those are
    perturbed so that every tensor matters to the comparison.
    """
    import timm
    import torch
    from timm.models.sequencer import Sequencer2d

    torch.manual_seed(seed)
    if variant is not None:
        model = timm.create_model(variant, num_classes=num_classes, **kwargs)
    else:
        model = Sequencer2d(num_classes=num_classes, **arch, **kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.startswith("head"):
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def timm_forward(model, images, features=False):
    """Runs timm on NHWC numpy images; returns logits (or pre-pool features, NHWC)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        out = model.forward_features(x) if features else model(x)
    return out.numpy()


def state_dict_numpy(torch_model):
    return {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}


def save_and_reload(model, objects=None):
    """Saves ``model`` as ``.keras`` in a temp dir and loads it back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return keras.saving.load_model(path, custom_objects=objects)


def run_script_without(script, argv, hidden_module):
    """Runs ``examples/<script>`` in a subprocess with ``hidden_module`` made
    unimportable (as if not installed); returns ``(exit status, stderr lines
    that start with "<script>: error:", stderr)``."""
    import subprocess
    import sys

    code = (
        f"import runpy, sys; sys.modules[{hidden_module!r}] = None; "
        f"sys.argv = [{script!r}, *{list(argv)!r}]; "
        f"runpy.run_path('examples/{script}', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{script}: error:")]
    return proc.returncode, errors, proc.stderr
