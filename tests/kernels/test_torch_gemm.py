"""keras_sequencer.kernels.torch_gemm: the fused torch path's GEMMs in MKL or oneDNN,
the same numbers either way, and the choice read from the environment."""

import keras
import numpy as np
import pytest

from keras_sequencer import layers
from tests.helpers import random_images, to_numpy

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's GEMMs")


@pytest.fixture
def gemm(monkeypatch):
    """The module, its library re-read from the environment for each test."""
    from keras_sequencer.kernels import torch_gemm

    torch_gemm.library.cache_clear()
    yield torch_gemm
    monkeypatch.delenv(torch_gemm.ENVIRONMENT, raising=False)
    torch_gemm.library.cache_clear()


def test_library_choice(gemm, monkeypatch):
    import torch

    available = torch.backends.mkldnn.is_available()
    for vendor, expected in (("AuthenticAMD", "onednn" if available else "mkl"), ("GenuineIntel", "mkl"), ("", "mkl")):
        monkeypatch.setattr(gemm, "cpu_vendor", lambda vendor=vendor: vendor)
        gemm.library.cache_clear()
        assert gemm.library() == expected, vendor
    for choice in ("mkl", "onednn") if available else ("mkl",):
        monkeypatch.setenv(gemm.ENVIRONMENT, choice.upper())
        gemm.library.cache_clear()
        assert gemm.library() == choice
    monkeypatch.setenv(gemm.ENVIRONMENT, "openblas")
    gemm.library.cache_clear()
    with pytest.raises(ValueError, match="KERAS_SEQUENCER_TORCH_GEMM='openblas' is not one of auto, mkl, onednn"):
        gemm.library()


def test_onednn_computes_the_products_of_addmm_without_autograd_only(gemm, monkeypatch):
    import torch

    monkeypatch.setenv(gemm.ENVIRONMENT, "onednn")
    generator = torch.Generator().manual_seed(0)
    x, kernel, bias, residual = (torch.randn(*s, generator=generator) for s in ((33, 8), (8, 12), (12,), (33, 12)))
    expected = torch.addmm(bias, x, kernel)
    with torch.no_grad(), torch.profiler.profile() as profile:
        got = gemm.linear(x, kernel, bias)
        fused = gemm.residual_linear(residual, x, kernel, bias)
    names = [e.name for e in profile.events()]
    assert "aten::addmm" not in names and names.count("mkldnn::_linear_pointwise") == 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, residual + expected, atol=1e-5, rtol=1e-5)
    # with autograd (training) and off the float32 path, addmm as before
    x.requires_grad_(True)
    assert gemm.residual_linear(residual, x, kernel, bias) is None
    with torch.profiler.profile() as profile:
        gemm.linear(x, kernel, bias).sum().backward()
    assert "aten::addmm" in [e.name for e in profile.events()] and x.grad is not None
    with torch.no_grad():
        assert gemm.residual_linear(residual.double(), x.double(), kernel.double(), bias.double()) is None


def test_fused_model_gives_the_same_outputs_with_either_library(gemm, monkeypatch):
    """A fused block without autograd (predict), oneDNN against MKL."""
    import torch

    block = layers.Sequencer2DBlock(4, implementation="fused")
    x = torch.from_numpy(random_images(2, 5, 6, 8))
    outputs = {}
    for choice in ("mkl", "onednn"):
        monkeypatch.setenv(gemm.ENVIRONMENT, choice)
        gemm.library.cache_clear()
        with torch.no_grad(), torch.profiler.profile() as profile:
            outputs[choice] = to_numpy(block(x))
        onednn_calls = [e.name for e in profile.events()].count("mkldnn::_linear_pointwise")
        assert onednn_calls == (4 if choice == "onednn" else 0), choice  # projection, fc, mlp_fc1, mlp_fc2
    np.testing.assert_allclose(outputs["onednn"], outputs["mkl"], atol=1e-5, rtol=0)
    assert not np.array_equal(outputs["onednn"], to_numpy(x))
