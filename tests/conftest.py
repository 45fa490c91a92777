import os

import keras
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
