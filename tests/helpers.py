"""What several test modules share: the repository root, tiny run settings and
data, and the train CLI run in-process or as a subprocess."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from pipelines.cifar10 import CLASS_NAMES, Cifar10
from tests.datasets import synthetic_arrays

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(width=0.125, batch_size=32, verbose=0, save_model=False)


def tiny_data(n_train=256, n_test=100):
    x_train, y_train = synthetic_arrays(n_train, seed=1)
    x_test, y_test = synthetic_arrays(n_test, seed=2)
    return Cifar10(x_train, y_train, x_test, y_test, "synthetic", "png", CLASS_NAMES)


def run_main(capsys, *args):
    """The CLI in-process (no interpreter start-up): (exit code, stdout, stderr)."""
    from experiments.davidnet import main

    try:
        code = main(["--compile-cache", os.environ.get("DAVIDNET_TEST_JAX_CACHE", ""), *args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.davidnet", "--compile-cache", os.environ.get("DAVIDNET_TEST_JAX_CACHE", ""), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_python(code, *args, cwd):
    """`code` in a fresh interpreter (nothing imported or registered yet), the
    repository on its path: the completed process, output captured."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )


# --- data parallelism (tests/test_distribute.py, tests/test_multiprocess.py) ---------------

# |loss| per epoch between a data-parallel run and its one-process, one-device run of the
# same global batch (2 epochs, width 0.125, batch 32, 256 images, lr 0.01, no crop/flip/cutout),
# measured on a 2-core x86 CPU; tests/test_distribute.py says where the differences come from.
# - JAX: 2 devices in one process 2.4e-7 and 1.5e-4; 2 processes 0 and 9.6e-5 (the CLI's data).
#   A 1-ulp change of the initial weights of a one-device run moves these losses by up to
#   1.8e-3 (12 seeds): that is the noise floor, on any CPU. Real bugs move them by 1.7e-2 or
#   more (ghost batch norm 1.7e-2 / 4.7e-2; one half batch fed twice 3.0e-2 / 4.8e-2).
#   Tolerance 5e-3: ~3x the noise floor, ~3x below the smallest bug.
# - TensorFlow, 2 replicas against 1 device: ghost batch norm and the shuffle one pass later
#   (see tests/test_distribute.py) make them the same run, not the same numbers (4.8e-3 and
#   3.2e-2 on the CLI's synthetic data). Tolerance 0.15. 2 workers against 1 process of 2
#   replicas (the same ghost batches, the same pass): 0 and 0, bit for bit; JAX's 5e-3 holds.
DATA_PARALLEL_TOLERANCE = {"jax": 5e-3, "tensorflow": 0.15}
SAME_REPLICAS_TOLERANCE = 5e-3


@contextlib.contextmanager
def ghost_batch_norm(groups):
    """Keras's BatchNormalization with its training moments taken over each of
    `groups` equal parts of the batch ("ghost" batches, what per-device moments
    would give): the bug that a data-parallel check must catch. keras.ops only."""
    import keras
    from keras import ops

    layer_class = keras.layers.BatchNormalization
    call = layer_class.call

    def ghost_call(self, inputs, training=None, mask=None):
        if not training:
            return call(self, inputs, training=training, mask=mask)
        x = ops.cast(inputs, "float32")
        parts = ops.reshape(x, (groups, -1, *x.shape[1:]))
        axes = tuple(range(1, len(parts.shape) - 1))
        mean, variance = ops.mean(parts, axis=axes, keepdims=True), ops.var(parts, axis=axes, keepdims=True)
        y = (parts - mean) * ops.rsqrt(variance + self.epsilon)
        y = y * self.gamma if self.scale else y
        y = y + self.beta if self.center else y
        return ops.cast(ops.reshape(y, ops.shape(x)), self.compute_dtype)

    layer_class.call = ghost_call
    try:
        yield
    finally:
        layer_class.call = call


def launch_cli(*args, processes=2, cache=None, env=None, timeout=600):
    """The train CLI as `processes` processes of one run (`experiments.launch`):
    the completed process, output captured (process 0's; the others' on failure)."""
    cache = os.environ.get("DAVIDNET_TEST_JAX_CACHE", "") if cache is None else cache
    command = [sys.executable, "-m", "experiments.davidnet", "--compile-cache", str(cache), *map(str, args)]
    return subprocess.run(
        [sys.executable, "-m", "experiments.launch", "--processes", str(processes), "--", *command],
        cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )
