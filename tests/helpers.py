"""What the tests share: the one tiny architecture, comparisons with timm, model
round trips, image folders, training setups and process helpers.

Fixtures live in ``conftest.py``; this module holds plain functions and constants, so
that no test module imports another.
"""

import csv
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import types
import zlib

import keras
import numpy as np
import pytest

from keras_sequencer import backend_setup, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TIMM = importlib.util.find_spec("timm") is not None
requires_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed")
# What model.export and the artefacts' runtimes need (the [export] extra).
EXPORT_PACKAGES = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert")
requires_export = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in EXPORT_PACKAGES),
    reason='needs the [export] extra and tensorflow: pip install -e ".[export]"',
)


def tiny_arch(stages=4, blocks=1, first_patch=7, width=16, hidden=4, mlp_ratio=3.0, **overrides):
    """The tests' one tiny Sequencer2D architecture (builder / timm ``Sequencer2d``
    keyword arguments), cut to what a test needs.

    ``stages`` stages: a ``first_patch`` stem, then a patch-2 and 1x1 downsamples (the
    paths of the full models), ``blocks`` blocks per stage (an int, or one per stage),
    ``width`` / ``hidden`` channels in the first stage and 1.5x that after it.
    ``overrides`` replace or add builder arguments (``union``, ``rnn_type``, ...)."""
    later = lambda n: (n,) + (int(n * 1.5),) * (stages - 1)  # noqa: E731
    arch = dict(
        layers=tuple(blocks) if isinstance(blocks, (tuple, list)) else (blocks,) * stages,
        patch_sizes=(first_patch, 2, 1, 1)[:stages],
        embed_dims=later(width),
        hidden_sizes=later(hidden),
        mlp_ratios=(float(mlp_ratio),) * stages,
    )
    arch.update(overrides)
    return arch


# The default tiny model: every code path of the full models (stem, patch-2
# downsample, 1x1 downsamples, several blocks per stage) in a fraction of the time.
TINY_ARCH = tiny_arch(blocks=(2, 1, 2, 1))
# One stage, 2x2 tokens at 16x16: the cheapest Sequencer2D that still has every part
# (the training tests' model).
TINY_TRAIN_ARCH = tiny_arch(1, first_patch=8, mlp_ratio=2.0)
# Two stages, one block each: every kind of layer the exports translate, in seconds
# (the export and int8 tests' model).
MICRO_ARCH = tiny_arch(2, first_patch=4, width=8, mlp_ratio=2.0)

BACKENDS = ("jax", "tensorflow", "torch")
# The two explicit implementations of the recurrent layers (``"auto"`` resolves to one).
IMPLEMENTATIONS = ("keras", "fused")


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


def run_in_the_pass_of(preferred):
    """Skips the calling test unless this is ``preferred``'s pass (or, when
    ``preferred`` is not installed, the first installed backend's). For the
    benchmark scripts' smoke tests, whose engines are subprocesses that pick their
    own backend: run once, in the pass with room to spare
    (``run_all_backends.py`` runs JAX's pass beside TensorFlow's, then torch's)."""
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    owner = preferred if preferred in installed else (installed or [keras.backend.backend()])[0]
    if keras.backend.backend() != owner:
        pytest.skip(f"run in one backend's pass only: KERAS_BACKEND={owner}")


def quick_first(cases, keep=1, several_names=False):
    """``cases`` for ``pytest.mark.parametrize`` with all but the first ``keep``
    marked slow: the quick tier (``-m "not slow"``) runs those cases of the test,
    CI runs every case. ``several_names``: each case is a tuple of the values of
    several argument names."""
    cases = list(cases)
    slow = pytest.mark.slow
    rest = [pytest.param(*c, marks=slow) if several_names else pytest.param(c, marks=slow) for c in cases[keep:]]
    return cases[:keep] + rest


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


def make_image_folder(root, classes=("cat", "dog"), per_class=2, size=(12, 10), val_classes=None):
    """Writes root/{train,val}/<class>/<i>.png random images; returns {path: pixels}."""
    from PIL import Image

    rng = np.random.RandomState(0)
    written = {}
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for name in names:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(per_class):
                pixels = rng.randint(0, 256, size + (3,), dtype=np.uint8)
                path = os.path.join(root, split, name, f"{i}.png")
                Image.fromarray(pixels).save(path)
                written[path] = pixels
    return written


def truncate_into_jpeg(path, size=(20, 20)):
    """Writes a JPEG at ``path`` with a valid header but only its first half."""
    from PIL import Image

    pixels = np.random.RandomState(1).randint(0, 256, size + (3,), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])


def free_ports(count):
    """``count`` TCP ports free on 127.0.0.1 (for worker processes)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_environments():
    """Per-process environment for a two-process run on 127.0.0.1: ``TF_CONFIG``
    (MultiWorkerMirroredStrategy) on TensorFlow, ``KERAS_DISTRIBUTION_*``
    (``keras.distribution.initialize``, one CPU device each) on JAX, torchrun's
    ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` / ``MASTER_*`` (gloo, CPU) on torch."""
    if keras.backend.backend() == "torch":
        port = str(free_ports(1)[0])
        return [
            dict(
                WORLD_SIZE="2",
                RANK=str(i),
                LOCAL_RANK=str(i),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                CUDA_VISIBLE_DEVICES="",
            )
            for i in range(2)
        ]
    if keras.backend.backend() == "tensorflow":
        workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
        return [
            {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}
            for i in range(2)
        ]
    coordinator = f"127.0.0.1:{free_ports(1)[0]}"
    return [
        {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": coordinator,
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(i),
            "JAX_NUM_CPU_DEVICES": "1",
        }
        for i in range(2)
    ]


# Makes the packages named in HIDE_MODULES (comma-separated) unimportable, as if
# not installed, then runs the rest of the script.
HIDE = textwrap.dedent(
    """
    import importlib.machinery, os, sys

    HIDDEN = {m for m in os.environ.get("HIDE_MODULES", "").split(",") if m}

    class HidingPathFinder(importlib.machinery.PathFinder):
        # sys.path's finder, blind to the hidden packages: find_spec gives None and
        # import raises ModuleNotFoundError, exactly as when they are not installed.
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [
        HidingPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path
    ]
    """
)


# The real create_model, kept before a test patches create_model_with_tiny_s over it.
_create_model = registry.create_model


def create_model_with_tiny_s(name, **kwargs):
    """``registry.create_model``, except that ``"sequencer2d_s"`` is built with
    :data:`TINY_TRAIN_ARCH` (patch it over ``registry.create_model`` for a tiny "S")."""
    from keras_sequencer.models import Sequencer2D

    if name == "sequencer2d_s":
        return Sequencer2D(**TINY_TRAIN_ARCH, name=name, **kwargs)
    return _create_model(name, **kwargs)


def tiny_stand_in(name, **kwargs):
    """``registry.create_model`` for the registered ``name``, built with the micro
    architecture of its family (the name, defaults and head as asked): patched over
    ``create_model`` where a test's subject is a script's or a command's handling of
    a name, not the full-size network."""
    from keras_sequencer import variants

    family = variants.get_variant(name).family
    return registry.BUILDERS[family](**tiny_arch(2, first_patch=4, width=8, mlp_ratio=2.0), name=name, **kwargs)


def tiny_config(output, **overrides):
    """A TrainConfig of :data:`TINY_TRAIN_ARCH` at 16x16 (3 epochs, batch 16)."""
    from keras_sequencer import training

    settings = dict(
        model="tiny",
        arch=TINY_TRAIN_ARCH,
        image_size=(16, 16),
        crop_pct=1.0,
        batch_size=16,
        workers=1,
        epochs=3,
        warmup_epochs=1,
        cooldown_epochs=0,
        lr=1e-3,
        output=str(output),
        verbose=0,
    )
    settings.update(overrides)
    return training.TrainConfig(**settings)


def digits_splits(num_train=64, num_val=32, image_size=16):
    """The first scikit-learn digits as uint8 RGB images (fixed split)."""
    from keras_sequencer import datasets
    from keras_sequencer.training import data

    (x_train, y_train), (x_val, y_val) = datasets.load_digits(image_size)
    to_uint8 = lambda x: (x * 255).round().astype("uint8")  # noqa: E731
    return data.from_arrays(
        (to_uint8(x_train[:num_train]), y_train[:num_train]),
        (to_uint8(x_val[:num_val]), y_val[:num_val]),
        class_names=[str(i) for i in range(10)],
    )


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process at ``epoch`` (0-based) after its second batch."""

    def __init__(self, epoch):
        super().__init__()
        self.kill_epoch, self.epoch = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def read_csv_epochs(path):
    """The ``epoch`` column of a training run's ``history.csv``."""
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def layer_pair(shape, **kwargs):
    """A keras-path and a fused-path BiLSTM2D holding the same weights."""
    from keras_sequencer.layers import BiLSTM2D

    layers = [BiLSTM2D(5, implementation=impl, **kwargs) for impl in IMPLEMENTATIONS]
    for layer in layers:
        layer.build(shape)
    layers[1].set_weights(layers[0].get_weights())
    return layers


# The Keras backends installed here, in the package's order of preference.
INSTALLED = [b for b in backend_setup.PREFERENCE if importlib.util.find_spec(b) is not None]


def run_hidden(tmp_path, code, hide=(), script_name="check.py", **env):
    """Runs ``code`` (after the hiding hook) as ``tmp_path/script_name`` with a fresh
    ``KERAS_HOME``; returns the CompletedProcess."""
    script = tmp_path / script_name
    script.write_text(HIDE + textwrap.dedent(code))
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environ.update(PYTHONPATH=REPO, HIDE_MODULES=",".join(hide), KERAS_HOME=str(tmp_path / "keras_home"), **env)
    return subprocess.run(
        [sys.executable, str(script)], env=environ, cwd=str(tmp_path), capture_output=True, text=True, timeout=300
    )


def timm_and_keras(arch, num_classes=10, seed=0, **keras_kwargs):
    """A random timm Sequencer2d of ``arch`` (:func:`timm_model`) and a fresh Keras
    ``Sequencer2D`` of the same architecture and head (logits), not yet converted."""
    from keras_sequencer.models import Sequencer2D

    reference = timm_model(arch, num_classes=num_classes, seed=seed)
    model = Sequencer2D(**arch, classes=num_classes, classifier_activation=None, **keras_kwargs)
    return reference, model


# The tiny architecture registered as a published variant by the ``register`` fixture:
# its name, pinned commit and the checkpoint's path on the weights server.
VARIANT = "sequencer2d_tiny"


COMMIT = "0123456789abcdef0123456789abcdef01234567"


URL_PATH = f"/test/{VARIANT}.in1k/resolve/{COMMIT}/model.safetensors"


def layer_weights(model):
    """``{layer name: [arrays]}`` of the layers that hold weights."""
    return {layer.name: [to_numpy(w) for w in layer.weights] for layer in model.layers if layer.weights}


def assert_weights_equal(model, reference, skip=()):
    """``model``'s weights equal ``reference`` (:func:`layer_weights`), but for the layers in ``skip``."""
    weights = layer_weights(model)
    assert set(weights) == set(reference) - set(skip)
    for name, arrays in weights.items():
        for actual, expected in zip(arrays, reference[name]):
            np.testing.assert_array_equal(actual, expected, err_msg=name)


def closed_port_url():
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tiny_imagenet_model(**kwargs):
    """The tiny architecture built with ``weights="imagenet"`` (the registered variant's)."""
    from keras_sequencer import Sequencer2D

    return Sequencer2D(**TINY_ARCH, weights="imagenet", classifier_activation=None, **kwargs)


# ------------------------------------------------ the same random draws as timm --
class Draws:
    """Stands in for Python's ``random`` / numpy's ``np.random`` inside a timm
    module: returns the given values in order (``randint(a, b)`` inclusive of
    ``b`` as Python's, ``randint(a, b)`` exclusive as numpy's, from fractions)."""

    def __init__(self, values, numpy_style=False):
        self.values = list(values)
        self.numpy_style = numpy_style

    def next(self):
        return self.values.pop(0)

    def uniform(self, a, b):
        return self.next()

    def random(self):
        return self.next()

    def rand(self):
        return self.next()

    def beta(self, a, b):
        return self.next()

    def randint(self, low, high, size=None):
        span = high - low + (0 if self.numpy_style else 1)
        return low + int(math.floor(self.next() * span))


def patched(module, name, draws, monkeypatch):
    """Replaces ``module``'s random source ``name`` (``random``, or ``np`` for numpy's
    ``np.random``) by ``draws`` for the test (monkeypatch), so that a timm function
    draws the same values as the package's function under test."""
    if name == "np":
        fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        fake.random = draws
        monkeypatch.setattr(module, "np", fake)
    else:
        monkeypatch.setattr(module, name, draws)
