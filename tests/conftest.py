import os

from davidnet.hardware import use_compilation_cache

# `python -m tests` shares one JAX compilation cache between the test processes;
# a plain `pytest` run goes without one.
use_compilation_cache(os.environ.get("DAVIDNET_TEST_JAX_CACHE"))
