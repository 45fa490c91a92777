"""The private Keras APIs the project relies on are all in pipelines/keras_private.py,
and still there in the installed Keras."""

import re

import keras
import numpy as np
import pytest

from pipelines import keras_private
from tests.helpers import ROOT, run_python

# Uses (calls, assignments), not mentions in docstrings.
PRIVATE = re.compile(r"\._symbolic_build\(|\._get_jax_state\(|\.train_function\s*=[^=]|_allow_non_tensor_positional_args\s*=|^\s*async_safe\s*=|saving_lib\.")


def test_the_installed_keras_still_has_every_private_api_relied_on():
    keras_private.check()  # raises RuntimeError naming pipelines/keras_private.py and the API


def test_a_changed_private_api_is_reported_naming_the_module(monkeypatch):
    from keras.src.trainers import trainer

    monkeypatch.setattr(trainer.Trainer, "_symbolic_build", lambda self, iterator=None: None)
    with pytest.raises(RuntimeError, match=r"pipelines/keras_private.py relies on .*Model._symbolic_build"):
        keras_private.check()


def test_no_other_module_touches_a_private_keras_name():
    offenders = []
    for package in ("davidnet", "pipelines", "experiments", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "keras_private.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if PRIVATE.search(code) and "keras_private." not in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private Keras APIs outside pipelines/keras_private.py:\n" + "\n".join(offenders)


def test_it_is_checked_against_the_pinned_keras():
    pinned = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("keras=="))
    assert pinned == f"keras=={keras_private.CHECKED_WITH}" == f"keras=={keras.__version__}"


def test_the_in_memory_model_and_weights_load_back_with_the_public_api(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    (tmp_path / "m.keras").write_bytes(keras_private.model_bytes(model))
    (tmp_path / "w.weights.h5").write_bytes(keras_private.weights_bytes(model))
    loaded = keras.models.load_model(tmp_path / "m.keras")
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(tmp_path / "w.weights.h5")
    for other in (loaded, fresh):
        np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
    # the optimizer's state too: its iteration count and momentum
    assert [np.asarray(v).tolist() for v in fresh.optimizer.variables] == [np.asarray(v).tolist() for v in model.optimizer.variables]


SEEDED_WITHOUT_TENSORFLOW = """
import random, sys
import keras, numpy as np
from pipelines import keras_private
from pipelines.feeds import tfdata_feed

def draws():
    return [float(keras.random.uniform(())), random.random(), float(np.random.rand())]

def first_batch_labels():
    feed = tfdata_feed(np.zeros((16, 2, 2, 3), np.uint8), np.arange(16) % 10, batch_size=16, seed=1)
    return np.argmax(next(iter(feed))[1].numpy(), axis=1).tolist()

keras_private.set_random_seed(5)
ours = draws()
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
saved = keras_private.model_bytes(model)
assert "tensorflow" not in sys.modules, "seeding or saving imported TensorFlow"
ours_order = first_batch_labels()  # imports TensorFlow: it starts from the kept seed

keras.utils.set_random_seed(5)  # Keras's own, TensorFlow imported now
assert draws() == ours, (draws, ours)
assert first_batch_labels() == ours_order
keras.utils.set_random_seed(6)
assert first_batch_labels() != ours_order  # the seed decides the order
print("ok", len(saved))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="TensorFlow is imported on its own backend")
def test_seeding_and_saving_on_jax_do_not_import_tensorflow_and_seed_as_keras_does(tmp_path):
    """keras.utils.set_random_seed and model saving import TensorFlow wherever it is installed
    (3 to 4.5 s of a JAX run); keras_private's versions do not, and give the same random
    numbers, TensorFlow's (a tf.data feed's order) included."""
    done = run_python(SEEDED_WITHOUT_TENSORFLOW, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("ok "), done.stderr[-3000:]
