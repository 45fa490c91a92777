"""What several test modules share: the repository root, tiny run settings and
data, and the train CLI run in-process or as a subprocess."""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
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


# The data-parallel runs on 2 virtual CPU devices: a fresh process, as the device count is
# fixed when the backend starts (JAX: XLA_FLAGS before JAX is imported; TensorFlow: logical
# CPU devices before its runtime starts). Its "1" (JAX) and "2" (TensorFlow, MirroredStrategy)
# runs are also what tests/test_multiprocess.py compares its processes with: the same
# settings as its command line (RUN there) on the same images (tiny_data's).
DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, os, sys
    if os.environ["KERAS_BACKEND"] == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from davidnet.training import Config, train
    from tests.helpers import ghost_batch_norm, tiny_data

    out = {}
    runs = ("1", "2", "ghost") if os.environ["KERAS_BACKEND"] == "jax" else ("1", "2")
    for run in runs:
        # lr 0.01 (see DATA_PARALLEL_TOLERANCE); no augmentation: its draws depend on the batch layout.
        config = Config(width=0.125, batch_size=32, epochs=2, lr=0.01, crop_padding=0, flip=False, cutout=0,
                        devices=run if run != "ghost" else "1", verbose=0, save_model=False, checkpoint=False,
                        seed=0, lr_step_offset=0)
        with ghost_batch_norm(2) if run == "ghost" else contextlib.nullcontext():  # the bug to catch
            results = train(config, tiny_data(), os.path.join(sys.argv[1], run))
        out[run] = {"devices": results["devices"], "device_count": results["device_count"],
                    "loss": [r["loss"] for r in results["history"]],
                    "accuracy": [r["accuracy"] for r in results["history"]]}
    for devices, batch in (("3", 32), ("2", 33)):
        try:
            train(Config(width=0.125, batch_size=batch, epochs=1, devices=devices, verbose=0), tiny_data(),
                  os.path.join(sys.argv[1], "bad"))
            out["error " + devices] = None
        except ValueError as e:
            out["error " + devices] = str(e)
    print("RESULT " + json.dumps(out))
    """
)


def run_data_parallel_script(folder, backend):
    """DATA_PARALLEL_SCRIPT's results: {"1", "2" (and "ghost" on JAX): {devices, device_count,
    loss, accuracy per epoch}, "error 3", "error 2": the messages of two bad settings}."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_SCRIPT, str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


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
