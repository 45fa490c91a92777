"""docs/quickstart.ipynb: valid, without outputs, made by docs/make_quickstart.py,
and run top to bottom on tiny synthetic data in a fresh process on this suite's
backend (no Jupyter needed: its code cells are executed in one namespace, shell
and magic lines skipped)."""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "docs" / "quickstart.ipynb"

# The parameters a real run uses: the CLI's defaults (DavidNet's DAWNBench recipe).
REAL = {"DATA_DIR": None, "SYNTHETIC": False, "SUBSET": None, "EPOCHS": 24, "BATCH_SIZE": 512, "WIDTH": 1.0,
        "PEAK_LR": 0.4, "WARMUP": 5 / 24, "WEIGHT_DECAY": 5e-4, "HOST_AUGMENT": False}
# A tiny run: 256 synthetic images, 4 steps an epoch.
TINY = {"SYNTHETIC": True, "SUBSET": 256, "EPOCHS": 2, "BATCH_SIZE": 64, "WIDTH": 0.125}

# Runs the code cells (argv[1]: a JSON list of [cell id, source]) in one namespace and writes what
# the test checks (argv[2]). Then it runs the training cell once more, on the compiled model, with
# HOST_AUGMENT = True: the tf.data feed and the host augmenter in fit, for a few seconds instead of
# a second run of the whole notebook.
RUNNER = r"""
import json, os, sys, types

import keras
import numpy as np

from davidnet.hardware import use_compilation_cache
from tests.conftest import _numpy_variance_scaling

use_compilation_cache(os.environ.get("DAVIDNET_TEST_JAX_CACHE"))  # the suite's shared JAX cache, if any
# Kernels drawn with NumPy, as tests/conftest.py's host_kernel_init: the same distributions without an
# XLA compilation per kernel shape on JAX (about 20 s of this test on 2 CPU cores).
keras.initializers.VarianceScaling.__call__ = _numpy_variance_scaling

cells = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for cell_id, source in cells:
    exec(compile(source, f"<notebook cell {cell_id}>", "exec"), namespace)
ns = types.SimpleNamespace(**namespace)
again = ns.loaded.predict(ns.images, verbose=0)
report = {
    "history": ns.history.history,
    "schedule_steps": [step for step, _ in ns.schedule.history],
    "steps_per_epoch": ns.steps_per_epoch,
    "timer_epochs": ns.timer.epochs,
    "compile_s": ns.timer.compile_s,
    "target": ns.timer.target,
    "feed": type(ns.feed).__name__,
    "host_augment": ns.host_augment.__name__,
    "augmented": [str(ns.augmented.dtype), list(ns.augmented.shape)],
    "first_layer": type(ns.loaded.layers[1]).__name__,
    "optimizer": type(ns.loaded.optimizer).__name__,
    "logit_diff": float(np.max(np.abs(again - ns.model.predict(ns.images, verbose=0)))),
    "predicted": ns.predicted,
    "loaded_argmax": np.argmax(again, axis=1).tolist(),
    "class_names": list(ns.data.class_names),
    "out_dir": str(ns.out_dir.resolve()),
}

batches = []
augment = namespace["host_augment"]
def counted(images):
    batches.append(len(images))
    return augment(images)
namespace.update(HOST_AUGMENT=True, EPOCHS=1, host_augment=counted)
exec(compile(dict(cells)["train"], "<notebook cell train, HOST_AUGMENT = True>", "exec"), namespace)
report["host_run"] = {"feed": type(namespace["feed"]).__name__, "batches": batches, "epochs": len(namespace["timer"].epochs)}
json.dump(report, open(sys.argv[2], "w"))
"""


def load_notebook():
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def code_cells(notebook):
    """[(cell id, source)] of the code cells, in order."""
    return [(cell["id"], "".join(cell["source"])) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def assignments(source):
    """The parameter cell's top-level `NAME = value` statements."""
    return [node for node in ast.parse(source).body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)]


def parameters(source):
    """NAME -> value of each assignment of the parameter cell (plain literals and arithmetic such as 5 / 24)."""
    return {node.targets[0].id: eval(compile(ast.Expression(node.value), "<parameter>", "eval"), {"__builtins__": {}})
            for node in assignments(source)}


def with_parameters(source, values):
    """The parameter cell with these values swapped in, each line's comment kept."""
    lines = source.splitlines()
    found = set()
    for node in assignments(source):
        name = node.targets[0].id
        if name in values:
            assert node.value.lineno == node.value.end_lineno == node.lineno, f"{name}: one line per parameter"
            line = lines[node.lineno - 1]
            lines[node.lineno - 1] = line[: node.value.col_offset] + repr(values[name]) + line[node.value.end_col_offset :]
            found.add(name)
    assert found == set(values), f"the parameter cell has no {sorted(set(values) - found)}"
    return "\n".join(lines) + "\n"


def without_shell(source):
    """Drops IPython's shell (`!`) and magic (`%`) lines, as plain Python cannot run them."""
    return "".join(line for line in source.splitlines(keepends=True) if not line.lstrip().startswith(("!", "%")))


def test_notebook_is_valid_without_outputs_and_as_generated():
    notebook = load_notebook()
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {cell['id']} has stored outputs"
            compile(without_shell("".join(cell["source"])), cell["id"], "exec")  # every cell is Python
    assert notebook["cells"][0]["cell_type"] == "markdown"
    spec = importlib.util.spec_from_file_location("make_quickstart", REPO_ROOT / "docs" / "make_quickstart.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert NOTEBOOK.read_text(encoding="utf-8") == maker.render(), "run python docs/make_quickstart.py"


def test_first_code_cell_holds_the_real_parameters():
    notebook = load_notebook()
    assert notebook["cells"][1]["cell_type"] == "code"
    found = parameters(code_cells(notebook)[0][1])
    assert {name: found.get(name) for name in REAL} == REAL
    from davidnet.training import Config

    config = Config()  # the CLI's defaults are the same recipe
    assert (config.epochs, config.batch_size, config.width, config.lr, config.weight_decay) == (
        found["EPOCHS"], found["BATCH_SIZE"], found["WIDTH"], found["PEAK_LR"], found["WEIGHT_DECAY"])
    # The install cell names both GPU routes and the Colab route, without running pip by default.
    install = next("".join(c["source"]) for c in notebook["cells"] if c["id"] == "install")
    for needed in ("requirements-jax-cuda.txt", "requirements-tensorflow-cuda.txt", "requirements.txt", "--no-deps"):
        assert needed in install


def run_notebook(tmp_path, values):
    (first_id, parameter_cell), *rest = code_cells(load_notebook())
    cells = [(first_id, with_parameters(parameter_cell, values))] + [(i, without_shell(source)) for i, source in rest]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(
        [sys.executable, "runner.py", "cells.json", "report.json"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((tmp_path / "report.json").read_text()), result.stdout


def test_notebook_runs_top_to_bottom(tmp_path):
    report, stdout = run_notebook(tmp_path, TINY)
    epochs, steps = TINY["EPOCHS"], TINY["SUBSET"] // TINY["BATCH_SIZE"]

    # Our schedule ran in the train step and History has each epoch's last rate: DavidNet's
    # 0 -> 0.4 -> 0, peaking at 5/24 of the run; the last step of epoch e trains at the schedule's e * steps.
    assert report["steps_per_epoch"] == steps
    assert report["schedule_steps"] == list(range(epochs * steps))
    expected = np.interp(np.arange(1, epochs + 1), [0, 5 / 24 * epochs, epochs], [0.0, 0.4, 0.0])
    np.testing.assert_allclose(report["history"]["learning_rate"], expected, atol=1e-7)
    assert len(report["history"]["val_accuracy"]) == epochs
    assert all(np.isfinite(report["history"]["loss"]))

    # The timer saw every epoch, its clocks apart, against the data's target.
    assert report["target"] == 0.94  # synthetic data: DAWNBench's bar
    assert [r["epoch"] for r in report["timer_epochs"]] == list(range(1, epochs + 1))
    assert all(r["train_s"] > 0 and r["eval_s"] > 0 and "val_accuracy" in r for r in report["timer_epochs"])
    assert report["compile_s"] > 0

    # The default feed keeps the data on the device; the host augmenter keeps a batch's shape and dtype.
    assert report["feed"] == "DeviceFeed"
    albumentations = importlib.util.find_spec("albumentations") is not None
    assert report["host_augment"] == ("host_augment" if albumentations else "numpy_augment")
    assert report["augmented"] == ["uint8", [8, 32, 32, 3]]
    # HOST_AUGMENT = True: the training cell feeds tf.data, every batch through the host augmenter.
    assert report["host_run"] == {"feed": "_PrefetchDataset", "batches": [TINY["BATCH_SIZE"]] * steps, "epochs": 1}

    # davidnet.load_model gives back the trained model, augmentation layer and optimizer included.
    assert report["first_layer"] == "BatchAugmentation" and report["optimizer"] == "TorchSGD"
    assert report["logit_diff"] < 1e-5
    assert report["predicted"] == [report["class_names"][i] for i in report["loaded_argmax"]]
    assert "the loaded model predicts as the trained one: True" in stdout

    # Everything it saves lands in OUT_DIR, relative to the working directory.
    out_dir = Path(report["out_dir"])
    assert out_dir == (tmp_path / "quickstart-run").resolve()
    assert (out_dir / "model.keras").stat().st_size > 0
    for figure in ("accuracy.png", "predictions.png", "host_augment.png"):
        assert (out_dir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
