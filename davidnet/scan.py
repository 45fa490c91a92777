"""A whole epoch as one compiled loop on JAX: `--loop scan`.

Keras's `fit` calls the compiled train step once per batch from Python. On a
fast accelerator with a small network that host loop (the data adapter, the
callbacks, one dispatch with a few hundred state arrays per step) can take as
long as the step itself. Here Keras's own `train_step` runs inside
`jax.lax.scan` over the batches of a `ScanFeed` item (by default the whole
epoch): the device feed's batch gather and flip (`pipelines.feeds.device_batch`,
the very code the feed runs) and the in-model augmentation are traced into
the same program, so the host dispatches once per epoch.

It stays a Keras `fit`: `install` puts the scanned function in place of the
model's `train_function`, and `fit` runs as always with a `ScanFeed`, one
"batch" per item (callbacks, validation, history, checkpoints and resume
unchanged). The loss, the optimizer, the metrics and the learning rate are
Keras's, so the learning rate must be in the graph
(`LearningRateCallback.in_graph`): a callback cannot change it mid-scan.

This touches two private Keras names, `Model._symbolic_build` and the JAX
trainer's `train_function` contract (`(state, iterator) -> (logs, state)`),
through `pipelines.keras_private`; `tests/test_scan.py` checks that a scanned
epoch equals the batch-by-batch `fit`.

For accelerators only: XLA's CPU backend runs a rolled loop's convolutions
far slower (measured on a 2-core CPU, tiny DavidNet, batch 64: 23.9 s per
epoch scanned against 1.7 s with fit; unrolled by 8, 2.1 s but 70 s to
compile).
"""

import keras
from keras import ops

from pipelines import keras_private
from pipelines.feeds import ScanFeed, device_batch, gather_batch


def install(model, feed, unroll=1):
    """Makes `model.fit(feed, ...)` run each item of `feed` as one compiled loop.

    Args:
        model: a compiled Keras model (JAX backend), not yet trained.
        feed: the `pipelines.feeds.ScanFeed` that `fit` will get.
        unroll: steps per iteration of the compiled loop (`jax.lax.scan`'s
            `unroll`); more compiles longer.

    Raises:
        ValueError: not the JAX backend, not a `ScanFeed`, or data parallelism
            (the scanned loop runs on one device).
    """
    if keras.backend.backend() != "jax":
        raise ValueError(f"the scanned loop (--loop scan) needs the JAX backend; this is {keras.backend.backend()}: use --loop fit")
    if not isinstance(feed, ScanFeed):
        raise ValueError(f"the scanned loop needs a ScanFeed, got {type(feed).__name__}")
    if keras.distribution.distribution() is not None:
        raise ValueError("the scanned loop runs on one device: use --loop fit with --devices")
    import jax

    images, labels, num_classes = feed.images, feed.labels, feed.num_classes
    flip = feed.alternating_flip
    sample = gather_batch(images, labels, ops.arange(2), num_classes)
    keras_private.build_on_batch(model, sample)  # build now: fit would try it on an index batch

    def run(state, images, labels, indices, bits, epoch):
        def step(state, batch):
            indices, bits = batch
            x, y = device_batch(images, labels, indices, num_classes, bits if flip else None, epoch)
            logs, state = model.train_step(state, (x, y))
            return state, logs

        state, logs = jax.lax.scan(step, state, (indices, bits), unroll=unroll)
        return jax.tree.map(lambda values: values[-1], logs), state  # the logs after the last step

    # The data go in as arguments, not closed over: a closed-over array
    # would be compiled into the program as a constant.
    compiled = jax.jit(run, donate_argnums=0)

    def train_function(state, iterator):
        return compiled(state, images, labels, *next(iterator))

    keras_private.set_train_function(model, train_function)
    return model
