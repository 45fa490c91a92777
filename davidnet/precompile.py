"""Compiling a run's steps before it starts (`--precompile`, JAX), so that the
timed run excludes compilation."""

import time

import numpy as np

from pipelines import keras_private


def feed_example(feed):
    """Zeros shaped and typed as one item of `feed`, drawing nothing from it."""
    if hasattr(feed, "example"):
        return feed.example()
    # A tf.data feed: Keras hands the step NumPy arrays of its element spec.
    return tuple(np.zeros(spec.shape, spec.dtype.as_numpy_dtype) for spec in feed.element_spec)


def precompile(model, feed, x_test, y_test, tta=None):
    """Compiles the train and test steps (and the TTA model's predict, if
    given) before the run, on zeros shaped like the feed's items and the test
    batches, and returns the seconds it took.

    JAX only: the compiled steps are run on a copy of the model's state, so
    the run that follows starts from exactly the same weights, optimizer and
    random state, and finds its steps compiled (the same functions, the same
    shapes). With a persistent compilation cache a second run loads them.
    """
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    example = feed_example(feed)
    model.make_train_function()
    state = jax.tree.map(jnp.copy, keras_private.jax_state(model))
    logs, _ = model.train_function(state, iter([example]))
    model.make_test_function()
    state = jax.tree.map(jnp.copy, keras_private.jax_state(model, optimizer=False))
    test_logs, _ = model.test_function(state, iter([(np.zeros_like(x_test), np.zeros_like(y_test))]))
    jax.block_until_ready((logs, test_logs))
    if tta is not None:  # predict changes no state
        tta.predict(np.zeros_like(x_test), batch_size=len(x_test), verbose=0)
    return time.perf_counter() - start
