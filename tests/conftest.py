import contextlib
import inspect
import os
import re

import keras
import numpy as np
import pytest

from davidnet.hardware import use_compilation_cache

# `python -m tests` shares one JAX compilation cache between the test processes;
# a plain `pytest` run goes without one.
use_compilation_cache(os.environ.get("DAVIDNET_TEST_JAX_CACHE"))


@pytest.fixture
def mixed_bfloat16():
    """The mixed_bfloat16 policy for one test, float32 again after it."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def two_device_runs(tmp_path_factory):
    """tests/helpers.py DATA_PARALLEL_SCRIPT's runs, once for the session: tests/test_distribute.py
    checks them, tests/test_multiprocess.py compares its processes with them."""
    from tests.helpers import run_data_parallel_script

    return run_data_parallel_script(tmp_path_factory.mktemp("distribute"), keras.backend.backend())


def _numpy_variance_scaling(self, shape, dtype=None):
    """keras.initializers.VarianceScaling (Glorot, He, PyTorch's default...) drawn with NumPy:
    the same distribution, from the initializer's own scale, mode and distribution."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = (shape[-2] * receptive, shape[-1] * receptive) if len(shape) > 1 else (shape[0], shape[0])
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
    scale = self.scale / max(1.0, fan)
    rng = _HOST_RNG
    if self.distribution == "uniform":
        limit = np.sqrt(3.0 * scale)
        values = rng.uniform(-limit, limit, shape)
    elif self.distribution == "untruncated_normal":
        values = rng.normal(0.0, np.sqrt(scale), shape)
    else:  # truncated at two standard deviations, as Keras
        std = np.sqrt(scale) / 0.87962566103423978
        values = np.clip(rng.normal(0.0, std, shape), -2 * std, 2 * std)
    return values.astype(keras.backend.standardize_dtype(dtype))


_HOST_RNG = np.random.default_rng(0)


@contextlib.contextmanager
def host_kernel_init():
    """On JAX every new kernel shape costs an XLA compile of the random
    initializer (about a second each on a small CPU). Tests about architectures
    draw the kernels with NumPy inside this, same distributions; tests about the
    initialisations themselves (test_fidelity.py) do not."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.initializers.VarianceScaling, "__call__", _numpy_variance_scaling)
        yield


# --- the quick subset: python -m tests -m "not slow" -------------------------------------

# What makes a test slow here: it trains (train, fit, a study's main, the CLI)
# or starts another Python. Read from the test's source and its fixtures', so
# that a new test is marked without anyone remembering to. The GPU run book's
# run_part starts processes; the benchmark's scanned_steps trains.
_SLOW_CALLS = re.compile(r"\b(train|train_in_fresh_session|run_cli|run_main|run_python|start_cli|main|fit|run_notebook|run_data_parallel_script|launch_cli|start_processes|srun|run_part|scanned_steps)\(|subprocess\.|\.fit\(")


def _slow(function):
    try:
        return bool(_SLOW_CALLS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    _one_backend_only(config, items)
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        functions = [item.function] if hasattr(item, "function") else []
        for definitions in (fixtures.name2fixturedefs.values() if fixtures else ()):
            functions += [d.func for d in definitions if getattr(d, "baseid", "").startswith("tests")]
        if any(_slow(f) for f in functions):
            item.add_marker(pytest.mark.slow)


# --- tests that do not depend on the backend run once under `python -m tests` ------------


def _one_backend_only(config, items):
    """Under `python -m tests` (which runs the suite once per backend, in
    parallel), a test marked one_backend(name) runs in name's run only: what
    it checks (a study's tables, the run folder, the data loaders) is the
    same on either backend, and running it twice would double the suite's
    time for nothing. The marks spread these tests over both runs."""
    if os.environ.get("DAVIDNET_TEST_SPLIT") != "1":
        return
    backend = keras.backend.backend()
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("one_backend")
        (drop if marker is not None and marker.args[0] != backend else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
