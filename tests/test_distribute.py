"""Data parallelism (`--devices`) on 2 virtual CPU devices, for the active backend.

The device count is fixed when the backend starts (JAX: XLA_FLAGS before JAX
is imported; TensorFlow: logical CPU devices before its runtime starts), so
the runs are in a subprocess with the same KERAS_BACKEND as this process.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

from davidnet import distribute
from davidnet.training import Config

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND not in ("jax", "tensorflow"), reason="--devices is for JAX and TensorFlow")

# Measured on this CPU (2 epochs, width 0.125, batch 32, 256 images, lr 0.2, no
# crop/flip/cutout), per-epoch training loss, |2 devices - 1 device|:
# - JAX: 0 and 2.4e-7. DataParallel shards the batch axis within one SPMD
#   program, so batch norm takes its moments over the global batch (synchronised)
#   and the run is the 1-device run up to float rounding. Tolerance 1e-4.
# - TensorFlow: 0.015 and 0.062. MirroredStrategy's BatchNormalization takes its
#   moments per replica (ghost batches of 16 instead of 32), so the runs differ
#   by more than rounding. (Without batch norm and weight decay the gap was
#   0.011 / 0.045 at lr 0.2 and 1.6e-4 / 3.7e-4 at lr 0.02: some of it is the
#   order of the gradient all-reduce, amplified by a high learning rate on 8
#   steps per epoch.) Tolerance 0.15 absolute: same run, not the same numbers.
# Not yet explained (issue #14): on JAX, when the first step trains at a non-zero learning
# rate, the 2-device run departs from the 1-device run at that step (epoch-1 loss 2.1e-4
# apart with --lr-start 0.01, already at commit 94ebc77). Started at lr 0, as DavidNet's schedule
# was before its step offset, they agree to 1.8e-6 after 2 epochs: the runs here start at lr 0.
TOLERANCE = {"jax": 1e-4, "tensorflow": 0.15}[BACKEND]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    if os.environ["KERAS_BACKEND"] == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from davidnet.training import Config, train
    from tests.helpers import tiny_data

    out = {}
    for devices in ("1", "2"):
        # lr_step_offset 0: the first step at lr 0, as before the recipe's offset (see TOLERANCE).
        config = Config(width=0.125, batch_size=32, epochs=2, lr=0.2, crop_padding=0, flip=False, cutout=0,
                        devices=devices, verbose=0, save_model=False, checkpoint=False, seed=0, lr_step_offset=0)
        results = train(config, tiny_data(), os.path.join(sys.argv[1], devices))
        out[devices] = {"devices": results["devices"], "device_count": results["device_count"],
                        "loss": [r["loss"] for r in results["history"]]}
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


@pytest.fixture(scope="module")
def two_device_runs(tmp_path_factory):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("distribute"))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_two_devices_match_one_device_and_the_results_say_how_many(two_device_runs):
    one, two = two_device_runs["1"], two_device_runs["2"]
    assert one["devices"] == 1 and two["devices"] == 2
    if BACKEND == "jax":  # hardware.describe() counts TensorFlow's GPUs only, so 1 on CPUs there
        assert two["device_count"] == 2  # the machine's count, recorded beside the count used
    assert len(one["loss"]) == len(two["loss"]) == 2
    assert two["loss"][1] < two["loss"][0], "the 2-device run should learn"
    assert two["loss"] == pytest.approx(one["loss"], abs=TOLERANCE)


def test_more_devices_than_exist_and_uneven_batches_are_clear_errors(two_device_runs):
    assert two_device_runs["error 3"].startswith("asked for 3 devices, 2 found: ")
    assert "batch size 33 does not split across 2 devices" in two_device_runs["error 2"]


def test_too_many_devices_in_this_process():
    with pytest.raises(ValueError, match=r"asked for 999 devices, \d+ found: "):
        with distribute.data_parallel("999"):
            pass


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", ""])
def test_devices_setting_is_all_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="devices must be 'all' or a positive integer"):
        Config(devices=bad)
    assert Config(devices=" ALL ").devices == "all" and Config(devices=2).devices == "2"


def test_one_device_builds_no_distribution(tmp_path, monkeypatch):
    """devices "1" is the plain single-device path: nothing distributed is made or current."""
    import davidnet.builders as builders
    import davidnet.training as training
    from tests.helpers import tiny_data

    def refuse(*args, **kwargs):
        raise AssertionError("a distribution was built for devices='1'")

    monkeypatch.setattr(keras.distribution, "DataParallel", refuse)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        monkeypatch.setattr(tf.distribute, "MirroredStrategy", refuse)
    seen = []
    build_model = builders.build_model

    def recording_build_model(config, x_train=None):
        if BACKEND == "jax":
            seen.append(keras.distribution.distribution())
        else:
            import tensorflow as tf

            seen.append(tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)
        return build_model(config, x_train)

    monkeypatch.setattr(builders, "build_model", recording_build_model)
    config = Config(width=0.0625, batch_size=32, epochs=1, subset=64, verbose=0, save_model=False, checkpoint=False)
    results = training.train(config, tiny_data(n_train=64, n_test=50), tmp_path)
    assert seen == [None]
    assert results["devices"] == 1 and results["status"] == "completed"
