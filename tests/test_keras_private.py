"""The private Keras APIs the project relies on are all in pipelines/keras_private.py,
and still there in the installed Keras."""

import re

import keras
import pytest

from pipelines import keras_private
from tests.helpers import ROOT

# Uses (calls, assignments), not mentions in docstrings.
PRIVATE = re.compile(r"\._symbolic_build\(|\._get_jax_state\(|\.train_function\s*=[^=]|_allow_non_tensor_positional_args\s*=|^\s*async_safe\s*=")


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
