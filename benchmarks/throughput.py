"""Throughput of keras-sequencer on each Keras backend against timm (PyTorch eager).

    python benchmarks/throughput.py --model sequencer2d_s --batch 8 --img-size 224 \
        --mode infer --backends jax,tensorflow,torch --reference timm

Every engine (each Keras backend, and timm) runs in its own subprocess (the Keras
backend is fixed per process), and the engines are run interleaved ``--rounds``
times so that load on a shared machine hits them alike. In each subprocess:

- ``compile_s``: wall time of the first call (tracing/compilation + one step);
- ``warmup`` more untimed calls, then ``repeats`` timed calls; ``images/s`` is
  ``batch / median(step time)`` over the timed calls of all rounds;
- ``peak_rss_mb``: the subprocess's peak resident memory (``ru_maxrss``:
  framework + model + activations, on CPU) and, on a GPU, the framework's peak
  device memory where it reports one (torch, jax).

``--mode infer`` calls the compiled predict function (Keras ``predict_on_batch``;
timm ``model.eval()`` under ``torch.no_grad``). ``--mode train`` is one step of
forward + backward + AdamW update on cross-entropy (Keras ``train_on_batch``
after ``compile(AdamW)``; timm ``loss.backward()`` + ``torch.optim.AdamW``).
``--device gpu`` runs on the GPU, ``--precision mixed`` uses Keras'
``mixed_float16`` policy and ``torch.autocast(float16)`` (+ ``GradScaler``) for timm.

Prints a table with the ratio of each engine's images/s to the reference's and
writes the raw numbers as JSON to ``benchmarks/results/`` (git-ignored). Exits
with 1 if any engine failed (its row says why).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
KERAS_BACKENDS = ("jax", "tensorflow", "torch")
# --precision -> Keras dtype policy (timm runs torch.autocast in the same 16-bit type)
PRECISION_POLICIES = {"mixed": "mixed_float16", "bf16": "mixed_bfloat16"}


# ------------------------------------------------------------------ worker --
def _peak_rss_mb():
    import resource

    # Linux reports kilobytes, macOS bytes.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _time_steps(step, sync, args):
    """Returns (first-call seconds, [timed step seconds])."""
    start = time.perf_counter()
    sync(step())
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        sync(step())
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - start)
    return compile_s, times


def _data(args, num_classes=1000):
    import numpy as np

    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (args.batch, args.img_size, args.img_size, 3)).astype("float32")
    labels = rng.randint(0, num_classes, (args.batch,)).astype("int64")
    return images, labels


def _run_timm(args):
    import timm
    import torch

    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    model = timm.create_model(args.model, pretrained=False).to(device)
    images, labels = _data(args)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labels).to(device)
    amp = args.precision in ("mixed", "bf16")
    amp_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp)  # noqa: E731

    if args.mode == "infer":
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                return model(x)

    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "mixed")
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss

    def sync(out):
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    compile_s, times = _time_steps(step, sync, args)
    extra = {
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
    }
    if device.type == "cuda":
        extra["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return compile_s, times, extra


def _run_keras(args, backend):
    import keras

    sys.path.insert(0, ROOT)
    from keras_sequencer.models import MODEL_CONFIGS, Sequencer2D

    if args.precision in PRECISION_POLICIES:
        keras.mixed_precision.set_global_policy(PRECISION_POLICIES[args.precision])
    if args.model not in MODEL_CONFIGS:
        raise SystemExit(f"Unknown model {args.model!r}; expected one of {sorted(MODEL_CONFIGS)}.")
    default = args.implementation in (None, "default")  # the builder's own default
    kwargs = {} if default else {"implementation": args.implementation}
    model = Sequencer2D(
        **MODEL_CONFIGS[args.model],
        input_shape=(args.img_size, args.img_size, 3),
        classifier_activation=None,
        name=args.model,
        **kwargs,
    )
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    images, labels = _data(args)
    x = keras.ops.convert_to_tensor(images)
    y = keras.ops.convert_to_tensor(labels)
    if args.mode == "infer":
        model.compile(jit_compile=jit)

        def step():
            return model.predict_on_batch(x)

    else:
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )

        def step():
            return model.train_on_batch(x, y)

    compile_s, times = _time_steps(step, lambda out: out, args)
    extra = {"jit_compile": bool(model.jit_compile), "versions": {"keras": keras.__version__}}
    extra["resolved"] = sorted(set(model.implementations.values()))
    if backend == "torch":
        import torch

        extra["torch_threads"] = torch.get_num_threads()
        extra["versions"]["torch"] = torch.__version__
        if args.device == "gpu":
            extra["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    elif backend == "jax":
        import jax

        extra["versions"]["jax"] = jax.__version__
        if args.device == "gpu":
            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                extra["peak_device_mb"] = stats["peak_bytes_in_use"] / 2**20
    else:
        import tensorflow as tf

        extra["versions"]["tensorflow"] = tf.__version__
    return compile_s, times, extra


def worker(args):
    if args.engine == "gemm":
        with open(args.worker_output, "w") as f:
            json.dump(_run_gemm_peak(args), f)
        return 0
    start = time.perf_counter()
    if args.engine == "timm":
        compile_s, times, extra = _run_timm(args)
    else:
        compile_s, times, extra = _run_keras(args, args.engine)
    result = {
        "engine": args.engine,
        "implementation": args.implementation,
        "compile_s": compile_s,
        "step_s": times,
        "peak_rss_mb": _peak_rss_mb(),
        "process_s": time.perf_counter() - start,
        **extra,
    }
    with open(args.worker_output, "w") as f:
        json.dump(result, f)


# -------------------------------------------------------------- the bound --
# Gates per recurrent cell: the input projection is (C, gates * U).
RNN_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# The dense GEMMs of a training step: the forward's, then the input and the weight gradient of each.
TRAIN_GEMM_FACTOR = 3


def load_variants():
    """:mod:`keras_sequencer.variants` from its file: the table needs no Keras,
    so the driver stays free of any backend."""
    import importlib.util

    path = os.path.join(ROOT, "keras_sequencer", "variants.py")
    spec = importlib.util.spec_from_file_location("keras_sequencer_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dense_gemm_flops(arch, batch, img_size, classes=1000):
    """FLOPs (``2*M*K*N`` each) of the dense GEMMs of one Sequencer2D forward
    on ``batch`` images of ``img_size`` pixels: the patch embeddings (a GEMM
    over the flattened patches), the RNNs' input projections (both axes, both
    directions), the BiLSTM2D's ``fc``, the two MLP layers and the head.

    The same FLOPs in timm and in every engine of ours; the recurrent GEMMs
    (``h @ W_hh``, one per step) and the element-wise work are left out, so
    this count at the machine's GEMM peak is a time no fp32 implementation
    can go under. ``arch``: a :data:`MODEL_CONFIGS` entry (2-D token mixer)."""
    if arch.get("token_mixer", "2d") != "2d":
        raise SystemExit("the GEMM bound counts Sequencer2D (2-D token mixer) models only")
    gates = RNN_GATES[arch.get("rnn_type", "lstm")]
    directions = 2 if arch.get("bidirectional", True) else 1
    union = arch.get("union", "cat")
    axes = 1 if union in ("vertical", "horizontal") else 2
    rnn_out = directions * (axes if union == "cat" else 1)
    size, channels, flops = img_size, 3, 0
    stages = zip(arch["layers"], arch["patch_sizes"], arch["embed_dims"], arch["hidden_sizes"], arch["mlp_ratios"])
    for depth, patch, dim, hidden, ratio in stages:
        size //= patch
        tokens = batch * size * size
        flops += 2 * tokens * patch * patch * channels * dim
        channels = dim
        block = 2 * tokens * axes * directions * dim * gates * hidden
        if arch.get("with_fc", True):
            block += 2 * tokens * rnn_out * hidden * dim
        block += 2 * 2 * tokens * dim * int(ratio * dim)
        flops += depth * block
    return flops + 2 * batch * channels * classes


def _gemm_shapes(arch, batch, img_size):
    """(M, K, N) of the fp32 GEMMs timed for the peak: a square one and the
    model's largest dense one (the first stage's input projection)."""
    tokens = batch * (img_size // arch["patch_sizes"][0]) ** 2
    gates = RNN_GATES[arch.get("rnn_type", "lstm")]
    return [(2048, 2048, 2048), (tokens, arch["embed_dims"][0], gates * arch["hidden_sizes"][0])]


def _run_gemm_peak(args):
    """The best fp32 GEMM rate reached here by torch and by NumPy's BLAS (all
    their threads), over :func:`_gemm_shapes`: each shape timed for at least
    ``max(repeats, 10)`` calls and half a second after one warm-up, the best call."""
    import numpy as np
    import torch

    arch = load_variants().MODEL_CONFIGS[args.model]
    rates = {}
    for m, k, n in _gemm_shapes(arch, args.batch, args.img_size):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for library, matmul, x, y in (("torch", torch.mm, a, b), ("numpy", np.matmul, a.numpy(), b.numpy())):
            matmul(x, y)
            times, start = [], time.perf_counter()
            while len(times) < max(args.repeats, 10) or time.perf_counter() - start < 0.5:
                times.append(_timed(matmul, x, y))
            rates[f"{library} {m}x{k}x{n}"] = 2 * m * k * n / min(times)
    return {"rates": rates, "peak_flops": max(rates.values()), "torch_threads": torch.get_num_threads()}


def _timed(call, *inputs):
    start = time.perf_counter()
    call(*inputs)
    return time.perf_counter() - start


def measure_peak(args):
    """One GEMM-peak measurement (:func:`_run_gemm_peak` in a torch subprocess)
    for ``args``, or ``None`` where no fp32 CPU bound applies (a GPU, a 16-bit
    precision) or it failed (said on one line)."""
    if args.device != "cpu" or args.precision != "fp32":
        return None
    peak = _run_worker(args, "gemm", None)
    if "error" in peak:
        print(f"  GEMM peak not measured: {peak['error'].splitlines()[-1]}", flush=True)
        return None
    return peak


def gemm_bound(args, peaks):
    """{"flops", "peak_flops", "bound_s", "rates"}: ``args``'s dense GEMM FLOPs
    (:func:`dense_gemm_flops`, x3 for a training step) at the best of
    ``peaks`` (:func:`measure_peak` results); ``None`` without one, and where
    no fp32 CPU bound applies (a GPU, a 16-bit precision)."""
    peaks = [p for p in peaks if p]
    if not peaks or args.device != "cpu" or args.precision != "fp32":
        return None
    best = max(peaks, key=lambda p: p["peak_flops"])
    arch = load_variants().MODEL_CONFIGS[args.model]
    flops = dense_gemm_flops(arch, args.batch, args.img_size) * (TRAIN_GEMM_FACTOR if args.mode == "train" else 1)
    return {
        "flops": flops,
        "peak_flops": best["peak_flops"],
        "bound_s": flops / best["peak_flops"],
        "rates": best["rates"],
    }


def bound_lines(rows, bound, reference):
    """What the bound says of each row: the bound as a ratio to the reference
    (the most any engine could reach), and each engine's share of it (its
    time over the bound time's, 100 % = GEMMs at peak and nothing else)."""
    gflop, rate = bound["flops"] / 1e9, bound["peak_flops"] / 1e9
    bound_ms = bound["bound_s"] * 1e3
    lines = [f"GEMM bound: {gflop:.1f} GFLOP of dense GEMMs at {rate:.0f} GFLOP/s (fp32 peak) = {bound_ms:.0f} ms"]
    ref = next((r for r in rows if r["label"] == reference and "error" not in r), None)
    if ref:
        lines.append(f"bound ratio: {ref['step_s_median'] / bound['bound_s']:.2f}x {reference}")
    for row in rows:
        if "error" not in row:
            lines.append(f"  {row['label']}: {100 * bound['bound_s'] / row['step_s_median']:.0f} % of the bound")
    return lines


# ------------------------------------------------------------------ driver --
def _engines(args):
    """[(label, engine, implementation)] in run order: reference first."""
    engines = []
    if args.reference not in ("timm", ""):
        raise SystemExit(f"Unknown reference {args.reference!r}; expected 'timm' or ''.")
    if args.reference:
        engines.append((args.reference, args.reference, None))
    impls = [None if i == "default" else i for i in args.implementation.split(",")] if args.implementation else [None]
    for backend in args.backends.split(","):
        if backend not in KERAS_BACKENDS:
            raise SystemExit(f"Unknown backend {backend!r}; expected some of {KERAS_BACKENDS}.")
        for impl in impls:
            label = backend if impl is None else f"{backend}:{impl}"
            engines.append((label, backend, impl))
    return engines


def _run_worker(args, engine, implementation):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if engine in KERAS_BACKENDS:
        env["KERAS_BACKEND"] = engine
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--worker-output", out_path]
    for key in ("model", "batch", "img_size", "mode", "warmup", "repeats", "device", "precision", "jit_compile"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--implementation", implementation or "default"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            return {"engine": engine, "implementation": implementation, "error": f"exit {proc.returncode}: {tail}"}
        with open(out_path) as f:
            return json.load(f)
    finally:
        os.unlink(out_path)


def machine_info():
    """The machine a result was measured on: ``lscpu``'s model name with the CPU
    family and model (one name covers several generations), the vector
    extensions that decide the fast paths, the core count, Python and the load."""
    info = {"cpu": platform.processor(), "family": None, "model": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info.update(
            cpu=fields.get("model name", info["cpu"]), family=fields.get("cpu family"), model=fields.get("model")
        )
        flags = fields.get("flags", "").split()
        info["flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {**info, "nproc": os.cpu_count(), "python": platform.python_version(), "loadavg": load}


def summarize(label, runs):
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"label": label, "error": errors[0]}
    steps = [t for r in runs for t in r["step_s"]]
    first = runs[0]
    row = {
        "label": label,
        "step_s_median": statistics.median(steps),
        "compile_s_median": statistics.median(r["compile_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "jit_compile": first.get("jit_compile"),
        "versions": first.get("versions", {}),
    }
    if any("peak_device_mb" in r for r in runs):
        row["peak_device_mb"] = max(r.get("peak_device_mb", 0) for r in runs)
    return row


def format_table(rows, batch, reference):
    ref = next((r for r in rows if r["label"] == reference and "error" not in r), None)
    lines = [
        "| engine | images/s | vs timm | step ms | first call s | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['label']} | error: {row['error'].splitlines()[-1][:80]} | | | | |")
            continue
        ips = batch / row["step_s_median"]
        ratio = f"{ips / (batch / ref['step_s_median']):.2f}x" if ref else "-"
        mem = f"{row['peak_rss_mb']:.0f}"
        if "peak_device_mb" in row:
            mem += f" (GPU {row['peak_device_mb']:.0f})"
        lines.append(
            f"| {row['label']} | {ips:.2f} | {ratio} | {1000 * row['step_s_median']:.0f} | "
            f"{row['compile_s_median']:.1f} | {mem} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------- targets --
# (case, measurement, batch multiplier source, mode, precision): "batch" is
# --batch (8 by default), 1 is latency.
CASES = (
    ("infer_b", "inference, batch {batch}", None, "infer", "fp32"),
    ("infer_1", "inference, batch 1", 1, "infer", "fp32"),
    ("train_b", "training step, batch {batch}", None, "train", "fp32"),
    ("bf16_infer_b", "bf16 inference, batch {batch}", None, "infer", "bf16"),
)
# case -> (every Keras backend at least, the best at least) as ratios to timm
TARGETS = {"infer_b": (1.0, None), "infer_1": (1.0, None), "train_b": (1.0, 1.2)}
# case -> every Keras backend at least this share of the GEMM bound's ratio (when it is above TARGETS')
BOUND_SHARE = {"infer_b": 0.85}
# mode -> the longest first call (build + first step, imports excluded), seconds
FIRST_CALL_LIMIT_S = {"train": 30.0, "infer": 10.0}


def judge(case, ratios, first_calls, bound_ratio=None):
    """PASS/MISS per Keras engine and for the best one. ``ratios``: {engine:
    images/s over timm's} (``None`` for a failed engine); ``first_calls``:
    {engine: first-call seconds}; ``bound_ratio``: the GEMM bound as a ratio
    to timm (raises the floor of :data:`BOUND_SHARE`'s cases to that share of
    it). Returns ({engine: verdict}, best verdict or ``""`` when the case has
    no target for the best)."""
    every, best = TARGETS.get(case, (None, None))
    if every is not None and bound_ratio is not None and case in BOUND_SHARE:
        every = max(every, round(BOUND_SHARE[case] * bound_ratio, 2))
    limit = FIRST_CALL_LIMIT_S["train" if case.startswith("train") else "infer"]
    verdicts = {}
    for engine, ratio in ratios.items():
        if ratio is None:
            verdicts[engine] = "MISS (failed)"
            continue
        misses = []
        if every is not None and ratio < every:
            misses.append(f"< {every}x")
        if first_calls.get(engine, 0.0) > limit:
            misses.append(f"first call > {limit:.0f} s")
        verdicts[engine] = (
            "MISS (" + ", ".join(misses) + ")" if misses else ("PASS" if every is not None else "PASS (first call)")
        )
    best_verdict = ""
    if best is not None:
        values = [r for r in ratios.values() if r is not None]
        top = max(values) if values else 0.0
        best_verdict = f"best {top:.2f}x: " + ("PASS" if top >= best else f"MISS (< {best}x)")
    return verdicts, best_verdict


def targets_table(results, batch, bounds=None):
    """The markdown table of :func:`run_targets`: ``results`` is {case:
    [summarize() rows, timm first]}; ``bounds`` {case: :func:`gemm_bound`}
    adds each row's share of the bound and a row with the bound's ratio."""
    bounds = bounds or {}
    lines = [
        "| measurement | engine | images/s | vs timm | of bound | first call s | peak RSS MB | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for case, title, _, _, _ in CASES:
        rows = results.get(case)
        if not rows:
            continue
        size = 1 if case == "infer_1" else batch
        ref = rows[0] if "error" not in rows[0] else None
        ratios, first, ips = {}, {}, {}
        for row in rows[1:]:
            ok = "error" not in row and ref is not None
            ratios[row["label"]] = ref["step_s_median"] / row["step_s_median"] if ok else None
            if "error" not in row:
                first[row["label"]] = row["compile_s_median"]
                ips[row["label"]] = size / row["step_s_median"]
        bound = bounds.get(case)
        bound_ratio = ref["step_s_median"] / bound["bound_s"] if bound and ref else None
        verdicts, best = judge(case, ratios, first, bound_ratio)
        name = title.format(batch=batch)
        for row in rows:
            label = row["label"]
            if "error" in row:
                lines.append(f"| {name} | {label} | error: {row['error'].splitlines()[-1][:60]} | | | | | MISS |")
                continue
            ratio = "1.00x" if row is ref else (f"{ratios[label]:.2f}x" if ratios.get(label) else "-")
            verdict = "" if row is ref else verdicts.get(label, "")
            share = f"{100 * bound['bound_s'] / row['step_s_median']:.0f} %" if bound else ""
            lines.append(
                f"| {name} | {label} | {size / row['step_s_median']:.2f} | {ratio} | {share} | "
                f"{row['compile_s_median']:.1f} | {row['peak_rss_mb']:.0f} | {verdict} |"
            )
        if bound_ratio is not None:
            peak = bound["peak_flops"] / 1e9
            lines.append(f"| {name} | GEMM bound ({peak:.0f} GFLOP/s) | | {bound_ratio:.2f}x | 100 % | | | |")
        if best:
            lines.append(f"| {name} | best Keras backend | | | | | | {best} |")
    return "\n".join(lines)


def run_targets(args):
    """Every case of :data:`CASES` for timm and each of ``--backends`` built
    as ``Sequencer2D...(weights=None)`` with the default ``implementation``,
    ``--rounds`` interleaved rounds each. Prints the table; writes the JSON;
    returns 1 if an engine failed."""
    machine = machine_info()
    print(
        f"# targets: {args.model} {args.img_size}px, {machine['cpu']} x{machine['nproc']}, load {machine['loadavg']}",
        flush=True,
    )
    results, raw, case_peaks = {}, {}, {}
    for case, title, batch, mode, precision in CASES:
        if args.cases and case not in args.cases:
            continue
        case_args = argparse.Namespace(**vars(args))
        case_args.batch = batch or args.batch
        case_args.mode, case_args.precision, case_args.implementation = mode, precision, "default"
        case_args.reference = "timm"
        engines = _engines(case_args)
        runs = {label: [] for label, _, _ in engines}
        peaks = []
        for round_index in range(args.rounds):
            peaks.append(None if args.no_bound else measure_peak(case_args))
            for label, engine, impl in engines:
                result = _run_worker(case_args, engine, impl)
                runs[label].append(result)
                status = result.get("error", "").splitlines()[-1:] or [
                    f"{case_args.batch / statistics.median(result['step_s']):.2f} img/s, "
                    f"first call {result['compile_s']:.1f}s, runs {result.get('resolved', '-')}"
                ]
                print(f"  {title.format(batch=args.batch)} round {round_index + 1} {label}: {status[0]}", flush=True)
        results[case] = [summarize(label, runs[label]) for label, _, _ in engines]
        raw[case] = runs
        case_peaks[case] = (case_args, peaks)
    # the machine's peak is the best of every measurement, whichever case took it
    every_peak = [p for _, peaks in case_peaks.values() for p in peaks]
    bounds = {case: gemm_bound(case_args, every_peak) for case, (case_args, _) in case_peaks.items()}
    table = targets_table(results, args.batch, bounds)
    print(table)
    machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    path = args.output
    if path is None:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = os.path.join(RESULTS_DIR, f"{args.model}_targets_{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
                "machine": machine,
                "rows": results,
                "runs": raw,
                "bounds": bounds,
                "table": table,
            },
            f,
            indent=1,
        )
    print(f"wrote {path} (load average at end {machine['loadavg_end']})")
    failed = [row["label"] for rows in results.values() for row in rows if "error" in row]
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--reference", default="timm", help="'timm', or '' for none")
    parser.add_argument(
        "--implementation",
        default="fused",
        help="BiLSTM2D implementation(s) to run, comma-separated: fused, keras, auto, or "
        "default (the builder's default argument); e.g. keras,fused",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over all engines")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "mixed", "bf16"),
        default="fp32",
        help="mixed: mixed_float16 / autocast float16; bf16: mixed_bfloat16 / autocast bfloat16",
    )
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/<...>.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-bound", action="store_true", help="skip the fp32 GEMM peak and the bound it implies")
    parser.add_argument(
        "--targets",
        action="store_true",
        help="run the target suite (TARGETS): default construction vs timm, inference "
        "batch --batch and 1, training step, bf16 inference; prints PASS/MISS per target",
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="with --targets, only these cases, comma-separated (default: all): "
        + ", ".join(case for case, *_ in CASES),
    )
    args = parser.parse_args(argv)
    if args.cases is not None:
        args.cases = [c for c in args.cases.split(",") if c]
        unknown = sorted(set(args.cases) - {case for case, *_ in CASES})
        if unknown or not args.cases:
            parser.error(
                f"--cases: unknown case(s) {', '.join(unknown) or '(none given)'}; choose from "
                + ", ".join(case for case, *_ in CASES)
            )
    if args.worker:
        args.engine = args.worker
        return worker(args)
    if args.targets:
        return run_targets(args)

    engines = _engines(args)
    runs = {label: [] for label, _, _ in engines}
    machine = machine_info()
    print(
        f"# {args.model} batch {args.batch} {args.img_size}px {args.mode} {args.device} {args.precision}; "
        f"{machine['cpu']} x{machine['nproc']}, load {machine['loadavg']}",
        flush=True,
    )
    peaks = []
    for round_index in range(args.rounds):
        peaks.append(None if args.no_bound else measure_peak(args))
        for label, engine, impl in engines:
            result = _run_worker(args, engine, impl)
            runs[label].append(result)
            status = result.get("error", "").splitlines()[-1:] or [
                f"{args.batch / statistics.median(result['step_s']):.2f} img/s, first call {result['compile_s']:.1f}s"
            ]
            print(f"  round {round_index + 1} {label}: {status[0]}", flush=True)
    rows = [summarize(label, runs[label]) for label, _, _ in engines]
    table = format_table(rows, args.batch, args.reference)
    machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(table)
    bound = gemm_bound(args, peaks)
    if bound:
        print("\n".join(bound_lines(rows, bound, args.reference)))
    report = {
        "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
        "machine": machine,
        "rows": rows,
        "runs": runs,
        "table": table,
        "bound": bound,
    }
    path = args.output
    if path is None:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(
            RESULTS_DIR,
            f"{args.model}_{args.mode}_{args.device}_{args.precision}_b{args.batch}_{args.img_size}_{stamp}.json",
        )
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path} (load average at end {machine['loadavg_end']})")
    failed = [row["label"] for row in rows if "error" in row]
    if failed:
        print(f"failed: {', '.join(failed)} (see the table and the JSON's runs)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
