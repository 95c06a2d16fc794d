"""GPU checks of one Keras backend (``KERAS_BACKEND``), run by ``gpu_check.sh``.

1. ``equal``: the default, ``"keras"`` and ``"fused"`` implementations give
   timm's logits (same random weights, converted) on the device, float32
   with TF32 off.
2. ``cudnn``: the default model's forward pass runs cuDNN's RNN kernel, not a
   loop of small kernels: JAX: the compiled HLO has a ``cudnn_rnn`` custom
   call; torch: the profiler lists a CUDA kernel named RNN/LSTM (cuDNN's); TensorFlow: the traced
   graph has a ``CudnnRNN`` op.
3. ``fit``: two epochs of ``fit`` on all visible GPUs, under
   ``tf.distribute.MirroredStrategy`` (TensorFlow) or
   ``keras.distribution.DataParallel`` (JAX); torch fits on one device
   (Keras has no multi-device strategy for torch).

Without a GPU every check runs on CPU on a tiny model and the report says
``"device": "cpu"`` (check 2 is then reported as not applicable). Prints one
JSON line; exits 1 if a check fails.
"""

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402

from keras_sequencer import Sequencer2D, kernels  # noqa: E402
from keras_sequencer.conversion import load_state_dict  # noqa: E402
from keras_sequencer.datasets import load_digits  # noqa: E402
from keras_sequencer.models import MODEL_CONFIGS  # noqa: E402

TINY = dict(
    layers=(1, 1, 1, 1),
    patch_sizes=(7, 2, 1, 1),
    embed_dims=(16, 24, 24, 24),
    hidden_sizes=(4, 6, 6, 6),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)
BACKEND = keras.backend.backend()


def timm_logits(arch, images, on_gpu):
    import torch
    from timm.models.sequencer import Sequencer2d

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = Sequencer2d(num_classes=10, **arch).eval()
    with torch.no_grad():
        for p in model.parameters():  # every tensor random (timm zeroes the head)
            p.copy_(torch.randn_like(p) * 0.05)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    device = "cuda" if on_gpu else "cpu"
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    with torch.no_grad():
        return model.to(device)(x).cpu().numpy(), state


def timm_in_subprocess(arch, images, on_gpu):
    """:func:`timm_logits` in a torch-only process (torch and TensorFlow in one
    process can crash)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "images.npy"), images)
        env = dict(os.environ, KERAS_BACKEND="torch")
        subprocess.run(
            [sys.executable, __file__, "--timm", tmp, json.dumps(arch), str(int(on_gpu))], env=env, check=True
        )
        saved = np.load(os.path.join(tmp, "timm.npz"))
        return saved["logits"], {k[6:]: saved[k] for k in saved.files if k.startswith("state.")}


def check_equal(arch, size, on_gpu):
    images = np.random.RandomState(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    expected, state = timm_in_subprocess(arch, images, on_gpu)
    errors = {}
    for impl in ("default", "keras", "fused"):
        kwargs = {} if impl == "default" else {"implementation": impl}
        model = Sequencer2D(**arch, input_shape=(size, size, 3), classes=10, classifier_activation=None, **kwargs)
        load_state_dict(model, state)
        errors[impl] = float(np.abs(model.predict_on_batch(images) - expected).max())
    scale = float(np.abs(expected).max())
    return {
        "max_abs_error": errors,
        "timm_max_abs": scale,
        "ok": all(e <= 1e-3 * max(scale, 1.0) for e in errors.values()),
    }


def check_cudnn(arch, size, on_gpu):
    """Whether cuDNN's RNN kernel runs in the default model's forward pass."""
    if not on_gpu:
        return {"ok": True, "applicable": False}
    model = Sequencer2D(**arch, input_shape=(size, size, 3), classes=10)
    x = np.zeros((2, size, size, 3), "float32")
    if BACKEND == "jax":
        import jax

        variables = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]
        hlo = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0]).lower(*variables, x).compile().as_text()
        found = [name for name in ("cudnn_rnn",) if name in hlo.lower()]  # not the convs' cuDNN
    elif BACKEND == "torch":
        import torch

        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
        names = {e.key for e in prof.key_averages()}
        found = sorted(n for n in names if "rnn" in n.lower() or "lstm" in n.lower())[:5]
    else:
        import tensorflow as tf

        graph = (
            tf.function(lambda x: model(x, training=False))
            .get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
            .graph.as_graph_def()
        )
        ops = {node.op for node in graph.node}
        for function in graph.library.function:
            ops |= {node.op for node in function.node_def}
        found = sorted(op for op in ops if "Cudnn" in op)
    return {"ok": bool(found), "applicable": True, "found": found}


def check_fit(arch, size, on_gpu, batch):
    (x, y), _ = load_digits(image_size=size)
    x, y = x[: batch * 4], y[: batch * 4]
    scope, devices = None, 1
    if BACKEND == "tensorflow":  # all GPUs, or the CPU without one
        import tensorflow as tf

        scope = tf.distribute.MirroredStrategy()
        devices = scope.num_replicas_in_sync
    elif BACKEND == "jax":
        found = keras.distribution.list_devices("gpu" if on_gpu else "cpu")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found))
        devices = len(found)
    with scope.scope() if scope else _nothing():
        model = Sequencer2D(**arch, input_shape=(size, size, 3), classes=10)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    losses = model.fit(x, y, batch_size=batch, epochs=2, verbose=0).history["loss"]
    return {
        "ok": bool(np.all(np.isfinite(losses))),
        "devices": devices,
        "loss": losses,
        "strategy": type(scope).__name__ if scope else ("DataParallel" if BACKEND == "jax" else "none (one device)"),
    }


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    on_gpu = kernels.accelerator_platform() == "gpu"
    if on_gpu:
        arch, size, batch = dict(MODEL_CONFIGS["sequencer2d_s"]), 224, 64
    else:
        arch, size, batch = TINY, 32, 8
    report = {
        "backend": BACKEND,
        "device": "gpu" if on_gpu else "cpu",
        "auto_resolves_to": kernels.resolve_implementation("auto"),
    }
    if not on_gpu:
        report["note"] = "no GPU visible: the checks ran on CPU on a tiny model"
    for name, check in (("equal", check_equal), ("cudnn", check_cudnn)):
        report[name] = check(arch, size if on_gpu else 28, on_gpu)
    report["fit"] = check_fit(arch, size, on_gpu, batch)
    print(json.dumps(report))
    return 0 if all(report[k]["ok"] for k in ("equal", "cudnn", "fit")) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--timm"]:
        folder, arch, gpu = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "1"
        logits, state = timm_logits(arch, np.load(os.path.join(folder, "images.npy")), gpu)
        np.savez(os.path.join(folder, "timm.npz"), logits=logits, **{f"state.{k}": v for k, v in state.items()})
        sys.exit(0)
    sys.exit(main())
