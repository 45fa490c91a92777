"""The scanned epoch loop (`--loop scan`) is Keras's fit, one compiled loop per epoch."""

import keras
import numpy as np
import pytest
from keras import ops

from davidnet import scan
from davidnet.schedules import PiecewiseLinear
from pipelines.augment import BatchAugmentation
from pipelines.feeds import DeviceFeed, ScanFeed
from tests.conftest import host_kernel_init

JAX = keras.backend.backend() == "jax"


def tiny_model(schedule, total_steps):
    # Kernels drawn on the host (conftest): on JAX each kernel shape's initializer would be an
    # XLA compile of seconds. The runs compared start from the same weights (`train`).
    with host_kernel_init():
        inputs = keras.Input((32, 32, 3))
        x = BatchAugmentation(crop_padding=2, flip=False, cutout_size=4, seed=1)(inputs)
        x = keras.layers.Conv2D(4, 3, strides=4)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalMaxPooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile(
        optimizer=keras.optimizers.SGD(schedule.in_graph(total_steps), momentum=0.9, nesterov=True, weight_decay=5e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 96)


def train(loop, start=None, steps_per_call=None):
    """Two epochs of tiny_model batch by batch ("fit") or scanned ("scan"), from the weights
    `start` (None: its own): (its initial weights, its weights, its history, the learning rates
    the schedule set)."""
    x, y = data()
    schedule = PiecewiseLinear([0, 1, 2], [0.1, 0.4, 0.0], steps_per_epoch=3)
    model = tiny_model(schedule, 6)
    if start is not None:
        model.set_weights(start)
    start = model.get_weights()
    if loop == "scan":
        feed = ScanFeed(x, y, 32, seed=3, alternating_flip=True, steps_per_call=steps_per_call)
        scan.install(model, feed)
    else:
        feed = DeviceFeed(x, y, 32, seed=3, alternating_flip=True)
        model._symbolic_build(data_batch=feed[0])  # as install does: fit then does not draw a batch to build
    history = model.fit(feed, epochs=2, verbose=0, shuffle=False, callbacks=[schedule])
    return start, [ops.convert_to_numpy(w) for w in model.weights], history.history, schedule.history


@pytest.fixture(scope="module")
def fit_run():
    """The batch-by-batch run, the same for every steps_per_call: trained once."""
    return train("fit")


@pytest.mark.skipif(not JAX, reason="the scanned loop is JAX's")
@pytest.mark.parametrize("steps_per_call", [None, 2])
def test_a_scanned_epoch_trains_exactly_as_fit_batch_by_batch(steps_per_call, fit_run):
    start, fit_weights, fit_logs, fit_lrs = fit_run
    _, scan_weights, scan_logs, scan_lrs = train("scan", start, steps_per_call)
    for a, b in zip(fit_weights, scan_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit_logs["loss"], scan_logs["loss"], rtol=1e-5)
    assert fit_lrs == scan_lrs and len(scan_lrs) == 6


def test_install_refuses_what_it_cannot_run():
    x, y = data()
    schedule = PiecewiseLinear([0, 1], [0.1, 0.0], steps_per_epoch=3)
    model = tiny_model(schedule, 3)
    if not JAX:
        with pytest.raises(ValueError, match="needs the JAX backend"):
            scan.install(model, ScanFeed(x, y, 32))
        return
    with pytest.raises(ValueError, match="needs a ScanFeed"):
        scan.install(model, DeviceFeed(x, y, 32))
