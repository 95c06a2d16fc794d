"""benchmarks/gpu_check.py falls back to the CPU and says so."""

import json
import os

import pytest

from tests.helpers import run_in_the_pass_of


@pytest.mark.slow
def test_gpu_check_falls_back_to_cpu_and_says_so():
    import subprocess
    import sys

    from tests.helpers import REPO

    run_in_the_pass_of("jax")
    backend = "torch"  # the engine, a subprocess of its own
    env = dict(os.environ, GPU_CHECK_BACKENDS=backend, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", sys.executable],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "# no GPU visible: running the checks on CPU at tiny size" in proc.stdout
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    report = json.loads(line)
    assert report["backend"] == backend and report["device"] == "cpu"
    assert report["auto_resolves_to"] == "fused" and "no GPU" in report["note"]
    assert report["equal"]["ok"] and max(report["equal"]["max_abs_error"].values()) < 1e-4
    assert report["cudnn"] == {"ok": True, "applicable": False}
    assert report["fit"]["ok"] and len(report["fit"]["loss"]) == 2
    assert proc.stdout.count("| timm |") == 2 and proc.stdout.count(f"| {backend} |") == 2
