"""What several test modules share: the repository root, tiny run settings and
data, and the train CLI run in-process or as a subprocess."""

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
