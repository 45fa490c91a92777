"""Data-parallel training on several devices (`--devices N|all`).

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

Batch normalisation: on JAX the batch axis is sharded inside one SPMD program,
so the moments are taken over the global batch (synchronised, as on one
device). On TensorFlow, `keras.layers.BatchNormalization` takes its moments per
replica ("ghost" batches of batch_size / N) unless built with
`synchronized=True`; DavidNet's layers use the default, so TensorFlow runs use
ghost batches.

A setting of "1" (or "all" on a one-device machine) sets nothing up: the
single-device path is unchanged. Multi-host (JAX): with the
KERAS_DISTRIBUTION_* variables set in every process, `keras.distribution.initialize()`
is called before the devices are listed; see the README (untested here).
"""

import contextlib
import os

import keras

from davidnet.config import parse_devices


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
    if batch_size is not None and batch_size % count:
        raise ValueError(
            f"batch size {batch_size} does not split across {count} devices: "
            f"the batch size is the global batch and must be a multiple of the device count"
        )
    return found[:count]


@contextlib.contextmanager
def data_parallel(setting, batch_size=None):
    """Runs the body data-parallel over `setting` devices; yields the count used.

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
    _initialize_multi_host()
    devices = choose_devices(setting, batch_size)
    if len(devices) == 1:
        yield 1
        return
    if keras.backend.backend() == "jax":
        distribution = keras.distribution.DataParallel(devices=devices)
        with distribution.scope():
            yield len(devices)
    else:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            yield len(devices)


def process_share():
    """(index, count) of this process among the hosts of a JAX multi-host run;
    (0, 1) everywhere else. Keras's JAX trainer takes each process's batch as
    its local part of the global batch, so the device feed gives each its own rows."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def _initialize_multi_host():
    """JAX multi-host: with KERAS_DISTRIBUTION_NUM_PROCESSES (and _JOB_ADDRESSES,
    _PROCESS_ID) set, `keras.distribution.initialize()` (jax.distributed.initialize
    underneath) joins the processes, once, before the devices are listed."""
    if keras.backend.backend() != "jax" or not os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        return
    import jax

    if not jax.distributed.is_initialized():
        keras.distribution.initialize()
