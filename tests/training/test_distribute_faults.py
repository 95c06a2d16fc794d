"""Worker faults in data-parallel training, with real worker processes on 127.0.0.1.

- Two workers (TensorFlow: MultiWorkerMirroredStrategy; JAX: keras.distribution
  with one process each; torch: torch.distributed with gloo, started as torchrun
  starts them) run ``keras-sequencer train``; one is SIGKILLed in the
  middle of epoch 2, the other is stopped, and both are started again with the
  same command: they resume at epoch 2 and end with identical weights after as
  many steps as an uninterrupted run.
- A worker whose peer never answers exits with status 1 and one line naming the
  address, within ``KERAS_SEQUENCER_DIST_TIMEOUT``.

Each test starts its own processes (their backend is fixed when they start), so
each backend's tests run on its own pass.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_sequencer.training import backup
from tests.helpers import REPO, free_ports, make_image_folder, worker_environments

BACKEND = keras.backend.backend()

# keras-sequencer train with a tiny "sequencer2d_s"; SIGKILLs itself after the
# second batch of epoch KILL_EPOCH (0-based; -1: never) and writes the final
# weights and history to REPORT.npz / REPORT.json. On TensorFlow the LSTMs run as
# implementation="keras": the "fused" path does not build symbolically under
# MultiWorkerMirroredStrategy (test_distribute's two-process test covers that).
DRIVER = """
import json, sys
import keras
import numpy as np
from tests import helpers
from keras_sequencer import cli, registry, training
from keras_sequencer.models import Sequencer2D

kill_epoch, report, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
registry.create_model = helpers.create_model_with_tiny_s
if keras.backend.backend() == "tensorflow":
    registry.create_model = lambda name, **kwargs: Sequencer2D(
        **helpers.TINY_TRAIN_ARCH, implementation="keras", name=name, **kwargs)
make_callbacks = training.loop.make_callbacks
training.loop.make_callbacks = lambda *a: [*make_callbacks(*a), helpers.KillAt(kill_epoch)]
fit = training.loop.fit

def reporting_fit(*args, **kwargs):
    model, history = fit(*args, **kwargs)
    np.savez(report + ".npz", *[np.asarray(w) for w in model.get_weights()])
    with open(report + ".json", "w") as f:
        json.dump(dict(epochs=history.epoch, steps=int(np.asarray(model.optimizer.iterations))), f)
    return model, history

training.loop.fit = reporting_fit
sys.exit(cli.main(argv))
"""


def start(args, env, log):
    """A worker process in its own process group, output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=REPO, **env),
            start_new_session=True,
        )


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_all(procs, deadline):
    for proc in procs:
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    return [proc.returncode for proc in procs]


def tail(path, chars=3000):
    with open(path) as f:
        return f.read()[-chars:]


def csv_epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_killed_worker_resumes_with_both_workers_identical(tmp_path):
    make_image_folder(str(tmp_path / "data"), per_class=16, size=(20, 20))
    out = tmp_path / "out"
    # 32 images, 4 per device x 2 workers -> 4 steps per epoch, 3 epochs
    argv = [
        "train",
        str(tmp_path / "data"),
        *(
            "--model sequencer2d_s -b 4 -j 1 --epochs 3 --warmup-epochs 1 --cooldown-epochs 0 --img-size 16 "
            f"--lr 1e-3 --mixup 0 --cutmix 0 --reprob 0 --output {out}"
        ).split(),
    ]
    envs = worker_environments()

    def run_workers(kill_epochs, attempt):
        return [
            start(
                ["-c", DRIVER, str(kill), str(tmp_path / f"report{i}"), *argv],
                env,
                tmp_path / f"worker{i}-{attempt}.log",
            )
            for i, (kill, env) in enumerate(zip(kill_epochs, envs))
        ]

    procs = run_workers([-1, 1], attempt=1)  # worker 1 dies in epoch 2
    try:
        procs[1].wait(timeout=240)
        assert procs[1].returncode == -signal.SIGKILL, tail(tmp_path / "worker1-1.log")
        time.sleep(2)
        assert procs[0].poll() is None or procs[0].returncode != 0  # it cannot finish alone
    finally:
        stop(procs)  # the surviving worker is restarted too
    assert csv_epochs(out / "history.csv") == [0]  # epoch 1 finished, epoch 2 did not
    assert backup.read_state(str(out / "backup")) == [1]
    assert backup.read_state(str(out / ".worker_1" / "backup")) == [1]

    procs = run_workers([-1, -1], attempt=2)  # the same command for both again
    try:
        codes = wait_all(procs, time.monotonic() + 240)
    finally:
        stop(procs)
    for i, code in enumerate(codes):
        assert code == 0, tail(tmp_path / f"worker{i}-2.log")
    reports = []
    for i in range(2):
        with open(tmp_path / f"report{i}.json") as f:
            reports.append(json.load(f))
    # resumed at epoch 2 (index 1); as many steps as an uninterrupted 3-epoch run
    assert reports[0] == reports[1] == {"epochs": [1, 2], "steps": 3 * 4}
    assert csv_epochs(out / "history.csv") == [0, 1, 2]
    chief, other = (np.load(tmp_path / f"report{i}.npz") for i in range(2))
    assert len(chief.files) == len(other.files) > 0
    for name in chief.files:
        assert np.array_equal(chief[name], other[name]), name
    assert not os.path.exists(out / "backup")  # removed once training completed


def lonely_worker_environment():
    """One worker of two whose peer (a free port on 127.0.0.1) never answers."""
    ports = free_ports(2)
    if BACKEND == "torch":
        master = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
        return dict(master, WORLD_SIZE="2", RANK="1", LOCAL_RANK="0", CUDA_VISIBLE_DEVICES=""), f"127.0.0.1:{ports[0]}"
    if BACKEND == "tensorflow":
        workers = [f"127.0.0.1:{port}" for port in ports]
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
        return {"TF_CONFIG": json.dumps(config)}, workers[1]
    coordinator = f"127.0.0.1:{ports[0]}"
    return {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": coordinator,
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": "1",
        "JAX_NUM_CPU_DEVICES": "1",
    }, coordinator


@pytest.mark.slow
def test_unreachable_peer_fails_in_bounded_time_with_one_line(tmp_path):
    make_image_folder(str(tmp_path / "data"), per_class=2, size=(20, 20))
    env, peer = lonely_worker_environment()
    env["KERAS_SEQUENCER_DIST_TIMEOUT"] = "5"
    args = [
        "-m",
        "keras_sequencer.cli",
        "train",
        str(tmp_path / "data"),
        "--model",
        "sequencer2d_s",
        "--img-size",
        "16",
        "--output",
        str(tmp_path / "out"),
    ]
    begun = time.monotonic()
    proc = start(args, env, tmp_path / "worker.log")
    try:
        proc.wait(timeout=120)
    finally:
        stop([proc])
    elapsed = time.monotonic() - begun
    log = tail(tmp_path / "worker.log", 20000)
    assert proc.returncode == 1, log
    errors = [line for line in log.splitlines() if line.startswith("keras-sequencer: error:")]
    assert len(errors) == 1, log
    assert peer in errors[0] and "KERAS_SEQUENCER_DIST_TIMEOUT" in errors[0]
    assert "Traceback" not in log
    assert elapsed < 90  # imports, then at most the 5 s timeout
    assert not os.path.exists(tmp_path / "out" / "history.csv")


def test_timeout_setting_and_peer_addresses(monkeypatch):
    from keras_sequencer.training import distribute

    monkeypatch.delenv("KERAS_SEQUENCER_DIST_TIMEOUT", raising=False)
    assert distribute.connect_timeout() == 300
    monkeypatch.setenv("KERAS_SEQUENCER_DIST_TIMEOUT", "2.5")
    assert distribute.connect_timeout() == 2.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("KERAS_SEQUENCER_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="KERAS_SEQUENCER_DIST_TIMEOUT must be a number"):
            distribute.connect_timeout()
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert distribute.tf_config_peers() == ["a:1", "c:3"]
    message = distribute.unreachable_message(5, "test").format("127.0.0.1:9")
    assert "at 127.0.0.1:9 within 5 s (test)" in message and "\n" not in message
