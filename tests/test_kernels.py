"""keras_sequencer.kernels: one dispatch to the running backend's module, every
backend module with the same kernel functions and signatures, and the layers
free of backend-name branches."""

import ast
import inspect
import os
import subprocess
import sys

import keras
import pytest

from keras_sequencer import kernels, layers
from keras_sequencer.kernels import backend_kernels, generic

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
        expected.add("keras_sequencer.kernels.torch_lstm")
    assert set(loaded) == expected
