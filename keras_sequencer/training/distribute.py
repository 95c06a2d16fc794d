"""Data-parallel training for every backend: one helper picks the strategy.

:func:`setup_distribution` looks at the backend and the environment:

- TensorFlow: ``tf.distribute.MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
  names several workers, else ``tf.distribute.MirroredStrategy`` over the local
  GPUs (or the ``devices`` given), else the default single-device strategy.
- JAX: ``keras.distribution.DataParallel`` over every device
  (``keras.distribution.list_devices()``); with several processes
  (``KERAS_DISTRIBUTION_JOB_ADDRESSES`` / ``_NUM_PROCESSES`` / ``_PROCESS_ID``
  set) ``keras.distribution.initialize()`` joins them first.
- PyTorch: with several processes (``torchrun``: ``WORLD_SIZE`` > 1, ``RANK``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) ``torch.distributed`` joins
  them (NCCL, one GPU per ``LOCAL_RANK``; gloo on CPU) and
  :class:`TorchDataParallel` averages the gradients of every step over them. In
  one process Keras' ``fit`` trains on one device; several GPUs print a note.

Build, compile *and* fit the model inside ``Distribution.scope()``; the batch
given to ``fit`` is the global batch, split evenly over ``num_replicas``. With
several torch processes, :meth:`TorchDataParallel.shard` gives each its slice of
the global batches and :meth:`TorchDataParallel.prepare` the compiled model.

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
# What torchrun sets for each process (WORLD_SIZE > 1: several processes).
TORCH_PROCESS_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
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
    if backend == "torch":
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return int(value)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        smallest = torch.tensor([int(value)], dtype=torch.int64, device=device)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        return int(smallest.item())
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
        builder = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}.get(backend, _single_device)
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
            f"{backend} backend; use KERAS_BACKEND=jax or tensorflow"
            + (", or start one process per device with torchrun." if backend == "torch" else ".")
        )
    if (
        os.environ.get("TF_CONFIG")
        and tf_config_workers()[0] > 1
        or any(name in os.environ for name in JAX_PROCESS_VARIABLES)
    ):
        if backend == "torch":
            raise ValueError(
                "TF_CONFIG / KERAS_DISTRIBUTION_* are set, but the torch backend does not read them; "
                "start the processes with torchrun (WORLD_SIZE, RANK, MASTER_ADDR, ...)."
            )
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
            f"{gpus} GPUs are visible, but one torch process trains on one device; start "
            f"one process per GPU (torchrun --nproc_per_node {gpus} -m keras_sequencer.cli "
            "train ...) to use all of them.",
            stacklevel=3,
        )
    return Distribution(f"single device ({backend} backend)")


class TorchDataParallel:
    """Data parallelism over the processes of a ``torch.distributed`` group, with
    Keras' own ``fit``: every process holds a full copy of the model and trains on
    its slice of each global batch; the gradients are averaged over the processes
    before the optimizer applies them, so every copy takes the same step, the one
    a single process takes on the whole global batch.

    Gradients are averaged by a ``train_step`` of the model's own (:meth:`prepare`)
    rather than by ``torch.nn.parallel.DistributedDataParallel``: Keras' ``fit``
    calls ``model.train_step``, which calls the model itself, not a DDP wrapper
    around it, and the callbacks, checkpoints, backups and schedules of
    ``fit`` stay as they are on the other backends.

    Attributes:
        world_size: processes taking part.
        rank: this process' index (0 is the chief, which writes files).
        device: the torch device this process trains on (``"cpu"`` or
            ``"cuda:<LOCAL_RANK>"``).
    """

    def __init__(self, world_size: int, rank: int, device: str):
        self.world_size, self.rank, self.device = world_size, rank, device

    def scope(self):
        """Nothing to enter: each process builds its model on its own device."""
        return contextlib.nullcontext()

    def shard(self, dataset, global_batch_size: int):
        """This process' slice of every batch of ``dataset`` (a ``tf.data`` of
        ``(images (global_batch_size, ...), labels (global_batch_size, ...))``):
        rows ``[rank * b, (rank + 1) * b)``, ``b = global_batch_size / world_size``.
        Every process runs the whole input pipeline and keeps its slice: with the
        data shuffled under the same seed in every process, the slices are
        disjoint and together make each global batch once (MixUp / CutMix pairs
        are made before the slicing). The random augmentation draws of an
        image can differ from one process to another; each image is still
        augmented once, by the process that trains on it."""
        if global_batch_size % self.world_size:
            raise ValueError(
                f"The global batch ({global_batch_size}) does not split evenly over the {self.world_size} processes."
            )
        size = global_batch_size // self.world_size
        start, stop = self.rank * size, (self.rank + 1) * size
        return dataset.map(lambda *batch: tuple(part[start:stop] for part in batch))

    def prepare(self, model) -> None:
        """Makes a compiled ``model`` train in step with the other processes:
        copies the chief's weights to every process (they then start equal even
        when their initialisations differ) and gives the model a ``train_step``
        that averages the gradients over the processes (see :meth:`train_step`)."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for variable in model.variables:
                dist.broadcast(variable.value.data, src=0)
        model.train_step = lambda data: self.train_step(model, data)

    def train_step(self, model, data):
        """Keras' torch ``train_step`` on this process' slice, with two collectives:
        one ``all_reduce`` averages the gradients (one flat buffer, the loss
        appended), and one ``all_gather`` collects the labels and predictions of
        every slice, so that the loss and metrics logged are those of the whole
        global batch on every process."""
        import torch
        import torch.distributed as dist

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
        model.zero_grad()
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        variables = model.trainable_weights[:]
        model.optimizer.scale_loss(loss).backward()
        gradients = [variable.value.grad for variable in variables]
        present = [gradient for gradient in gradients if gradient is not None]
        with torch.no_grad():
            flat = torch.cat([*(g.reshape(-1).float() for g in present), loss.detach().reshape(1).float()])
            dist.all_reduce(flat)
            flat /= self.world_size
            averaged = iter(torch.split(flat[:-1], [g.numel() for g in present]))
            gradients = [None if g is None else next(averaged).view_as(g).to(g.dtype) for g in gradients]
            model.optimizer.apply(gradients, variables)
            rows = keras.tree.flatten(x)[0].shape[0] * self.world_size
            model._loss_tracker.update_state(flat[-1], sample_weight=rows)
            gathered = [self.all_gather(part) for part in (y, y_pred.detach(), sample_weight)]
        return model.compute_metrics(x, *gathered)

    def all_gather(self, tensor):
        """``tensor`` (``(b, ...)``, or ``None``) of every process, concatenated in rank order."""
        if tensor is None:
            return None
        import torch
        import torch.distributed as dist

        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)


def torch_process_group():
    """``(world size, rank, local rank, MASTER_ADDR:MASTER_PORT)`` from torchrun's
    variables, ``(1, 0, 0, None)`` without ``WORLD_SIZE`` > 1; a ``ValueError``
    naming the variables when they are incomplete or not integers."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    if raw in ("", "1"):
        return 1, 0, 0, None
    missing = [name for name in TORCH_PROCESS_VARIABLES if not os.environ.get(name, "").strip()]
    try:
        world, rank, local_rank = (int(os.environ.get(name, "")) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
        int(os.environ.get("MASTER_PORT", ""))
    except ValueError:
        world = rank = local_rank = -1
    if missing or world < 1 or not 0 <= rank < world or local_rank < 0:
        raise ValueError(
            "Several torch processes need WORLD_SIZE, RANK (0 to WORLD_SIZE-1), LOCAL_RANK "
            "and MASTER_PORT as integers and MASTER_ADDR (torchrun sets them all)"
            + (f"; missing: {', '.join(missing)}." if missing else ".")
        )
    return world, rank, local_rank, f"{os.environ['MASTER_ADDR'].strip()}:{os.environ['MASTER_PORT'].strip()}"


def _torch(devices):
    world, rank, local_rank, master = torch_process_group()
    if world == 1:
        return _single_device(devices)
    if devices:
        raise ValueError("devices= cannot be combined with torchrun: each process trains on its LOCAL_RANK's device.")
    import datetime

    import torch
    import torch.distributed as dist

    device, backend, device_id = "cpu", "gloo", None
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK is {local_rank} but this machine has {torch.cuda.device_count()} "
                "visible GPUs (one process per GPU: torchrun --nproc_per_node at most that)."
            )
        device, backend, device_id = f"cuda:{local_rank}", "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device_id)  # Keras' "cuda" device is the current one
    timeout = connect_timeout()
    if rank == 0:  # hosts the rendezvous: waits for the others to join
        message = (
            f"only some of the {world} torch processes joined the rendezvous at {master} "
            f"(this process, RANK 0) within {timeout:g} s. Check that every process is started "
            f"with MASTER_ADDR, MASTER_PORT and WORLD_SIZE={world} and its own RANK, that this "
            f"port is reachable from their machines (firewall), or raise {TIMEOUT_VARIABLE}."
        )
        message = message.replace("{", "{{").replace("}", "}}")
    else:
        message = unreachable_message(timeout, f"torch.distributed rendezvous of {world} processes, RANK {rank}")
    with bounded_join(timeout, [master], message):
        dist.init_process_group(
            backend,
            init_method="env://",
            world_size=world,
            rank=rank,
            timeout=datetime.timedelta(seconds=timeout + 60),
            device_id=device_id,
        )
        dist.barrier()
    return Distribution(
        f"torch.distributed data parallel: {world} processes ({backend}, one {device.split(':')[0]} each)",
        world,
        TorchDataParallel(world, rank, device),
        world,
        rank,
    )
