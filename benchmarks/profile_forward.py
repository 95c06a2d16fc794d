"""Where a forward pass spends its time: timm against keras-sequencer on the torch backend.

    python benchmarks/profile_forward.py --model sequencer2d_s --batch 8 --img-size 224

Runs timm's model and the Keras model (``--implementations``, default ``fused``)
in one process (``KERAS_BACKEND=torch``) under ``torch.profiler`` with input shapes
recorded, after warm-up, and prints per engine. By default gradients are off, as
in inference; ``--autograd`` profiles with gradients on (the forward half of a
training step, which also keeps what the backward needs). Either way the fused
path runs its batched recurrence (``keras_sequencer/kernels/torch_lstm.py``); timm runs
oneDNN's LSTM.

- the wall time of the profiled forward pass (median of ``--repeats`` unprofiled
  calls is printed too, as the profiler adds overhead);
- the self CPU time of the aten ops, by category (dense GEMMs, the recurrent
  GEMMs, oneDNN's fused LSTM, copies / layout, element-wise, normalization,
  convolution, other), and "Python / dispatch": wall time not spent in any op;
- the dense GEMMs' FLOPs (``2*M*K*N`` from the recorded shapes) and the rate
  they ran at, and the lower bound it implies: the time of timm's dense GEMMs
  plus its LSTM layer's input projections and its patch-embedding convolutions
  (the same FLOPs in every implementation; ours runs them all as GEMMs) at the
  best rate measured, which no fp32 implementation on
  this machine can go under without faster GEMMs.

The numbers are for this machine at this moment; ``benchmarks/RESULTS.md``
records a run.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# mkldnn::_linear_pointwise: oneDNN's linear, which the fused path runs where
# keras_sequencer.kernels.torch_gemm chooses it (AMD CPUs), the residual add fused or not.
DENSE_GEMM = ("aten::mm", "aten::addmm", "aten::addmm_", "mkldnn::_linear_pointwise")
CATEGORIES = {
    "dense GEMM (mm, addmm, addmm_, oneDNN linear)": DENSE_GEMM,
    "recurrent GEMM (bmm, baddbmm)": ("aten::bmm", "aten::baddbmm", "aten::baddbmm_"),
    "oneDNN LSTM": ("aten::mkldnn_rnn_layer",),
    "copies / layout": (
        "aten::copy_",
        "aten::cat",
        "aten::clone",
        "aten::contiguous",
        "aten::flip",
        "aten::index_select",
    ),
    "element-wise": (
        "aten::add",
        "aten::mul",
        "aten::sigmoid",
        "aten::tanh",
        "aten::gelu",
        "aten::addcmul",
        "aten::add_",
        "aten::mul_",
        "aten::sigmoid_",
        "aten::tanh_",
    ),
    "normalization": ("aten::native_layer_norm",),
    "convolution": ("aten::mkldnn_convolution", "aten::_convolution"),
}


def gemm_flops(name, shapes):
    """FLOPs of one (batched) GEMM event, or of a ``conv2d`` (timm's patch
    embeddings, kernel = stride; ours run as GEMMs), from its recorded input
    shapes (0 for other ops)."""
    if name == "aten::conv2d" and len(shapes) >= 2 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (batch, _, height, width), (filters, channels, kh, kw) = shapes[0], shapes[1]
        return 2 * batch * (height // kh) * (width // kw) * filters * channels * kh * kw
    if len(shapes) < 2 or not all(shapes[:3]):
        return 0
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name in ("aten::addmm", "aten::addmm_"):
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if name == "mkldnn::_linear_pointwise":  # (x, weight (N, K), bias, ...) or (x, other, weight, bias, ...)
        weight = shapes[1] if len(shapes[2]) == 1 else shapes[2]
        (m, k), (n, _) = shapes[0], weight
        return 2 * m * k * n
    if name in ("aten::bmm", "aten::baddbmm"):
        a, b = (shapes[0], shapes[1]) if name == "aten::bmm" else (shapes[1], shapes[2])
        return 2 * a[0] * a[1] * a[2] * b[2]
    return 0


def lstm_projection_flops(model, batch, tokens_per_stage):
    """FLOPs of the input projections ``x @ W_ih`` of timm's LSTMs (inside
    ``mkldnn_rnn_layer``, so not in the GEMM events): per token, per LSTM
    direction, ``2 * C * 4U``."""
    import torch

    flops = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LSTM):
            stage = int(name.split(".")[1])
            directions = 2 if module.bidirectional else 1
            flops += 2 * batch * tokens_per_stage[stage] * directions * module.input_size * 4 * module.hidden_size
    return flops


def profile(fn, repeats):
    """Returns (median wall s, profiled wall s, {op name: (self s, gemm flops)})."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(2):
        fn()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        fn()
        profiled_wall = time.perf_counter() - start
    ops = {}
    for event in prof.events():
        self_s, flops = ops.get(event.name, (0.0, 0))
        ops[event.name] = (
            self_s + event.self_cpu_time_total / 1e6,
            flops + gemm_flops(event.name, event.input_shapes or []),
        )
    return statistics.median(walls), profiled_wall, ops


def breakdown(ops, wall):
    rows = {}
    for label, names in CATEGORIES.items():
        rows[label] = sum(ops.get(n, (0.0,))[0] for n in names)
    op_total = sum(v[0] for v in ops.values())
    rows["other ops"] = op_total - sum(v for v in rows.values())
    rows["Python / dispatch (wall - ops)"] = max(wall - op_total, 0.0)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--implementations", default="fused")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--autograd", action="store_true", help="profile with gradients on (the training forward pass)")
    args = parser.parse_args(argv)

    os.environ["KERAS_BACKEND"] = "torch"
    sys.path.insert(0, ROOT)
    import timm  # before keras: see tests/conftest.py
    import torch

    import keras_sequencer

    images = torch.rand(args.batch, 3, args.img_size, args.img_size)
    reference = timm.create_model(args.model, pretrained=False).eval()
    engines = {"timm": lambda: reference(images)}
    nhwc = images.permute(0, 2, 3, 1).contiguous()
    for impl in args.implementations.split(","):
        model = keras_sequencer.create_model(args.model, implementation=impl)
        engines[f"torch:{impl}"] = lambda model=model: model(nhwc, training=False)

    with torch.set_grad_enabled(args.autograd):
        results = {name: profile(fn, args.repeats) for name, fn in engines.items()}
    rows = {name: breakdown(ops, wall) for name, (_, wall, ops) in results.items()}

    names = list(engines)
    print(
        f"{args.model}, batch {args.batch}, {args.img_size}x{args.img_size}, fp32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"gradients {'on' if args.autograd else 'off'}; ms per forward pass"
    )
    print("| | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    print("| wall, median of unprofiled calls | " + " | ".join(f"{results[n][0] * 1e3:.0f}" for n in names) + " |")
    print("| wall, profiled call | " + " | ".join(f"{results[n][1] * 1e3:.0f}" for n in names) + " |")
    for label in rows[names[0]]:
        print(f"| {label} | " + " | ".join(f"{rows[n][label] * 1e3:.0f}" for n in names) + " |")

    rates, dense_flops = {}, {}
    for n in names:
        ops = results[n][2]
        seconds = sum(ops.get(op, (0.0,))[0] for op in DENSE_GEMM)
        flops = sum(ops.get(op, (0, 0))[1] for op in DENSE_GEMM)
        rates[n] = flops / seconds if seconds else 0.0
        dense_flops[n] = flops
        print(f"{n}: dense GEMMs {flops / 1e9:.1f} GFLOP in {seconds * 1e3:.0f} ms = {rates[n] / 1e9:.0f} GFLOP/s")

    strides = keras_sequencer.registry.MODEL_REGISTRY[args.model].arch["patch_sizes"]
    grid, tokens = args.img_size, []
    for stride in strides:
        grid //= stride
        tokens.append(grid * grid)
    timm_ops = results["timm"][2]
    fixed = sum(timm_ops.get(op, (0, 0))[1] for op in DENSE_GEMM)
    fixed += lstm_projection_flops(reference, args.batch, tokens)
    fixed += timm_ops.get("aten::conv2d", (0, 0))[1]  # the patch embeddings (GEMMs in ours)
    best = max(rates.values())
    floor = fixed / best
    timm_wall = results["timm"][0]
    print(
        f"dense + LSTM-input-projection + patch-embedding GEMMs: {fixed / 1e9:.1f} GFLOP; "
        f"at the best rate measured ({best / 1e9:.0f} GFLOP/s) {floor * 1e3:.0f} ms, i.e. any fp32 "
        f"implementation here is at most {timm_wall / floor:.2f}x timm "
        f"({timm_wall * 1e3:.0f} ms) even if everything else cost nothing"
    )
    return dict(breakdown=rows, dense_flops=dense_flops, fixed_flops=fixed, bound=timm_wall / floor)


if __name__ == "__main__":
    main()
