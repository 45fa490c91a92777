"""Data-parallel training on several devices (`--devices N|all`), in one
process or in several (one per host, or several on one host to test).

`data_parallel(setting, batch_size)` is a context manager: the model, its
optimizer, `compile` and `fit` run inside it. It uses the engines the backends
ship, nothing home-made:

- JAX: `keras.distribution.DataParallel` over a 1-D mesh of the chosen
  devices, made current with `distribution.scope()` (the previous distribution
  comes back afterwards). Variables are replicated; Keras's JAX trainer places
  every input batch with the distribution's data layout (batch axis sharded),
  and the train step is one SPMD program over the mesh.
- TensorFlow: `tf.distribute.MirroredStrategy(devices)` and its `scope()`;
  `fit` distributes the tf.data feed across the replicas itself.

The batch size is the GLOBAL batch: each device gets batch_size / N.

Several processes (`join_processes`, called before anything touches the
devices): the environment says how many, as the engines read it.

- JAX: `KERAS_DISTRIBUTION_JOB_ADDRESSES` (the coordinator, process 0, first),
  `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`, the
  variables `keras.distribution.initialize()` reads; or a SLURM step of several
  tasks (`srun`), where `jax.distributed.initialize()` finds all three itself.
  We call `jax.distributed.initialize` ourselves rather than through Keras,
  which does not pass on its timeouts (JAX's defaults leave a dead peer's
  partners waiting for minutes), with gloo for the collectives between CPUs.
  `--devices all` then spans every process's devices, and the device feed gives
  each process its own rows of every global batch.
- TensorFlow: `TF_CONFIG` with a cluster of several workers:
  `tf.distribute.MultiWorkerMirroredStrategy`, made once per process (it must be
  made before TensorFlow starts its runtime), with the tf.data feed sharded by
  data (`shard_per_worker`).

Process 0 (TensorFlow: worker 0, or the chief) writes the results folder; the
others train with it and write nothing (`davidnet.training.train`).

Batch normalisation: on JAX the batch axis is sharded inside one SPMD program,
so the moments are taken over the global batch (synchronised, as on one
device), in one process or several. On TensorFlow, `keras.layers.
BatchNormalization` takes its moments per replica ("ghost" batches of
batch_size / N) unless built with `synchronized=True`, which `--sync-batch-norm`
sets on the model's layers (`synchronize_batch_norm`).

A setting of "1" (or "all" on a one-device machine) sets nothing up: the
single-device path is unchanged.
"""

import atexit
import collections
import contextlib
import errno
import json
import os
import re
import socket
import sys
import threading
import time

import keras

from davidnet.config import parse_devices
from pipelines.dataset import first_line

Processes = collections.namedtuple("Processes", "index count")
ONE_PROCESS = Processes(0, 1)

# Seconds the processes of a run wait for each other: all of them to start
# (join), a silent peer before it counts as dead (heartbeat), and each other at
# the end (shutdown barrier). JAX's defaults are 300, 100 and 300.
TIMEOUTS = {"DAVIDNET_JOIN_TIMEOUT_S": 120, "DAVIDNET_PEER_TIMEOUT_S": 30}

_JOINED = {}  # this process's Processes, and TensorFlow's strategy, once made
# What the engines' errors say when a peer has gone: gloo's and gRPC's broken
# connections, the coordination service's missed heartbeats, TensorFlow's collectives.
PEER_FAILURE_MARKS = (
    "Gloo", "Connection reset by peer", "Connection closed by peer", "Socket closed", "heartbeat",
    "UNAVAILABLE", "DEADLINE_EXCEEDED", "unhealthy", "CollectiveOps", "Collective ops is aborted",
)


class PeerLost(ConnectionError):
    """Another process of a multi-process run stopped (killed, crashed, or
    failed), so this one cannot go on; str(e) is one line."""


def available_devices():
    """The devices data parallelism can use: accelerators if any, else CPUs."""
    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.list_devices()  # every process's devices (multi-host too)
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [d.name for d in devices]
    raise ValueError(f"--devices above 1 needs the JAX or TensorFlow backend, not {backend}")


def choose_devices(setting, batch_size=None):
    """The first N available devices; ValueError when there are fewer, or
    when the global batch does not split evenly across them."""
    wanted = parse_devices(setting)
    found = available_devices()
    count = len(found) if wanted == "all" else wanted
    if count > len(found):
        raise ValueError(f"asked for {count} devices, {len(found)} found: {', '.join(found)}")
    _check_split(batch_size, count)
    return found[:count]


def _check_split(batch_size, count):
    if batch_size is not None and batch_size % count:
        raise ValueError(
            f"batch size {batch_size} does not split across {count} devices: "
            f"the batch size is the global batch and must be a multiple of the device count"
        )


@contextlib.contextmanager
def data_parallel(setting, batch_size=None):
    """Runs the body data-parallel over `setting` devices; yields the count used.

    In a multi-process run (see `join_processes`, which this calls) the
    devices are every process's, and `setting` must be "all" or their count.

    Example:
    ```python
    with data_parallel("all", batch_size=512) as devices:
        model = build_model(config)
        model.compile(...)
        model.fit(feed, ...)
    ```
    """
    if parse_devices(setting) == 1:
        yield 1  # no distribution at all: the single-device path as it always was
        return
    processes = join_processes(setting)
    if processes.count > 1 and keras.backend.backend() == "tensorflow":
        strategy = _JOINED["strategy"]
        _check_every_device(setting, strategy.num_replicas_in_sync, processes)
        _check_split(batch_size, strategy.num_replicas_in_sync)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
        return
    devices = choose_devices(setting, batch_size)
    if processes.count > 1:
        _check_every_device(setting, len(available_devices()), processes)
    if len(devices) == 1:
        yield 1
        return
    if keras.backend.backend() == "jax":
        # Several processes: the device feed already gives each its own rows
        # (process_share), and each evaluates the whole test set as its part of
        # a doubled batch (the same mean): Keras must not shard them again.
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=processes.count == 1)
        with distribution.scope():
            yield len(devices)
    else:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            yield len(devices)


def _check_every_device(setting, total, processes):
    wanted = parse_devices(setting)
    if wanted != "all" and wanted != total:
        raise ValueError(
            f"--devices {wanted} in a run of {processes.count} processes: every process trains, "
            f"so the run uses all {total} devices: give --devices all"
        )


def process_share():
    """(index, count) of this process among the processes of a JAX
    multi-process run; (0, 1) everywhere else. Keras's JAX trainer takes each
    process's batch as its local part of the global batch, so the device feed
    gives each its own rows. (TensorFlow shards the tf.data feed itself.)"""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


# --- several processes ---------------------------------------------------------------


def requested_processes():
    """How many processes the environment asks this run to join (1: none):
    KERAS_DISTRIBUTION_NUM_PROCESSES or a SLURM step of several tasks (JAX),
    TF_CONFIG's workers (TensorFlow). Reads the environment only."""
    backend = keras.backend.backend()
    if backend == "jax":
        count = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES")
        if count is not None:
            return _whole(count, "KERAS_DISTRIBUTION_NUM_PROCESSES", least=1)
        if _slurm_tasks() > 1:
            return _slurm_tasks()
    elif backend == "tensorflow" and os.environ.get("TF_CONFIG"):
        return len(_tf_cluster()[0])
    return 1


def join_processes(setting="all"):
    """Joins the other processes of a multi-process run (once per process) and
    returns this one's `Processes(index, count)`; `ONE_PROCESS` when the
    environment asks for none. Call it before anything touches the devices.

    Raises ValueError (one line) for settings that cannot work (--devices 1
    with several processes, bad variables, a port in use, a coordinator that
    cannot be reached); a process that cannot join within
    DAVIDNET_JOIN_TIMEOUT_S seconds stops with one line and exit code 2."""
    count = requested_processes()
    if count == 1:
        return ONE_PROCESS
    if "processes" in _JOINED:
        return _JOINED["processes"]
    if parse_devices(setting) == 1:
        raise ValueError(
            f"this process is one of {count} ({_environment()}), each of which would train alone "
            "and write the same results: give --devices all to train them as one run"
        )
    join = _join_jax if keras.backend.backend() == "jax" else _join_tensorflow
    _JOINED["processes"] = join(count)
    return _JOINED["processes"]


def _join_jax(count):
    import jax

    if jax.distributed.is_initialized():  # by the caller: take it as it is
        return Processes(jax.process_index(), jax.process_count())
    address, index = None, None
    if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") is not None:
        address, index = _keras_variables(count)
        _check_coordinator(address, index)
    # else SLURM: jax.distributed.initialize reads SLURM_* itself (coordinator: the first node)
    join, peer = _timeout("DAVIDNET_JOIN_TIMEOUT_S"), _timeout("DAVIDNET_PEER_TIMEOUT_S")
    # gloo: collectives between CPU devices of different processes (JAX 0.10's
    # default, set for older versions that had none); GPUs use NCCL regardless.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = f"at {address}" if address else "(SLURM)"
    with _deadline(join, f"the {count} processes did not all join within {join} s {where}: start every process "
                         f"(process ids 0 to {count - 1}) with the same coordinator address and count"):
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=count if address else None,
            process_id=index,
            # JAX's own limit stays above ours, so that ours speaks first.
            initialization_timeout=join + 30,
            heartbeat_timeout_seconds=peer,
            # At the end the others wait for process 0's last writes.
            shutdown_timeout_seconds=max(peer, 60),
        )
    return Processes(jax.process_index(), jax.process_count())


def _keras_variables(count):
    """(coordinator address, this process's id) from the KERAS_DISTRIBUTION_* variables."""
    addresses = [a.strip() for a in os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "").split(",") if a.strip()]
    if not addresses:
        raise ValueError("KERAS_DISTRIBUTION_NUM_PROCESSES is set but KERAS_DISTRIBUTION_JOB_ADDRESSES is not: set it to process 0's host:port")
    if len(addresses) > 1 and len(addresses) != count:
        raise ValueError(f"KERAS_DISTRIBUTION_JOB_ADDRESSES names {len(addresses)} addresses for {count} processes")
    index = _whole(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", ""), "KERAS_DISTRIBUTION_PROCESS_ID", least=0)
    if index >= count:
        raise ValueError(f"KERAS_DISTRIBUTION_PROCESS_ID {index} is not below KERAS_DISTRIBUTION_NUM_PROCESSES {count}")
    return addresses[0], index


def _check_coordinator(address, index):
    """Before JAX tries (it aborts the process, after minutes, on either):
    process 0 can listen on the address's port; the others can reach it."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address {address!r} is not host:port")
    if index == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: a closing socket is no obstacle
            try:
                probe.bind(("", int(port)))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ValueError(
                        f"port {port} of the coordinator address {address} is in use on this host "
                        "(another run?): choose another port"
                    ) from None
                raise
        return
    deadline = time.monotonic() + _timeout("DAVIDNET_JOIN_TIMEOUT_S")
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            return
        except socket.gaierror as e:
            raise ValueError(f"coordinator address {address}: cannot resolve {host} ({e.strerror})") from None
        except OSError as e:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"could not reach the coordinator {address} (process 0) within "
                    f"{_timeout('DAVIDNET_JOIN_TIMEOUT_S')} s ({e.strerror or e}): is process 0 running, and is the address right?"
                ) from None
            time.sleep(0.5)


def _join_tensorflow(count):
    import tensorflow as tf

    workers, index = _tf_cluster()

    class Keras3MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy as Keras 3's TensorFlow trainer calls it.

        Keras 3.15 reduces a batch (a tuple, to build the model from its
        shapes) and each step's scalar logs with `strategy.reduce(..., axis=0)`;
        MultiWorkerMirroredStrategy reduces one tensor at a time, refuses axis 0
        of a scalar ("Invalid reduction dimension 0 for input with 0
        dimensions", tensorflow/tensorflow#72388) and cannot all-reduce uint8
        images. Here each tensor is reduced alone, a scalar over the replicas
        only, and a tensor of a type the collectives do not take is this
        replica's own (Keras wants only its shape)."""

        def reduce(self, reduce_op, value, axis=None):
            def one(v):
                local = self.experimental_local_results(v)[0]
                if local.dtype not in (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64):
                    return local
                return super(Keras3MultiWorkerMirroredStrategy, self).reduce(reduce_op, v, axis if local.shape.rank else None)

            return tf.nest.map_structure(one, value)

    peer, join = _timeout("DAVIDNET_PEER_TIMEOUT_S"), _timeout("DAVIDNET_JOIN_TIMEOUT_S")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=peer)
    with _deadline(join, f"the {count} TensorFlow workers did not all join within {join} s ({', '.join(workers)}): "
                         "start every worker with the same TF_CONFIG cluster"):
        try:
            strategy = Keras3MultiWorkerMirroredStrategy(communication_options=options)
        except RuntimeError as e:
            raise ValueError(f"cannot set up the TensorFlow workers of TF_CONFIG: {first_line(e, 300)}") from None
    _JOINED["strategy"] = strategy
    return Processes(index, count)


def _tf_cluster():
    """(the workers' addresses, chief first; this task's index among them) from TF_CONFIG."""
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        cluster, task = config["cluster"], config["task"]
        workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
        kind, number = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a cluster and a task (expected {{\"cluster\": {{\"worker\": [...]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}): {e}") from None
    if kind not in ("chief", "worker") or not workers:
        raise ValueError(f"TF_CONFIG: only chief and worker tasks train here, not {kind!r}")
    index = number + (len(cluster.get("chief", [])) if kind == "worker" else 0)
    return workers, index


def shard_per_worker(feed):
    """The tf.data feed of a TensorFlow multi-worker run, sharded by data.

    AutoShardPolicy.DATA, chosen rather than left to AUTO: the feed reads
    arrays in memory, not files, so AUTO's FILE sharding cannot apply (it falls
    back to DATA with a warning), and OFF would give every worker the same
    batches. With DATA every worker runs the same pipeline (the same shuffle
    seed) and keeps its own part of each global batch, as the replicas of one
    process would. Other feeds and one-process runs are returned as they are."""
    if "strategy" not in _JOINED or keras.backend.backend() != "tensorflow":
        return feed
    import tensorflow as tf

    if not isinstance(feed, tf.data.Dataset):
        raise ValueError("a TensorFlow multi-worker run trains on the tf.data feed: use --pipeline tfdata (or auto)")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return feed.with_options(options)


def synchronize_batch_norm(model):
    """Makes the model's batch norms take their moments over the global batch
    on TensorFlow (`synchronized=True`, an all-reduce per layer and step);
    returns how many. JAX's moments are global already: nothing to do there."""
    if keras.backend.backend() != "tensorflow":
        return 0
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True  # read when the train step is traced
    return len(layers)


SIGNALS = (None, "SIGINT", "SIGTERM")  # agreed_stop's codes


def agreed_stop(received, processes):
    """The signal ("SIGINT", "SIGTERM") that any process of a multi-process run
    has received, or None; SIGTERM wins. A collective: every process calls it
    at the same point (the end of each epoch)."""
    code = SIGNALS.index(received) if received in SIGNALS else 1
    if processes.count == 1:
        return SIGNALS[code]
    import numpy as np

    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        return SIGNALS[int(np.max(multihost_utils.process_allgather(np.int32(code))))]
    import tensorflow as tf

    strategy = _JOINED["strategy"]
    # Which signals any replica saw: a sum of one-hot codes (the strategy sums, it has no max).
    mine = tf.one_hot(code, len(SIGNALS))
    counts = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(lambda: mine)), axis=None).numpy()
    seen = [i for i in range(1, len(SIGNALS)) if counts[i] > 0.5]
    return SIGNALS[max(seen)] if seen else None


def peer_lost(error, processes, results_dir):
    """`PeerLost` for an engine's error that says another process has gone
    (None for any other error, or in a one-process run).

    The process then ends without the engines' shutdown barrier, which would
    wait for the dead peer and abort with a stack trace (JAX)."""
    if processes.count == 1 or not isinstance(error, Exception):
        return None
    text = f"{type(error).__name__}: {error}"
    if not any(mark in text for mark in PEER_FAILURE_MARKS):
        return None
    atexit.register(_exit_now)  # after the engines' own: so it runs before them
    from davidnet.run_folder import describe_run

    there = describe_run(results_dir) or ""
    then = (
        f"the checkpoint in {results_dir} is whole: run the same launch with --resume to continue"
        if "resumable" in there else "nothing to resume"
    )
    # The line that names the failure (TensorFlow's begin with the graph's traceback).
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = next((line for line in lines if any(mark in line for mark in PEER_FAILURE_MARKS)), lines[0] if lines else "")
    line = re.sub(r"(Error dispatching computation: )+", "", line)[:200]
    return PeerLost(f"another process of this run stopped ({type(error).__name__}: {line}): this process {processes.index} stops too; {then}")


def _exit_now():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)  # the command line's code for a run's own errors


def _all_layers(layer):
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _all_layers(inner)


def _environment():
    if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        return "KERAS_DISTRIBUTION_NUM_PROCESSES"
    return "TF_CONFIG" if keras.backend.backend() == "tensorflow" else "SLURM_NTASKS"


def _slurm_tasks():
    """SLURM's task count, when this is one of the tasks of a SLURM step (srun)."""
    if not all(os.environ.get(name) for name in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID")):
        return 1
    return _whole(os.environ.get("SLURM_NTASKS", "1"), "SLURM_NTASKS", least=1)


def _whole(text, name, least):
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}. Got: {text!r}")
    return value


def _timeout(name):
    return _whole(os.environ.get(name, TIMEOUTS[name]), name, least=1)


@contextlib.contextmanager
def _deadline(seconds, message):
    """Ends the process with `error: message` (exit code 2) if the block is still
    running after `seconds`: joining blocks inside the engines, out of reach of
    exceptions, and their own timeouts end in an abort and a stack trace."""

    def expire():
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
