"""keras_sequencer.kernels: one dispatch to the running backend's module, every backend
module with the same kernel functions and signatures, the layers free of backend-name
branches; and ``implementation="auto"``, the default: what it resolves to on CPU and
(by an injected device query) on a GPU, explicit choices kept, saved files independent
of it, ``mixed_bfloat16`` on both paths."""

import ast
import inspect
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_sequencer import Sequencer2D, kernels, layers
from keras_sequencer.kernels import backend_kernels, generic
from keras_sequencer.layers import BiLSTM2D, Sequencer2DBlock, VanillaSequencerBlock
from tests.helpers import MICRO_ARCH, TINY_ARCH, random_images, run_model, save_and_reload, to_numpy

PACKAGE_DIR = os.path.dirname(kernels.__file__)
BACKEND_MODULES = ("jax", "tensorflow", "torch")


def _tree(path):
    with open(path) as f:
        return ast.parse(f.read())


def _api_signatures(name):
    """``{function: argument spec}`` of the kernel API as module ``name``
    (a file of keras_sequencer/kernels/) defines it or re-exports generic's,
    read from the source, so no backend has to be installed."""
    generic_tree = _tree(os.path.join(PACKAGE_DIR, "generic.py"))
    generic_defs = {n.name: n for n in generic_tree.body if isinstance(n, ast.FunctionDef)}
    tree = _tree(os.path.join(PACKAGE_DIR, f"{name}.py"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ImportFrom) and node.module == "keras_sequencer.kernels.generic":
            for alias in node.names:
                found[alias.asname or alias.name] = generic_defs[alias.name]
    return {fn: ast.dump(found[fn].args) if fn in found else None for fn in generic.KERNEL_API}


def test_dispatch_returns_the_running_backends_module():
    module = backend_kernels()
    assert module.__name__ == f"keras_sequencer.kernels.{keras.backend.backend()}"
    assert backend_kernels() is module
    for fn in generic.KERNEL_API:
        assert inspect.signature(getattr(module, fn)) == inspect.signature(getattr(generic, fn)), fn


@pytest.mark.parametrize("name", BACKEND_MODULES)
def test_every_backend_module_has_the_kernel_api(name):
    signatures = _api_signatures(name)
    missing = [fn for fn, spec in signatures.items() if spec is None]
    assert missing == [], f"kernels/{name}.py lacks {missing}"
    assert signatures == _api_signatures("generic")


def test_layers_do_not_ask_for_the_backend():
    """layers.py has no ``keras.backend.backend()`` call and imports no
    framework: it reaches backend code only through ``backend_kernels()``."""
    tree = _tree(layers.__file__)
    calls = [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("backend.backend")
    ]
    assert calls == []
    assert "backend()" not in open(layers.__file__).read().replace("backend_kernels()", "")
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported.isdisjoint({"jax", "tensorflow", "torch"})


def test_no_private_names_imported_between_layers_and_kernels():
    paths = [layers.__file__] + [
        os.path.join(PACKAGE_DIR, f) for f in sorted(os.listdir(PACKAGE_DIR)) if f.endswith(".py")
    ]
    private = []
    for path in paths:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_sequencer"):
                private += [f"{os.path.basename(path)}: {a.name}" for a in node.names if a.name.startswith("_")]
        assert sum(1 for _ in open(path)) <= 600, path
    assert private == []


@pytest.mark.slow
def test_only_the_running_backends_kernels_are_imported():
    """A fused model's forward pass imports the running backend's kernel module
    and no other (no torch on JAX, no JAX on torch)."""
    backend = keras.backend.backend()
    script = (
        "import sys, numpy as np\n"
        "import keras_sequencer\n"
        "from keras_sequencer import layers\n"
        "block = layers.Sequencer2DBlock(4, implementation='fused')\n"
        "block(np.zeros((1, 3, 4, 8), 'float32'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('keras_sequencer.kernels.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = eval(result.stdout.strip().splitlines()[-1])
    expected = {"keras_sequencer.kernels.generic", f"keras_sequencer.kernels.{backend}"}
    if backend == "torch":
        expected |= {"keras_sequencer.kernels.torch_lstm", "keras_sequencer.kernels.torch_gemm"}
    assert set(loaded) == expected


BACKEND = keras.backend.backend()


def _fake_gpu(monkeypatch):
    """Makes the running backend's own device query report a GPU."""
    if BACKEND == "jax":
        import jax

        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    elif BACKEND == "torch":
        from keras.src.backend.torch import core

        monkeypatch.setattr(core, "get_device", lambda: "cuda:0")
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"])


def test_default_is_auto_and_resolves_to_fused_on_cpu():
    assert kernels.accelerator_platform() == "cpu"
    layer = BiLSTM2D(5)
    block = Sequencer2DBlock(4)
    assert layer.implementation == block.implementation == "auto"
    assert layer.resolved_implementation == block.resolved_implementation == "fused"
    assert layer.get_config()["implementation"] == "auto"
    model = Sequencer2D(**TINY_ARCH, input_shape=(28, 28, 3), classes=3)
    chosen = model.implementations
    # every block and its BiLSTM2D: 6 blocks of TINY_ARCH, twice
    assert len(chosen) == 2 * sum(TINY_ARCH["layers"])
    assert set(chosen.values()) == {"fused"}


@pytest.mark.slow
def test_default_model_predicts_any_batch_size():
    """``predict`` over calls of different batch sizes and a partial last batch:
    TensorFlow then retraces with an unknown batch size, which the fused
    recurrence must accept."""
    model = Sequencer2D(**TINY_ARCH, input_shape=(28, 28, 3), classes=3, classifier_activation=None)
    images = random_images(5, 28, 28)
    expected = run_model(model, images)
    for count, batch_size in ((4, 4), (3, 3), (5, 2), (5, 4)):
        got = model.predict(images[:count], batch_size=batch_size, verbose=0)
        np.testing.assert_allclose(got, expected[:count], atol=1e-5, rtol=0)


def test_auto_picks_the_keras_layers_on_a_gpu(monkeypatch):
    layers = [BiLSTM2D(5), Sequencer2DBlock(4)]
    explicit = [BiLSTM2D(5, implementation="fused"), Sequencer2DBlock(4, implementation="keras")]
    _fake_gpu(monkeypatch)  # the backend's own device query now reports a GPU
    assert kernels.accelerator_platform() == "gpu"
    assert [layer.resolved_implementation for layer in layers] == ["keras", "keras"]
    # explicit choices are kept on any device
    assert [layer.resolved_implementation for layer in explicit] == ["fused", "keras"]


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_resolution_table(platform):
    resolve = kernels.resolve_implementation
    assert resolve("auto", "lstm", platform) == ("fused" if platform == "cpu" else "keras")
    for rnn_type in ("gru", "rnn"):
        assert resolve("auto", rnn_type, platform) == "keras"
    for explicit in ("keras", "fused"):
        assert resolve(explicit, "lstm", platform) == explicit
    with pytest.raises(ValueError, match="implementation"):
        resolve("cudnn", "lstm", platform)


def test_gru_and_the_vanilla_block_run_the_keras_layers():
    assert BiLSTM2D(5, rnn_type="gru").resolved_implementation == "keras"
    assert Sequencer2DBlock(4, rnn_type="rnn").resolved_implementation == "keras"
    assert VanillaSequencerBlock(2, rnn_type="lstm").resolved_implementation == "keras"
    with pytest.raises(ValueError, match="rnn_type"):
        BiLSTM2D(5, rnn_type="gru", implementation="fused")


def test_auto_runs_the_path_it_names(monkeypatch):
    """On CPU the auto layer's call goes through the fused kernel; with a GPU
    reported, through the LSTM layers; both give the keras path's numbers."""
    x = random_images(2, 5, 6, channels=4)
    reference = BiLSTM2D(5, implementation="keras")
    reference.build(x.shape)
    auto = BiLSTM2D(5)
    auto.build(x.shape)
    auto.set_weights(reference.get_weights())
    expected = to_numpy(reference(x))
    module = kernels.backend_kernels()
    calls = []
    real = module.bilstm2d
    monkeypatch.setattr(module, "bilstm2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_allclose(to_numpy(auto(x)), expected, atol=1e-5, rtol=0)
    assert calls, "auto on CPU did not run the fused kernel"
    calls.clear()
    # (the backend's device query itself stays: the LSTM layers must run here)
    monkeypatch.setattr(kernels, "accelerator_platform", lambda: "gpu")
    assert auto.resolved_implementation == "keras"
    np.testing.assert_allclose(to_numpy(auto(x)), expected, atol=1e-5, rtol=0)
    assert not calls, "auto on a GPU ran the fused kernel"


def test_a_saved_auto_model_reloads_equal_and_keeps_auto():
    saved_as = "auto"  # files saved with "keras"/"fused": tests/test_compat.py
    model = Sequencer2D(**TINY_ARCH, input_shape=(28, 28, 3), classes=3, implementation=saved_as)
    images = random_images(2, 28, 28)
    expected = run_model(model, images)
    reloaded = save_and_reload(model)
    block = reloaded.get_layer("stages_0_blocks_0")
    assert block.get_config()["implementation"] == saved_as
    assert block.resolved_implementation == ("fused" if saved_as == "auto" else saved_as)
    np.testing.assert_allclose(run_model(reloaded, images), expected, atol=1e-5, rtol=0)
    # the same weights under the other paths give the same logits
    other = Sequencer2D(**TINY_ARCH, input_shape=(28, 28, 3), classes=3, implementation="keras")
    other.set_weights(reloaded.get_weights())
    np.testing.assert_allclose(run_model(other, images), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_mixed_bfloat16_runs_and_stays_close_to_float32():
    """Both paths infer within bf16 error of float32; the fused one (the CPU
    default) also trains."""
    images = random_images(4, 16, 16)
    labels = np.arange(4) % 3
    reference = Sequencer2D(**MICRO_ARCH, input_shape=(16, 16, 3), classes=3, classifier_activation=None)
    expected = run_model(reference, images)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for implementation in ("keras", "fused"):
            model = Sequencer2D(
                **MICRO_ARCH,
                input_shape=(16, 16, 3),
                classes=3,
                classifier_activation=None,
                implementation=implementation,
            )
            model.set_weights(reference.get_weights())
            block = model.get_layer("stages_0_blocks_0")
            assert block.compute_dtype == "bfloat16"
            assert block.resolved_implementation == implementation
            got = run_model(model, images)
            assert got.dtype == np.float32  # the head computes in float32
            error = np.abs(got - expected).max()
            assert 0 < error < 0.05 * np.abs(expected).max(), (implementation, error)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        losses = model.fit(images, labels, epochs=2, batch_size=4, verbose=0).history["loss"]
        assert np.all(np.isfinite(losses)) and losses[1] < losses[0]
    finally:
        keras.config.set_dtype_policy(previous)
