"""The fp32 GEMM rate of each CPU library torch can call, on Sequencer2D-S's shapes.

    python benchmarks/gemm_libraries.py --threads 2

Times ``x @ w + b`` for S's dense GEMMs at batch 8 and 224 px (stages 1 and 2: the
BiLSTM2D's input projection of all four directions, the MLP's two, the token mixer's
``fc``) in three libraries, in one process:

- ``mkl``: torch's ``addmm``, which the x86 wheels run with MKL: timm's ``Linear``
  layers and keras-sequencer's fused torch path;
- ``onednn``: oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``), the library
  behind timm's LSTM (its input projections) and inductor's frozen linears;
- ``numpy``: NumPy's BLAS (OpenBLAS in NumPy's wheels).

Prints GFLOP/s per shape and library (the median of ``--repeats`` calls in each of
two rounds, each library's calls in a block after a pause, so that one library's
spinning worker threads do not steal the cores of the next) and the FLOP-weighted
rate over the shapes: which library a fused path should call on this CPU. Every
library runs ``--threads`` threads (NumPy's through threadpoolctl). ``benchmarks/RESULTS.md`` records runs.
"""

import argparse
import os
import statistics
import sys
import time

# (tokens, input channels, output channels) at batch 8, 224 px: stage 1 (32x32 tokens,
# C 192, 4 directions x 4 gates x 48 units) and stage 2 (16x16 tokens, C 384).
SHAPES = (
    (8192, 192, 768),
    (8192, 192, 576),
    (8192, 576, 192),
    (8192, 192, 192),
    (2048, 384, 1536),
    (2048, 384, 1152),
    (2048, 1152, 384),
)
LIBRARIES = ("mkl", "onednn", "numpy")
ROUNDS = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each library's calls")
    parser.add_argument("--scale", type=int, default=1, help="divide the token counts by this (a quick check)")
    return parser.parse_args(argv)


def blas_threads(threads):
    """A context that gives NumPy's BLAS ``threads`` threads (threadpoolctl, which
    scikit-learn installs); without threadpoolctl, NumPy keeps its own count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def gemms(m, k, n, threads):
    """``{library: call}`` computing ``x @ w + b`` for ``(m, k) @ (k, n)``."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(m + k + n)
    x = torch.randn(m, k, generator=generator)
    w = torch.randn(n, k, generator=generator)  # torch's Linear layout (out, in)
    b = torch.randn(n, generator=generator)
    wt = w.t().contiguous()
    xn, wn, bn = x.numpy(), wt.numpy(), b.numpy()
    calls = {
        "mkl": lambda: torch.addmm(b, x, wt),
        "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
        "numpy": lambda: xn @ wn + bn,
    }
    expected = calls["mkl"]().numpy()
    for name, call in calls.items():  # the same product, or the rate means nothing
        got = np.asarray(call())
        if not np.allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()):
            raise AssertionError(f"{name} computes another product for {(m, k, n)}")
    return calls


def run(args):
    """``{"rates": {shape: {library: GFLOP/s}}, "overall": {library: GFLOP/s}}``."""
    rates, seconds, flops = {}, dict.fromkeys(LIBRARIES, 0.0), 0.0
    for m, k, n in SHAPES:
        m = max(1, m // args.scale)
        calls = gemms(m, k, n, args.threads)
        times = {name: [] for name in LIBRARIES}
        for _ in range(ROUNDS):  # rounds of each library's calls in turn, so drift hits all alike
            for name, call in calls.items():
                time.sleep(args.pause)  # the previous library's spinning worker threads go idle
                with blas_threads(args.threads):
                    call()  # warm-up
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        call()
                        times[name].append(time.perf_counter() - start)
        flop = 2.0 * m * k * n
        flops += flop
        rates[(m, k, n)] = {}
        for name in LIBRARIES:
            median = statistics.median(times[name])
            seconds[name] += median
            rates[(m, k, n)][name] = flop / median / 1e9
    overall = {name: flops / seconds[name] / 1e9 for name in LIBRARIES}
    return {"rates": rates, "overall": overall}


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    print(f"fp32 GEMM, GFLOP/s, {args.threads} thread(s), median of {ROUNDS} x {args.repeats} calls")
    print("| (M, K, N) | " + " | ".join(LIBRARIES) + " |")
    print("| --- |" + " ---: |" * len(LIBRARIES))
    for shape, row in result["rates"].items():
        print(f"| {shape} | " + " | ".join(f"{row[name]:.1f}" for name in LIBRARIES) + " |")
    print("| all, FLOP-weighted | " + " | ".join(f"{result['overall'][n]:.1f}" for n in LIBRARIES) + " |")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
