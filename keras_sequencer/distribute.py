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
"""

import contextlib
import dataclasses
import json
import os
import warnings

import keras

from keras_sequencer import keras_patches

JAX_PROCESS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


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
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        keras_patches.install_tf_multi_worker_scalar_mean()
        return Distribution(
            f"tf.distribute.MultiWorkerMirroredStrategy: {workers} workers, "
            f"{strategy.num_replicas_in_sync} replicas",
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
            f"tf.distribute.MirroredStrategy over {len(devices)} devices "
            f"({', '.join(devices)})",
            strategy.num_replicas_in_sync,
            strategy,
        )
    return Distribution(f"single device ({devices[0] if devices else 'CPU'})")


def _jax(devices):
    from keras import distribution

    processes = 1
    if any(name in os.environ for name in JAX_PROCESS_VARIABLES):
        distribution.initialize()
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


def _single_device(devices):
    backend = keras.backend.backend()
    if devices and len(devices) > 1:
        raise ValueError(
            f"Data-parallel training over several devices is not supported by Keras' "
            f"{backend} backend; use KERAS_BACKEND=jax or tensorflow."
        )
    if os.environ.get("TF_CONFIG") and tf_config_workers()[0] > 1 or any(
        name in os.environ for name in JAX_PROCESS_VARIABLES
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
