"""Data parallelism: the strategy helper, 2 simulated devices, 2 worker processes.

Device counts are fixed when JAX / TensorFlow start, so the multi-device runs are
subprocesses with their own environment.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_sequencer.training import distribute
from tests.helpers import REPO, worker_environments

BACKEND = keras.backend.backend()

# A tiny Sequencer2D behind a probe layer that records how its input batch is laid
# out, trained with the recipe's optimizer and pipeline inside the strategy's scope.
TRAIN_WITH_PROBE = """
import sys
import keras
from tests.helpers import digits_splits, tiny_config
from keras_sequencer import training
from keras_sequencer.training import distribute

def train(distribution, probe):
    config = tiny_config("unused", batch_size=8, epochs=1, warmup_epochs=0)
    splits = digits_splits(num_train=32, num_val=8)
    global_batch = config.batch_size * distribution.num_replicas
    with distribution.scope():
        inputs = keras.Input((16, 16, 3))
        outputs = training.build_model(config, 10)(probe(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=training.build_optimizer(config, model, 32 // global_batch),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        )
        history = model.fit(
            training.train_pipeline(splits.train, config, 10, global_batch), epochs=1, verbose=0
        )
    return model, history
"""


def run_script(body, env=None, timeout=300):
    script = TRAIN_WITH_PROBE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=REPO, **(env or {})),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tf_config_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.tf_config_workers() == (1, 0)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}))
    assert distribute.tf_config_workers() == (3, 2)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config_workers()


def test_single_device_by_default(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    distribution = distribute.setup_distribution()
    if BACKEND == "jax" and len(keras.distribution.list_devices()) > 1:
        pytest.skip("this JAX process already has several devices")
    assert distribution.num_replicas == 1 and distribution.strategy is None
    assert distribution.is_chief and distribute.setup_distribution() is distribution


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's limits")
def test_torch_refuses_what_keras_cannot_do(monkeypatch):
    with pytest.raises(ValueError, match="not supported by Keras' torch backend.*torchrun"):
        distribute.setup_distribution(devices=["cpu:0", "cpu:1"])
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    monkeypatch.setattr(distribute, "_CACHE", {})
    with pytest.raises(ValueError, match="the torch backend does not read them; start the processes with torchrun"):
        distribute.setup_distribution()


@pytest.mark.skipif(BACKEND != "torch", reason="torchrun's variables are the torch path")
def test_torch_process_variables(monkeypatch):
    """torchrun's variables are read up front; incomplete ones are a one-line error."""
    for name in distribute.TORCH_PROCESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distribute.torch_process_group() == (1, 0, 0, None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distribute.torch_process_group() == (1, 0, 0, None)
    env = dict(WORLD_SIZE="4", RANK="3", LOCAL_RANK="1", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distribute.torch_process_group() == (4, 3, 1, "10.0.0.1:29500")
    for name, value in (("RANK", "4"), ("LOCAL_RANK", "x"), ("MASTER_ADDR", "")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match="Several torch processes need WORLD_SIZE, RANK") as error:
            distribute.torch_process_group()
        assert "\n" not in str(error.value)
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(ValueError, match="missing: MASTER_PORT"):
        distribute.torch_process_group()


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel is the JAX path")
def test_jax_data_parallel_splits_the_batch_over_two_devices():
    result = run_script(
        """
        import json, jax
        distribution = distribute.setup_distribution()
        shard_shapes = []

        class Probe(keras.layers.Layer):
            def call(self, x):
                jax.debug.inspect_array_sharding(
                    x, callback=lambda s: shard_shapes.append(s.shard_shape(x.shape)))
                return x

        model, history = train(distribution, Probe())
        print(json.dumps(dict(
            replicas=distribution.num_replicas,
            description=distribution.description,
            shard_shapes=[list(s) for s in shard_shapes],
            weight_devices=[len(v.value.sharding.device_set) for v in model.trainable_variables],
            replicated=all(v.value.sharding.is_fully_replicated for v in model.trainable_variables),
            steps=int(model.optimizer.iterations),
        )))
        """,
        env={"JAX_NUM_CPU_DEVICES": "2"},
    )
    assert result["replicas"] == 2 and "DataParallel" in result["description"]
    # every global batch of 16 reaches the model as two shards of 8, one per device
    assert result["shard_shapes"] and all(s == [8, 16, 16, 3] for s in result["shard_shapes"])
    assert set(result["weight_devices"]) == {2} and result["replicated"]
    assert result["steps"] == 2


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is the TensorFlow path")
def test_tf_fused_model_predicts_with_xla_blocks_under_mirrored_strategy():
    """The fused path's per-block XLA inference inside a MirroredStrategy replica:
    ``predict`` equals the ``"keras"`` path outside any strategy, and the
    replicated model still evaluates and trains."""
    result = run_script(
        """
        import json
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras_sequencer
        from keras_sequencer.layers import Sequencer2DBlock
        from tests.helpers import MICRO_ARCH as arch
        x = np.random.RandomState(0).rand(4, 16, 16, 3).astype("float32")
        y = np.array([0, 1, 2, 1])
        reference = keras_sequencer.Sequencer2D(**arch, classes=3, implementation="keras")
        expected = reference.predict(x, verbose=0)
        distribution = distribute.setup_distribution(devices=["/cpu:0", "/cpu:1"])
        with distribution.scope():
            model = keras_sequencer.Sequencer2D(**arch, classes=3, implementation="fused")
            model.set_weights(reference.get_weights())
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        got = model.predict(x, batch_size=4, verbose=0)
        blocks = [l for l in model._flatten_layers() if isinstance(l, Sequencer2DBlock)]
        loss = model.evaluate(x, y, batch_size=4, verbose=0)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        print(json.dumps(dict(
            replicas=distribution.num_replicas,
            max_diff=float(np.abs(got - expected).max()),
            xla_blocks=sum("_xla_inference_fn" in b.__dict__ for b in blocks),
            blocks=len(blocks),
            loss=float(loss),
            steps=int(model.optimizer.iterations.numpy()),
        )))
        """
    )
    assert result["replicas"] == 2
    assert result["max_diff"] < 1e-5
    assert result["blocks"] == 2 and result["xla_blocks"] == 2
    assert np.isfinite(result["loss"]) and result["steps"] == 1


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is the TensorFlow path")
def test_tf_mirrored_strategy_splits_the_batch_over_two_devices():
    result = run_script(
        """
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        distribution = distribute.setup_distribution(devices=["/cpu:0", "/cpu:1"])
        per_replica = []

        class Probe(keras.layers.Layer):
            def call(self, x):
                context = tf.distribute.get_replica_context()
                if context is not None:  # None while Keras builds the model symbolically
                    replica = tf.get_static_value(context.replica_id_in_sync_group)
                    per_replica.append((int(replica), x.shape[0], x.device))
                return x

        model, history = train(distribution, Probe())
        print(json.dumps(dict(
            replicas=distribution.num_replicas,
            per_replica=per_replica,
            mirrored=[type(v.value).__name__ for v in model.trainable_variables],
            copies=[len(v.value.values) for v in model.trainable_variables],
            steps=int(model.optimizer.iterations.numpy()),
        )))
        """
    )
    assert result["replicas"] == 2
    replicas = {replica: batch for replica, batch, _ in result["per_replica"]}
    assert replicas == {0: 8, 1: 8}  # global batch 16 -> 8 per replica
    assert set(result["mirrored"]) == {"MirroredVariable"} and set(result["copies"]) == {2}
    assert result["steps"] == 2


WORKER = """
import json, os, sys
import keras
import numpy as np
from tests.helpers import digits_splits, tiny_config
from keras_sequencer import training
from keras_sequencer.training import distribute

output, settings = sys.argv[1], dict(batch_size=8, epochs=2, warmup_epochs=1, num_train=64)
settings.update(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
num_train = settings.pop("num_train")
distribution = distribute.setup_distribution()
config = tiny_config(output, **settings)
keras.utils.set_random_seed(config.seed)  # every process shuffles the images alike
model, history = training.fit(config, digits_splits(num_train=num_train, num_val=16), distribution=distribution)
index = distribution.worker_index
np.savez(os.path.join(output, f"weights_{index}.npz"), *[np.asarray(w) for w in model.get_weights()])
print(json.dumps(dict(replicas=distribution.num_replicas, workers=distribution.num_workers,
                      index=index, steps=int(np.asarray(model.optimizer.iterations)),
                      description=distribution.description, history=history.history)))
"""


def run_workers(jobs, timeout=240):
    """Runs :data:`WORKER` once per ``(arguments, environment)`` of ``jobs``, all at
    once; their JSON reports."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *map(str, args)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, env in jobs
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-4000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.mark.slow
@pytest.mark.skipif(BACKEND == "torch", reason="the torch test below checks this and more")
def test_two_processes_train_to_identical_weights(tmp_path):
    """Two worker processes (TF: MultiWorkerMirroredStrategy; JAX: keras.distribution
    .initialize + DataParallel) train together and end with identical weights."""
    outputs = run_workers([([tmp_path], env) for env in worker_environments()])
    for result in outputs:
        # 64 images, global batch 8 x 2 replicas -> 4 steps per epoch, 2 epochs
        assert (result["replicas"], result["workers"], result["steps"]) == (2, 2, 8)
    assert sorted(result["index"] for result in outputs) == [0, 1]
    chief, other = (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))
    assert len(chief.files) == len(other.files) > 0
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    assert (tmp_path / "history.csv").exists() and (tmp_path / "best.keras").exists()
    assert not (tmp_path / ".worker_1" / "history.csv").samefile(tmp_path / "history.csv")


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed is the torch path")
def test_torch_two_processes_follow_one_process_on_the_global_batch(tmp_path):
    """Two torch processes (gloo, as torchrun starts them) with batch 8 each train
    as one process does with batch 16: the same losses and weights up to float
    rounding, identical weights and logs in both processes, files from the chief.

    16 images and no random augmentation: every step is one whole-set batch, so
    the one-process run is the same computation whatever order its batches come
    in; the two processes match it only if their slices are disjoint halves of
    the set and their gradients are averaged."""
    together, alone = tmp_path / "two", tmp_path / "one"
    together.mkdir(), alone.mkdir()
    plain = dict(num_train=16, epochs=3, lr=1e-2, scale=[1.0, 1.0], ratio=[1.0, 1.0], hflip=0.0)
    plain.update(train_interpolation="bilinear", color_jitter=0.0)
    jobs = [([together, json.dumps(dict(plain, batch_size=8))], env) for env in worker_environments()]
    single = dict(CUDA_VISIBLE_DEVICES="", WORLD_SIZE="1")
    *workers, reference = run_workers([*jobs, ([alone, json.dumps(dict(plain, batch_size=16))], single)])
    for result in workers:
        # 16 images, batch 8 x 2 processes -> 1 step per epoch, 3 epochs
        assert (result["replicas"], result["workers"], result["steps"]) == (2, 2, 3)
        assert "torch.distributed" in result["description"]
    assert sorted(result["index"] for result in workers) == [0, 1]
    assert (reference["replicas"], reference["steps"]) == (1, 3)
    # every process logs the metrics of whole global batches, not of its slice
    assert workers[0]["history"] == workers[1]["history"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(workers[0]["history"][name], reference["history"][name], rtol=1e-5, err_msg=name)
    assert reference["history"]["loss"][-1] < reference["history"]["loss"][0] - 1e-3  # it learns
    chief, other = (np.load(together / f"weights_{i}.npz") for i in range(2))
    single_weights = np.load(alone / "weights_0.npz")
    assert len(chief.files) == len(other.files) == len(single_weights.files) > 0
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
        np.testing.assert_allclose(chief[name], single_weights[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert (together / "history.csv").exists() and (together / "best.keras").exists()
    assert (together / ".worker_1" / "history.csv").exists()
