"""Serving throughput on CPU, side by side in one run: timm (torch eager),
each Keras backend (default construction) and the model exported to ONNX run
by onnxruntime, at several batch sizes.

    python benchmarks/serving.py --model sequencer2d_s --img-size 224 --batches 1,8

timm and the Keras backends are :mod:`benchmarks.throughput`'s engines
(``--mode infer``, fp32, one subprocess each, ``predict_on_batch`` for Keras,
``torch.no_grad`` for timm), run through its ``main`` once per batch size.
The ONNX engine is a subprocess of its own: it builds the same Keras model
(on ``--export-backend``), exports it with ``model.export(path,
format="onnx")``, checks onnxruntime's output against ``model.predict``,
then times ``InferenceSession.run`` on the CPU provider the same way (first
call, ``--warmup`` untimed calls, ``--repeats`` timed ones; images/s is
``batch / median``). Every engine runs ``--rounds`` times, each round a
fresh process, and the median is over all rounds' timed calls. Weights are
random: only the speed is measured.

Prints one markdown table, images/s per batch size and the ratio to timm,
and writes the raw numbers as JSON (``--output``). Exits with 1 if an
engine failed (its row says why).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import throughput  # noqa: E402

ONNX_LABEL = "onnxruntime"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument(
        "--export-backend",
        default="tensorflow",
        choices=throughput.KERAS_BACKENDS,
        help="Keras backend the ONNX model is exported from",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per batch size (each engine a fresh process per round); medians over all rounds' timed calls",
    )
    parser.add_argument("--output", default=None, help="JSON path (default: a file under benchmarks/results/)")
    parser.add_argument("--onnx-worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -------------------------------------------------------------- onnx worker --
def onnx_worker(args, output):
    """Exports the model to ONNX and times onnxruntime at every batch size;
    writes ``{batch: run}`` (``throughput`` worker fields) to ``output``."""
    import resource

    import keras
    import numpy as np
    import onnxruntime

    from keras_sequencer.models import MODEL_CONFIGS, Sequencer2D

    model = Sequencer2D(
        **MODEL_CONFIGS[args.model],
        input_shape=(args.img_size, args.img_size, 3),
        classifier_activation=None,
        name=args.model,
    )
    runs = {}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        start = time.perf_counter()
        model.export(path, format="onnx", verbose=False)
        export_s = time.perf_counter() - start
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in args.batches:
            images = np.random.RandomState(0).uniform(-1, 1, (batch, args.img_size, args.img_size, 3))
            images = images.astype("float32")
            start = time.perf_counter()
            (logits,) = session.run(None, {name: images})
            compile_s = time.perf_counter() - start
            for _ in range(args.warmup):
                session.run(None, {name: images})
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                session.run(None, {name: images})
                times.append(time.perf_counter() - start)
            expected = keras.ops.convert_to_numpy(model(images, training=False))
            runs[batch] = {
                "compile_s": compile_s,
                "step_s": times,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
                "max_difference": float(np.abs(logits - expected).max()),
                "export_s": export_s,
                "versions": {"onnxruntime": onnxruntime.__version__, "keras": keras.__version__},
            }
    with open(output, "w") as f:
        json.dump(runs, f)


def run_onnx(args):
    """The ONNX engine's ``{batch: run}``, from its own subprocess (errors as runs)."""
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND=args.export_backend,
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
    )
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--onnx-worker",
        out_path,
        "--model",
        args.model,
        "--img-size",
        str(args.img_size),
        "--batches",
        ",".join(map(str, args.batches)),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            return {b: {"error": f"exit {proc.returncode}: {tail}"} for b in args.batches}
        with open(out_path) as f:
            return {int(b): run for b, run in json.load(f).items()}
    finally:
        os.unlink(out_path)


# ------------------------------------------------------------------- driver --
def format_table(rows, batches):
    """``rows``: ``{label: {batch: summarized row}}`` (timm first) -> markdown:
    per batch size images/s and the ratio to timm."""
    header = "| engine |" + "".join(f" batch {b} img/s | batch {b} vs timm |" for b in batches)
    lines = [header, "| --- |" + " ---: | ---: |" * len(batches)]
    for label, per_batch in rows.items():
        cells = []
        for batch in batches:
            row, ref = per_batch[batch], rows.get("timm", {}).get(batch)
            if "error" in row:
                cells += [f"error: {row['error'].splitlines()[-1][:60]}", ""]
                continue
            ips = batch / row["step_s_median"]
            ratio = "-" if ref is None or "error" in ref else f"{ips * ref['step_s_median'] / batch:.2f}x"
            cells += [f"{ips:.2f}", ratio]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.onnx_worker:
        return onnx_worker(args, args.onnx_worker)
    print(f"# serving {args.model} {args.img_size}px fp32 CPU, batches {args.batches}", flush=True)
    rows, raw = {}, {}
    for batch in args.batches:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        try:
            throughput.main(
                [
                    "--model",
                    args.model,
                    "--batch",
                    str(batch),
                    "--img-size",
                    str(args.img_size),
                    "--mode",
                    "infer",
                    "--backends",
                    args.backends,
                    "--reference",
                    "timm",
                    "--implementation",
                    "",
                    "--warmup",
                    str(args.warmup),
                    "--repeats",
                    str(args.repeats),
                    "--rounds",
                    str(args.rounds),
                    "--output",
                    path,
                    "--no-bound",  # the serving table has no bound column
                ]
            )
            with open(path) as f:
                report = json.load(f)
        finally:
            os.unlink(path)
        raw[f"throughput_batch_{batch}"] = report
        for row in report["rows"]:
            rows.setdefault(row["label"], {})[batch] = row
    onnx_rounds = [run_onnx(args) for _ in range(args.rounds)]
    raw["onnx"] = onnx_rounds
    rows[ONNX_LABEL] = {b: throughput.summarize(ONNX_LABEL, [runs[b] for runs in onnx_rounds]) for b in args.batches}
    for round_index, onnx_runs in enumerate(onnx_rounds, 1):
        for batch in args.batches:
            run = onnx_runs[batch]
            status = run.get("error", "").splitlines()[-1:] or [
                f"{batch / statistics.median(run['step_s']):.2f} img/s, max |onnx - keras| {run['max_difference']:.1e}"
            ]
            print(f"  round {round_index} {ONNX_LABEL} batch {batch}: {status[0]}", flush=True)
    table = format_table(rows, args.batches)
    machine = dict(raw[f"throughput_batch_{args.batches[0]}"]["machine"])  # cpu model, cores, load
    machine["loadavg_end"] = os.getloadavg()
    print(table)
    path = args.output
    if path is None:
        os.makedirs(throughput.RESULTS_DIR, exist_ok=True)
        path = os.path.join(
            throughput.RESULTS_DIR, f"serving_{args.model}_{args.img_size}_{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
    with open(path, "w") as f:
        json.dump(
            {
                "args": {k: v for k, v in vars(args).items() if k != "onnx_worker"},
                "machine": machine,
                "rows": {k: {str(b): r for b, r in v.items()} for k, v in rows.items()},
                "raw": raw,
                "table": table,
            },
            f,
            indent=1,
        )
    print(f"wrote {path}")
    failed = [label for label, per_batch in rows.items() if any("error" in r for r in per_batch.values())]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
