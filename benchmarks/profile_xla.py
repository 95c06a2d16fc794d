"""Where JAX's training step spends its time, by XLA thunk (fusion), on CPU.

    KERAS_BACKEND=jax python benchmarks/profile_xla.py --model sequencer2d_s --batch 8 --img-size 224

Compiles the gradient of the cross-entropy loss of ``model(x, training=True)``
(``jax.jit(jax.grad)`` of ``stateless_call``, what a training step runs
before the optimizer) and runs it under ``jax.profiler.trace``. XLA's CPU
runtime records every thunk it executes (a fusion, a GEMM, a copy, a loop)
with its HLO name; this script sums their wall time per HLO instruction and
sorts each into a category read from the compiled HLO module:

- ``GEMM``: ``dot`` / ``convolution`` instructions, and fusions or library
  calls (YNNPACK, oneDNN, Eigen custom calls) that contain one;
- ``element-wise``: loop fusions without a reduction;
- ``reduction``: fusions with a ``reduce`` (LayerNorm statistics, bias and
  weight-gradient sums);
- ``copy / layout``: ``copy``, ``transpose``, ``concatenate``, ``slice``,
  ``dynamic-slice`` / ``dynamic-update-slice`` (a scan's per-step reads and
  writes) and other data movement;
- ``loop control``: ``while`` / ``call`` / ``conditional`` thunks, whose own
  time holds their body's thunks (so it is not added to the total).

Each row also says which part of the step the instruction belongs to, from
its ``op_name`` metadata: ``backward`` for JAX's transposed (``transpose(``)
ops and the recurrence's hand-written VJP (``bwd``), ``forward`` otherwise.
The thunk times are summed over ``--steps`` profiled calls and divided by
them; ``wall`` is the median unprofiled call. The runtime may run
independent thunks at once on its threads, so their sum can exceed the wall
time; a thunk's own work may use several threads.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ("GEMM", "element-wise", "reduction", "copy / layout", "other")
_GEMM_OPS = ("dot", "convolution")
_LAYOUT_OPS = (
    "copy",
    "transpose",
    "concatenate",
    "slice",
    "dynamic-slice",
    "dynamic-update-slice",
    "pad",
    "reverse",
    "broadcast",
    "bitcast",
    "reshape",
    "gather",
    "scatter",
)
_CONTROL_OPS = ("while", "call", "conditional")
_GEMM_CALL = re.compile(r"matmul|gemm|dot|onednn|ynn", re.I)  # a library call that multiplies
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*([^=]*?)\s([a-z][\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text):
    """``{computation: [(name, opcode, rest of line)]}`` of an HLO module's text,
    and ``{instruction: its shape}``."""
    computations, shapes, current = {}, {}, None
    for line in text.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match and "=" not in line.split("{")[0].split("(")[0]:
                current = computations.setdefault(match.group(1), [])
            continue
        if line.strip() == "}":
            current = None
            continue
        match = _INSTRUCTION.match(re.sub(r"/\*.*?\*/", "", line))
        if match:
            name, shape, opcode, rest = match.groups()
            current.append((name, opcode, rest))
            shapes[name] = re.sub(r"\{[^{}]*\}", "", shape)  # without layouts
    return computations, shapes


def _called(rest):
    """The computations an instruction calls (``calls=``, ``to_apply=``, ``body=`` ...)."""
    return re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", rest)


def _opcodes(computations, name, seen=None):
    """Every opcode inside computation ``name`` and what it calls."""
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    ops = set()
    for _, opcode, rest in computations.get(name, ()):
        ops.add(opcode)
        if opcode not in _CONTROL_OPS:
            for callee in _called(rest):
                ops |= _opcodes(computations, callee, seen)
    return ops


def sublayer(op_name):
    """The layer an ``op_name`` belongs to, below the model's: ``"rnn_tokens"``,
    ``"norm1"``, ``"mlp_fc1"`` ... of a block (``"gelu"`` for its ``erfc``),
    or the top-level layer (``"stem"``, ``"head"`` ...)."""
    names = [re.sub(r"^(?:transpose\()?(?:jvp\()?([^()]*)\)*$", r"\1", n) for n in op_name.split("/")[1:]]
    if not names:
        return "other"
    if re.match(r"stages_\d+_blocks_\d+$", names[0]) and len(names) > 1:
        return "gelu" if names[1] == "erfc" else names[1]
    return re.sub(r"^stages_\d+_", "", names[0])


def classify(computations):
    """``{instruction: (category, part, layer)}`` for every instruction of the
    module; ``category`` is one of :data:`CATEGORIES` or ``"loop control"``,
    ``part`` ``"forward"`` or ``"backward"``, ``layer`` its :func:`sublayer`."""
    kinds = {}
    for instructions in computations.values():
        for name, opcode, rest in instructions:
            ops = {opcode}
            if opcode in ("fusion", "custom-call"):
                for callee in _called(rest):
                    ops |= _opcodes(computations, callee)
            if opcode in _CONTROL_OPS:
                category = "loop control"
            elif ops & set(_GEMM_OPS) or (opcode == "custom-call" and _GEMM_CALL.search(rest)):
                category = "GEMM"
            elif "reduce" in ops or "reduce-window" in ops:
                category = "reduction"
            elif ops <= set(_LAYOUT_OPS) | {"fusion", "parameter", "constant", "tuple", "get-tuple-element"}:
                category = "copy / layout"
            elif opcode == "fusion" or ops - set(_LAYOUT_OPS):
                category = "element-wise"
            else:
                category = "other"
            op_name = re.search(r'op_name="([^"]*)"', rest)
            op_name = op_name.group(1) if op_name else ""
            part = "backward" if ("transpose(" in op_name or "bwd" in op_name) else "forward"
            kinds[name] = (category, part, sublayer(op_name))
    return kinds


def thunk_times(trace_dir):
    """``{hlo instruction: seconds}`` summed over a ``jax.profiler.trace`` folder's
    perfetto trace: each thunk's own event (XLA's CPU runtime records one per
    thunk it runs, with ``args.hlo_op``). Its later ``end:`` event marks when
    the runtime saw an asynchronous thunk complete, not its work, so it is not
    counted."""
    files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}: the JAX profiler wrote no trace.")
    with gzip.open(files[0]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    times = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and "hlo_op" in event.get("args", {}) and not event["name"].startswith("end: "):
            times[event["args"]["hlo_op"]] += event.get("dur", 0) * 1e-6
    if not times:
        raise SystemExit(
            f"the trace under {trace_dir} has no XLA thunk events (args.hlo_op): this jaxlib's CPU "
            "runtime does not record them; profile with another jaxlib."
        )
    return times


def profile(args):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    import keras_sequencer

    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (args.batch, args.img_size, args.img_size, 3)).astype("float32")
    y = rng.randint(0, 1000, (args.batch,)).astype("int64")
    model = keras_sequencer.create_model(
        args.model, input_shape=(args.img_size, args.img_size, 3), classifier_activation=None
    )
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss_fn(trainable, frozen):
        logits, _ = model.stateless_call(trainable, frozen, x, training=True)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    compiled = jax.jit(jax.grad(loss_fn)).lower(trainable, frozen).compile()
    computations, shapes = parse_hlo(compiled.as_text())
    kinds = classify(computations)
    run = lambda: jax.block_until_ready(compiled(trainable, frozen))  # noqa: E731
    run()
    walls = []
    for _ in range(args.steps):
        start = time.perf_counter()
        run()
        walls.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as scratch:
        trace_dir = args.trace_dir or scratch
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                run()
        times = thunk_times(trace_dir)
    rows = []
    for name, seconds in times.items():
        category, part, layer = kinds.get(name, ("other", "forward", "other"))
        rows.append(
            {
                "name": name,
                "category": category,
                "part": part,
                "layer": layer,
                "shape": shapes.get(name, ""),
                "seconds": seconds / args.steps,
            }
        )
    return {"wall": statistics.median(walls), "rows": rows, "threads": os.cpu_count()}


def table(result, top):
    """The report: seconds per category and part, then the ``top`` slowest instructions."""
    rows = [r for r in result["rows"] if r["category"] != "loop control"]
    total = sum(r["seconds"] for r in rows)
    lines = [
        f"wall (median unprofiled call): {result['wall']:.3f} s; thunks summed: {total:.3f} s",
        "",
        "| category | forward s | backward s | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    for category in CATEGORIES:
        of_category = [r for r in rows if r["category"] == category]
        parts = [sum(r["seconds"] for r in of_category if r["part"] == p) for p in ("forward", "backward")]
        if sum(parts):
            lines.append(f"| {category} | {parts[0]:.3f} | {parts[1]:.3f} | {sum(parts) / total:.0%} |")
    lines += ["", "| layer | forward s | backward s | of it GEMM s |", "| --- | ---: | ---: | ---: |"]
    by_layer = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        by_layer[r["layer"]][r["part"] == "backward"] += r["seconds"]
        by_layer[r["layer"]][2] += r["seconds"] if r["category"] == "GEMM" else 0.0
    for layer, (forward, backward, gemm) in sorted(by_layer.items(), key=lambda kv: -sum(kv[1][:2])):
        lines.append(f"| {layer} | {forward:.3f} | {backward:.3f} | {gemm:.3f} |")
    lines += ["", f"| the {top} slowest instructions | shape | category | part | layer | s per call |"]
    lines.append("| --- | --- | --- | --- | --- | ---: |")
    for r in sorted(rows, key=lambda r: -r["seconds"])[:top]:
        shape = r.get("shape", "")
        lines.append(f"| {r['name']} | {shape} | {r['category']} | {r['part']} | {r['layer']} | {r['seconds']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2, help="profiled calls (and as many timed ones)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--trace-dir", default=None, help="keep the profiler's trace here (for Perfetto / TensorBoard)")
    args = parser.parse_args(argv)
    result = profile(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result, args.top))


if __name__ == "__main__":
    main()
