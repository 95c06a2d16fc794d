"""Data-parallel training for every backend: one helper picks the strategy.

:func:`setup_distribution` looks at the backend and the environment:

- TensorFlow: ``tf.distribute.MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
  names several workers, else ``tf.distribute.MirroredStrategy`` over the local
  GPUs (or the ``devices`` given), else the default single-device strategy.
- JAX: ``keras.distribution.DataParallel`` over every device
  (``keras.distribution.list_devices()``); with several processes
  (``KERAS_DISTRIBUTION_JOB_ADDRESSES`` / ``_NUM_PROCESSES`` / ``_PROCESS_ID``
  set) ``keras.distribution.initialize()`` joins them first.
- PyTorch: Keras' ``fit`` has no multi-device support on torch, so training runs
  on one device; several GPUs print a note, a multi-machine setup is an error.

Build, compile *and* fit the model inside ``Distribution.scope()``; the batch
given to ``fit`` is the global batch, split evenly over ``num_replicas``.

Joining the other workers is bounded in time: a worker that cannot reach all its
peers within ``KERAS_SEQUENCER_DIST_TIMEOUT`` seconds (default 300) prints one
line naming the addresses that did not answer and exits with status 1, instead
of waiting forever. After a worker fault, the training loop's backup
(:mod:`keras_sequencer.training.backup`) lets every worker resume from the same
finished epoch; :func:`agree_min` is the collective that makes them agree.
"""

import contextlib
import dataclasses
import json
import os
import sys
import warnings

import keras

from keras_sequencer import keras_patches

JAX_PROCESS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
TIMEOUT_VARIABLE = "KERAS_SEQUENCER_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


@dataclasses.dataclass
class Distribution:
    """What :func:`setup_distribution` chose.

    Attributes:
        description: human-readable summary (printed by the trainers).
        num_replicas: model copies that each get ``global_batch / num_replicas``
            examples of every batch (all processes together).
        strategy: the ``tf.distribute.Strategy`` or ``keras.distribution``
            object, or ``None`` for a single device.
        num_workers: processes (machines) taking part.
        worker_index: this process' index (0 is the chief, which writes files).
    """

    description: str
    num_replicas: int = 1
    strategy: object = None
    num_workers: int = 1
    worker_index: int = 0

    def scope(self):
        """Context manager to build, compile and fit the model in."""
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    @property
    def is_chief(self):
        return self.worker_index == 0


def tf_config_peers():
    """The other workers' ``host:port`` addresses in ``TF_CONFIG`` (chief first)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    addresses = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    own = addresses[tf_config_workers()[1]] if addresses else None
    return [address for address in addresses if address != own]


def tf_config_workers():
    """``(number of workers, this worker's index)`` named by ``TF_CONFIG``."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, 0
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from None
    cluster = config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task = config.get("task", {})
    index = task.get("index", 0)
    if task.get("type") == "worker" and cluster.get("chief"):
        index += 1
    return max(workers, 1), index


def connect_timeout():
    """Seconds a worker waits for its peers (``KERAS_SEQUENCER_DIST_TIMEOUT``,
    default 300); a ``ValueError`` naming the variable if it is not a number > 0."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a number of seconds > 0, got {raw!r}.")
    return value


# Runs beside a worker that joins its peers (stdlib only): after TIMEOUT seconds,
# unless killed or orphaned first, prints MESSAGE with the addresses that do not answer.
WATCHDOG = """
import os, socket, sys, time
timeout, message, peers = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
parent, end = os.getppid(), time.monotonic() + timeout
while time.monotonic() < end:
    time.sleep(0.2)
    if os.getppid() != parent:  # the worker is gone
        sys.exit()
def answering(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        return True
    except (OSError, ValueError):
        return False
silent = [a for a in peers if not answering(a)] or peers
print("keras-sequencer: error: " + message.format(", ".join(silent)), file=sys.stderr, flush=True)
"""


@contextlib.contextmanager
def bounded_join(timeout, peers, message):
    """Runs the block (joining the other workers) under a watchdog: if it has not
    finished after ``timeout`` seconds, ``message`` (one line; ``{}`` becomes the
    ``peers`` that do not answer) is printed to stderr and the process exits with
    status 1. The join blocks in native code, holding the GIL on TensorFlow, so
    the message comes from a small watchdog process and the exit from
    ``faulthandler``'s C-level timer (its traceback goes to ``os.devnull``)."""
    import faulthandler
    import subprocess

    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(timeout), message, *peers], stdin=subprocess.DEVNULL
    )
    devnull = open(os.devnull, "w")
    faulthandler.dump_traceback_later(timeout + 1.5, exit=True, file=devnull)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        devnull.close()
        watchdog.kill()
        watchdog.wait()


def unreachable_message(timeout, what):
    """The one line printed when joining the other workers timed out; ``{}``
    stands for the addresses that did not answer."""
    return (
        f"could not reach the other worker(s) at {{}} within {timeout:g} s ({what}). Check "
        f"that every worker is started with the same cluster addresses, that those ports "
        f"are reachable from this machine (firewall), or raise {TIMEOUT_VARIABLE}."
    )


def agree_min(value):
    """The smallest ``value`` (an int) over all workers of a multi-worker run;
    ``value`` itself in a single process. Every worker must call it at the same
    point (it is a collective)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return int(value)
        per_replica = strategy.run(lambda: tf.constant([int(value)], tf.int64))
        return int(tf.reduce_min(strategy.gather(per_replica, axis=0)).numpy())
    if backend == "jax":
        import jax

        if jax.process_count() == 1:
            return int(value)
        import numpy as np
        from jax.experimental import multihost_utils

        return int(np.min(multihost_utils.process_allgather(np.asarray([int(value)]))))
    return int(value)


_CACHE = {}


def setup_distribution(devices=None):
    """Picks the data-parallel strategy for the current backend and environment.

    Args:
        devices: optional list of devices to replicate over instead of the
            default (TensorFlow: names such as ``"/cpu:0"``; JAX: entries of
            ``keras.distribution.list_devices()``). Handy to test on CPU.

    Returns:
        A :class:`Distribution`. The same one is returned for the same
        arguments (a multi-worker strategy can only be created once).
    """
    backend = keras.backend.backend()
    key = (backend, tuple(devices) if devices else None)
    if key not in _CACHE:
        builder = {"tensorflow": _tensorflow, "jax": _jax}.get(backend, _single_device)
        _CACHE[key] = builder(devices)
    return _CACHE[key]


def _tensorflow(devices):
    import tensorflow as tf

    workers, index = tf_config_workers()
    if workers > 1:
        if devices:
            raise ValueError(
                "devices= cannot be combined with a multi-worker TF_CONFIG; "
                "MultiWorkerMirroredStrategy uses every local GPU of each worker."
            )
        peers = tf_config_peers()
        timeout = connect_timeout()
        what = "TF_CONFIG cluster, MultiWorkerMirroredStrategy"
        with bounded_join(timeout, peers, unreachable_message(timeout, what)):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        keras_patches.install_tf_multi_worker_scalar_mean()
        return Distribution(
            f"tf.distribute.MultiWorkerMirroredStrategy: {workers} workers, {strategy.num_replicas_in_sync} replicas",
            strategy.num_replicas_in_sync,
            strategy,
            workers,
            index,
        )
    if devices is None:
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        strategy = tf.distribute.MirroredStrategy(list(devices))
        return Distribution(
            f"tf.distribute.MirroredStrategy over {len(devices)} devices ({', '.join(devices)})",
            strategy.num_replicas_in_sync,
            strategy,
        )
    return Distribution(f"single device ({devices[0] if devices else 'CPU'})")


def _jax(devices):
    from keras import distribution

    processes = 1
    if any(name in os.environ for name in JAX_PROCESS_VARIABLES):
        _jax_initialize()
        import jax

        processes = jax.process_count()
    if devices is None:
        devices = distribution.list_devices()
    if len(devices) > 1:
        import jax

        strategy = distribution.DataParallel(devices=list(devices))
        return Distribution(
            f"keras.distribution.DataParallel over {len(devices)} devices"
            + (f" in {processes} processes" if processes > 1 else ""),
            len(devices),
            strategy,
            processes,
            jax.process_index(),
        )
    return Distribution(f"single device ({devices[0] if devices else 'CPU'})")


def _jax_initialize():
    """``keras.distribution.initialize()`` from the ``KERAS_DISTRIBUTION_*``
    variables, with ``jax.distributed``'s wait for the other processes bounded by
    :func:`connect_timeout` (Keras does not pass a timeout through)."""
    import jax
    from keras.src.backend.jax import distribution_lib

    addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "")
    coordinator = addresses.split(",")[0].strip()
    timeout = connect_timeout()
    try:
        num_processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", ""))
        process_id = int(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", ""))
    except ValueError:
        raise ValueError(
            "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID must be "
            "integers (with KERAS_DISTRIBUTION_JOB_ADDRESSES, the coordinator host:port)."
        ) from None
    if not coordinator:
        raise ValueError("KERAS_DISTRIBUTION_JOB_ADDRESSES must name the coordinator host:port.")
    what = f"coordinator of {num_processes} JAX processes, this is process {process_id}"
    # jax.distributed aborts the process (no exception) when its own timeout
    # passes, so the watchdog ends it first, with the message
    if process_id == 0:  # the coordinator: waits for the others to register
        message = (
            (
                f"only some of the {num_processes} JAX processes joined the coordinator at "
                f"{coordinator} (this process) within {timeout:g} s. Check that every process "
                f"is started with KERAS_DISTRIBUTION_JOB_ADDRESSES={coordinator}, "
                f"KERAS_DISTRIBUTION_NUM_PROCESSES={num_processes} and its own "
                f"KERAS_DISTRIBUTION_PROCESS_ID, that this port is reachable from their "
                f"machines (firewall), or raise {TIMEOUT_VARIABLE}."
            )
            .replace("{", "{{")
            .replace("}", "}}")
        )
    else:
        message = unreachable_message(timeout, what)
    with bounded_join(timeout, [coordinator], message):
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(timeout) + 60,
        )
    distribution_lib.initialize_rng()  # what keras.distribution.initialize() does next


def _single_device(devices):
    backend = keras.backend.backend()
    if devices and len(devices) > 1:
        raise ValueError(
            f"Data-parallel training over several devices is not supported by Keras' "
            f"{backend} backend; use KERAS_BACKEND=jax or tensorflow."
        )
    if (
        os.environ.get("TF_CONFIG")
        and tf_config_workers()[0] > 1
        or any(name in os.environ for name in JAX_PROCESS_VARIABLES)
    ):
        raise ValueError(
            f"Multi-machine training is not supported by Keras' {backend} backend "
            "(TF_CONFIG / KERAS_DISTRIBUTION_* are set); use KERAS_BACKEND=jax or tensorflow."
        )
    gpus = 0
    if backend == "torch":
        import torch

        gpus = torch.cuda.device_count()
    if gpus > 1:
        warnings.warn(
            f"{gpus} GPUs are visible, but Keras' torch backend trains on one device "
            "(model.fit has no data parallelism on torch); use KERAS_BACKEND=jax or "
            "tensorflow to use all of them.",
            stacklevel=3,
        )
    return Distribution(f"single device ({backend} backend)")
