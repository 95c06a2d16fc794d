"""Where a training step spends its time: each Keras backend against timm, by phase.

    python benchmarks/profile_train.py --model sequencer2d_s --batch 8 --img-size 224

A training step is a forward pass with gradients on, a backward pass and an
AdamW update. Each engine (timm, and the default construction on each Keras
backend) runs in its own subprocess and times three nested functions on the
same batch, each compiled the way that engine compiles its training step:

- ``forward``: the cross-entropy loss of ``model(x, training=True)``, gradients
  on (JAX: ``jax.jit`` of ``stateless_call``; TensorFlow: ``tf.function``
  with the ``jit_compile`` Keras chose for ``train_on_batch``; torch and
  timm: eager under autograd);
- ``forward + backward``: the same and the gradients of every trainable
  weight (``jax.grad``, ``tf.GradientTape``, ``loss.backward()``);
- ``step``: the whole step as users run it (Keras ``train_on_batch`` after
  ``compile(AdamW)``; timm ``loss.backward()`` + ``torch.optim.AdamW``), as in
  ``benchmarks/throughput.py --mode train``.

JAX's first calls are split into tracing, lowering and XLA compilation;
TensorFlow's first training step into tracing ``train_step`` as one
``tf.function`` (with its graph's size) and that function's first run.

Prints, per engine, the first call of each function (tracing + compilation +
one call) and the median of ``--repeats`` calls, and the phases derived from
them: backward = (forward + backward) - forward; update = step - (forward +
backward), which holds the optimizer and the framework's step overhead.
The numbers are for this machine at this moment; ``benchmarks/RESULTS.md``
records a run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("timm", "jax", "tensorflow", "torch")
FUNCTIONS = ("forward", "forward + backward", "step")
TF_SPLIT = "tensorflow train_step (trace s, graph nodes, first run s, second run s)"


def _timed(fn, sync, repeats):
    """(first-call seconds, median seconds of ``repeats`` calls after one more warm-up)."""
    start = time.perf_counter()
    sync(fn())
    first = time.perf_counter() - start
    sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def _batch(args):
    import numpy as np

    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (args.batch, args.img_size, args.img_size, 3)).astype("float32")
    return images, rng.randint(0, 1000, (args.batch,)).astype("int64")


def _timm_functions(args):
    import timm
    import torch

    images, labels = _batch(args)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    model = timm.create_model(args.model, pretrained=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        return loss_fn(model(x), y)

    def forward_backward():
        optimizer.zero_grad(set_to_none=True)
        forward().backward()

    def step():
        forward_backward()
        optimizer.step()

    return {"forward": forward, "forward + backward": forward_backward, "step": step}, lambda out: out


def _compiled_with_split(fn, arguments, splits):
    """``jax.jit(fn)`` compiled ahead of time for ``arguments``; appends to
    ``splits`` the seconds it spent tracing, lowering and compiling (XLA)."""
    import jax

    start = time.perf_counter()
    traced = jax.jit(fn).trace(*arguments)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    splits.append((traced_at - start, lowered_at - traced_at, time.perf_counter() - lowered_at))
    return compiled


def _tensorflow_first_call(model, x, y):
    """TensorFlow's first training step split in two: ``model.train_step`` as
    one ``tf.function`` traced (Python builds the graph: forward, gradients,
    the optimizer's update of every variable), then its first run (the
    runtime's graph passes and kernel creation, plus one step). Returns
    (trace s, graph nodes, first run s, second run s)."""
    import tensorflow as tf

    model.optimizer.build(model.trainable_variables)
    train_step = tf.function(lambda x, y: model.train_step((x, y)), autograph=False)
    start = time.perf_counter()
    concrete = train_step.get_concrete_function(x, y)
    traced = time.perf_counter() - start
    nodes = len(concrete.graph.as_graph_def().node)
    start = time.perf_counter()
    concrete(x, y)
    first = time.perf_counter() - start
    start = time.perf_counter()
    concrete(x, y)
    return traced, nodes, first, time.perf_counter() - start


def _keras_functions(args, backend, splits):
    import keras

    sys.path.insert(0, ROOT)
    import keras_sequencer

    images, labels = _batch(args)
    model = keras_sequencer.create_model(
        args.model, input_shape=(args.img_size, args.img_size, 3), classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)

    def loss_of(logits):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def step():
        return model.train_on_batch(x, y)

    sync = lambda out: out  # noqa: E731
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss_fn(trainable, frozen):
            logits, _ = model.stateless_call(trainable, frozen, x, training=True)
            return loss_of(logits)

        forward_fn, gradient_fn = (
            _compiled_with_split(f, (trainable, frozen), splits) for f in (loss_fn, jax.grad(loss_fn))
        )
        forward = lambda: forward_fn(trainable, frozen)  # noqa: E731
        forward_backward = lambda: gradient_fn(trainable, frozen)  # noqa: E731
        sync = jax.block_until_ready
    elif backend == "tensorflow":
        import tensorflow as tf

        splits.append(("tensorflow first call", _tensorflow_first_call(model, x, y)))
        start = time.perf_counter()
        step()  # lets Keras resolve jit_compile="auto" before the phases copy it
        splits.append(("step first call", time.perf_counter() - start))
        jit = bool(model.jit_compile)

        @tf.function(jit_compile=jit)
        def forward():
            return loss_of(model(x, training=True))

        @tf.function(jit_compile=jit)
        def forward_backward():
            with tf.GradientTape() as tape:
                loss = loss_of(model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

    else:

        def forward():
            return loss_of(model(x, training=True))

        def forward_backward():
            model.zero_grad(set_to_none=True)
            forward().backward()

    return {"forward": forward, "forward + backward": forward_backward, "step": step}, sync


def worker(args):
    splits = []  # JAX: (trace, lower, compile) seconds of forward and of forward + backward
    if args.worker == "timm":
        functions, sync = _timm_functions(args)
    else:
        functions, sync = _keras_functions(args, args.worker, splits)
    timed = {name: _timed(functions[name], sync, args.repeats) for name in FUNCTIONS}
    if splits and splits[0][0] == "tensorflow first call":  # TensorFlow: step ran once already
        timed[TF_SPLIT] = splits.pop(0)[1]
        timed["step"] = (splits.pop()[1], timed["step"][1])
    if splits:  # the ahead-of-time compilation counts in the first call
        timed["forward"] = (timed["forward"][0] + sum(splits[0]), timed["forward"][1])
        timed["forward + backward"] = (timed["forward + backward"][0] + sum(splits[1]), timed["forward + backward"][1])
        timed["jax compilation (trace, lower, XLA compile) s"] = splits
    return timed


def _run(args, engine):
    env = dict(os.environ)
    if engine != "timm":
        env["KERAS_BACKEND"] = engine
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        engine,
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--img-size",
        str(args.img_size),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def table(results):
    """Markdown, ms per call: each function's median and first call, and the phases."""
    engines = list(results)
    ok = [e for e in engines if "error" not in results[e]]
    lines = ["| ms per call | " + " | ".join(engines) + " |", "| --- |" + " ---: |" * len(engines)]

    def row(label, value):
        cells = [f"{value(results[e]):.0f}" if e in ok else results[e]["error"] for e in engines]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for name in FUNCTIONS:
        row(name, lambda r, n=name: 1e3 * r[n][1])
    row("phase: backward", lambda r: 1e3 * (r["forward + backward"][1] - r["forward"][1]))
    row("phase: update (optimizer + step overhead)", lambda r: 1e3 * (r["step"][1] - r["forward + backward"][1]))
    for name in FUNCTIONS:
        row(f"first call: {name}", lambda r, n=name: 1e3 * r[n][0])
    if "timm" in ok:
        base = results["timm"]["step"][1]
        lines.append(
            "| step vs timm | "
            + " | ".join(f"{base / results[e]['step'][1]:.2f}x" if e in ok else "—" for e in engines)
            + " |"
        )
    for r in results.values():
        if TF_SPLIT in r:
            trace, nodes, first, second = r[TF_SPLIT]
            lines.append(
                f"\ntensorflow, train_step as one tf.function: trace {trace:.1f} s ({nodes} graph nodes), "
                f"first run {first:.1f} s, next run {second:.1f} s"
            )
        splits = r.get("jax compilation (trace, lower, XLA compile) s", [])
        for name, (trace, lower, compile_s) in zip(FUNCTIONS, splits):
            lines.append(f"\njax, {name}: trace {trace:.1f} s, lower {lower:.1f} s, XLA compile {compile_s:.1f} s")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--worker", choices=ENGINES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return None
    results = {}
    for engine in args.engines.split(","):
        results[engine] = _run(args, engine)
        print(f"{engine}: {results[engine]}", flush=True)
    print(f"\n{args.model}, batch {args.batch}, {args.img_size}x{args.img_size}, fp32\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
