"""benchmarks/profile_forward.py accounts for the same GEMMs as timm."""

import keras
import pytest

from tests.helpers import (
    load_script,
    requires_timm,
)


@pytest.mark.slow  # profiles a forward pass of timm and of the backend
@requires_timm
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="profiles the torch backend")
def test_profile_forward_accounts_for_the_same_gemms_as_timm(capsys):
    """benchmarks/profile_forward.py: with and without autograd the fused
    path's dense GEMMs (Dense layers + hoisted LSTM input projections, counted
    from the profiled shapes) are exactly timm's dense GEMMs plus its LSTMs'
    input projections, and its recurrence is its own batched GEMMs, not
    oneDNN's LSTM (which timm runs); every category is a non-negative time."""
    module = load_script("benchmarks/profile_forward.py")
    small = ["--batch", "1", "--img-size", "56", "--repeats", "1"]
    for report in (module.main(small + ["--autograd"]), module.main(small)):
        assert report["dense_flops"]["torch:fused"] == report["fixed_flops"] > 0
        assert report["dense_flops"]["timm"] < report["fixed_flops"]
        assert report["breakdown"]["torch:fused"]["recurrent GEMM (bmm, baddbmm)"] > 0
        assert report["breakdown"]["torch:fused"]["oneDNN LSTM"] == 0
        assert report["breakdown"]["timm"]["oneDNN LSTM"] > 0
        for rows in report["breakdown"].values():
            assert all(v >= 0 for v in rows.values())
    assert "GFLOP/s" in capsys.readouterr().out
