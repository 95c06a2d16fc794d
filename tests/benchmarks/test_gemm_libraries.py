"""benchmarks/gemm_libraries.py times the same product in every library."""

import math

import keras
import pytest

from tests.helpers import load_script

pytest.importorskip("torch")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="times torch's GEMM libraries; once is enough")
def test_gemm_libraries_rates_every_library_on_every_shape(capsys):
    module = load_script("benchmarks/gemm_libraries.py")
    result = module.main(["--threads", "1", "--repeats", "1", "--scale", "512", "--pause", "0"])
    assert len(result["rates"]) == len(module.SHAPES)
    for row in [*result["rates"].values(), result["overall"]]:
        assert set(row) == set(module.LIBRARIES)
        assert all(math.isfinite(rate) and rate > 0 for rate in row.values())
    assert "all, FLOP-weighted" in capsys.readouterr().out


def test_gemm_libraries_refuses_a_library_that_computes_another_product(monkeypatch):
    torch = pytest.importorskip("torch")
    module = load_script("benchmarks/gemm_libraries.py")
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda x, w, b, *rest: x @ w.t())  # no bias
    with pytest.raises(AssertionError, match="onednn computes another product"):
        module.gemms(16, 8, 4, 1)
