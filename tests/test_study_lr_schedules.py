"""The LR-schedules study in-process on --smoke data: range test, sweep, rerun, config-file grid, errors.

The sweep is trained once (a module fixture: two runs of one epoch) and the
tests that need a finished sweep reuse its folder, so the file stays around a
minute per backend on a loaded CPU.
"""

import csv
import json
import math
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from experiments.lr_schedules import LRRangeTest, main, suggest_lr

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)

SCALE = "0.5*(1+sin(x*pi/2.5))"
FAST = ["--smoke", "--compile-cache", "", "--seeds", "0", "--epochs", "1", "--batch-size", "64"]
SWEEP = [*FAST, "--schedules", "onecycle", "--lrs", "0.4", "--step-sizes", "2", "--scale-fn", SCALE]


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_png(path):
    assert path.stat().st_size < 150_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    study = tmp_path_factory.mktemp("sweep")
    assert main([*SWEEP, "--results-dir", str(study)]) == 0
    return study


def test_range_test_raises_the_lr_exponentially_and_suggests_one_inside_the_range(tmp_path, capsys):
    out = tmp_path / "study"
    assert main([*FAST, "--range-test", "--range-steps", "12", "--results-dir", str(out)]) == 0
    rows = read_csv(out / "range-test" / "range_test.csv")
    lrs = [float(r["lr"]) for r in rows]
    smoothed = [float(r["smoothed_loss"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-4) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert np.allclose(np.diff(np.log(lrs)), math.log(1e5) / 11), "exponential: a constant ratio per step"
    summary = json.loads((out / "range-test" / "range_test.json").read_text())
    if summary["stopped_early"]:
        assert not math.isfinite(smoothed[-1]) or smoothed[-1] > 4 * min(smoothed)
    else:
        assert len(rows) == 12 and lrs[-1] == pytest.approx(10.0)
    assert lrs[0] <= summary["suggested_lr"] <= lrs[-1]
    assert "suggested max LR" in capsys.readouterr().out
    assert_png(out / "range-test" / "lr_range_test.png")


def test_range_test_callback_recovers_each_batch_loss_from_keras_running_mean():
    # Batch k holds x = k only, so its loss (w x - y)^2 with w = 1, y = -10 is known.
    x = np.repeat(np.arange(8, dtype="float32"), 4)[:, None]
    y = np.full((32, 1), -10.0, "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    test = LRRangeTest(1e-12, 1e-11, num_steps=11, stop_factor=100.0)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[test])
    assert test.losses == pytest.approx([(k % 8 + 10.0) ** 2 for k in range(11)], rel=1e-5)
    assert test.lrs[0] == pytest.approx(1e-12) and test.lrs[-1] == pytest.approx(1e-11)
    assert not test.stopped_early


def test_suggested_lr_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-4, 1, 51)
    loss = 2.0 - np.tanh(np.log10(lrs) + 1.0) + np.where(lrs > 1.0, 10 * np.log10(lrs) ** 2, 0.0)
    assert suggest_lr(lrs, loss) == pytest.approx(0.1)  # tanh falls fastest at log10(lr) = -1
    assert suggest_lr(lrs, np.linspace(2, 3, 51)) == lrs[0]  # never fell: the lowest LR


def test_sweep_writes_one_row_per_cell_and_the_schedules_plot(sweep):
    rows = read_csv(sweep / "table.csv")
    assert [(r["schedule"], r["params"]) for r in rows] == [
        ("onecycle", "lr=0.4"),
        ("custom", f"lr=0.4 step_size=2 scale_fn={SCALE}"),
    ]
    for row in rows:
        assert row["n_seeds"] == "1" and row["diverged"] == "0"
        assert 0.0 <= float(row["final_acc_mean"]) <= 1.0
    assert_png(sweep / "lr_schedules.png")


def test_the_custom_scale_function_reaches_the_run(sweep):
    results = json.loads((sweep / "runs" / "custom-lr0.4-ss2-seed0" / "results.json").read_text())
    assert results["config"]["scale_fn"] == SCALE
    history = results["lr_history"]
    assert len(history) == 8  # one epoch of 512 // 64 steps: two cycles of 4
    for step, lr in history:
        at = step + 1  # the recipe's --lr-step-offset 1: step k trains at the schedule's k + 1
        cycle = math.floor(1 + at / 4)
        x = abs(at / 2 - 2 * cycle + 1)
        scale = 0.5 * (1 + math.sin(cycle * math.pi / 2.5))
        assert lr == pytest.approx(0.4 * max(0.0, 1 - x) * scale)
    assert dict(history)[1] == pytest.approx(0.4 * 0.5 * (1 + math.sin(math.pi / 2.5)))  # not plain triangular's 0.4


def test_a_rerun_skips_finished_runs(sweep, capsys):
    assert main([*SWEEP, "--results-dir", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert out.count("already completed, skipped") == 2 and "seed0: training" not in out


def test_a_rerun_with_other_settings_is_refused(sweep, capsys):
    assert exit_code([*SWEEP, "--results-dir", str(sweep), "--width", "0.0625"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with other settings" in err[0] and "width" in err[0]


def test_a_config_file_grid_is_honoured_and_flags_win(sweep, tmp_path, capsys):
    shutil.copytree(sweep / "runs", tmp_path / "runs")
    config = tmp_path / "grid.toml"
    config.write_text('schedules = "onecycle"\nlrs = "0.4"\nseeds = "0,1"\n')
    assert main([*FAST, "--config", str(config), "--results-dir", str(tmp_path)]) == 0  # --seeds 0 beats the file
    assert "already completed, skipped" in capsys.readouterr().out
    rows = read_csv(tmp_path / "table.csv")
    assert [(r["schedule"], r["n_seeds"]) for r in rows] == [("onecycle", "1")]


@pytest.mark.parametrize("argv, message", [
    (["--scale-fn", "__import__('os')"], "__import__"),
    (["--schedules", "piecewise,cosine"], "--schedules: unknown 'cosine'"),
    (["--schedules", "custom"], "needs --scale-fn"),
    (["--lrs", "0.4,fast"], "--lrs"),
    (["--range-test", "--range-min-lr", "1", "--range-max-lr", "0.1"], "--range-min-lr"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert exit_code([*FAST, *argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_unknown_config_key_exits_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('schedule = "onecycle"\n')
    assert exit_code([*FAST, "--config", str(config), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown setting 'schedule'" in err[0]
