"""The speed benchmark `python -m benchmarks.davidnet`, in its small mode on
synthetic data: every figure is in the JSON, positive, and consistent with
the others; bad input stops with one line."""

import contextlib
import io
import json
import os
import statistics

import keras
import numpy as np
import pytest

from benchmarks import davidnet as davidnet_benchmark
from benchmarks.davidnet import RUN_KEYS, SCANNED, SCANNED_LABEL, SETTINGS, main
from davidnet.hardware import one_off_compiles

BATCH = 128
TINY = ["--small", "--synthetic", "--width", "0.0625", "--subset", "512", "--epochs", "1", "--seeds", "2",
        "--steps", "2", "--warmup-steps", "1", "--repeats", "2", "--batch-size", str(BATCH), "--target", "0.5"]
CACHE = ["--compile-cache", os.environ.get("DAVIDNET_TEST_JAX_CACHE", "")]
# The benchmark has no code of its own per backend (its runs are `train`'s, tested on both):
# under `python -m tests` it runs in the JAX pass, the backend of its GPU run (benchmarks/h200.py).
pytestmark = pytest.mark.one_backend("jax")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny benchmark for the whole file: (exit code, the JSON, what it printed, its folder)."""
    root = tmp_path_factory.mktemp("benchmark")
    printed = io.StringIO()
    # XLA without most of its optimisations while the benchmark runs (JAX): it compiles four
    # train steps and two test steps, several seconds each when optimised on 2 CPU cores;
    # the figures checked here do not depend on how fast the steps run.
    with contextlib.redirect_stdout(printed), one_off_compiles():
        code = main([*TINY, *CACHE, "--out", str(root / "bench.json"), "--results-dir", str(root / "runs")])
    return code, json.loads((root / "bench.json").read_text()), printed.getvalue(), root


def test_the_json_records_machine_versions_command_config_and_data(bench_run):
    code, report, _, _ = bench_run
    assert code == 0
    for key in ("machine", "backend", "versions", "command", "config", "model_flops_per_image", "steps",
                "runs", "stats", "data", "benchmark", "targets"):
        assert key in report, key
    assert report["backend"] == report["machine"]["backend"] == keras.backend.backend()
    assert report["versions"]["keras"] == keras.__version__
    assert report["versions"]["python"].count(".") == 2 and report["versions"]["numpy"]
    assert report["command"][:3] == ["python", "-m", "benchmarks.davidnet"] and report["command"][3:6] == TINY[:3]
    config = report["config"]
    assert (config["width"], config["batch_size"], config["epochs"], config["subset"]) == (0.0625, BATCH, 1, 512)
    assert report["benchmark"] == {"small": True, "seeds": 2, "steps": 2, "warmup_steps": 1, "repeats": 2,
                                   "compile_cache": bool(CACHE[1]), "scan_step": False}
    assert report["data"]["synthetic"] is True and report["data"]["jpeg_copy"] is False
    assert report["data"]["train_images"] == 512
    assert report["targets"]["applies"] is False and report["targets"]["met"] is None  # not an H200


def test_step_figures_are_positive_and_agree_with_each_other(bench_run):
    _, report, _, _ = bench_run
    flops = report["model_flops_per_image"]
    # DavidNet at width 1/16: 4, 8, 16, 32 channels (see tests/test_flops.py for width 1).
    macs = (32 * 32 * 9 * (3 * 4 + 4 * 8) + 16 * 16 * 9 * (2 * 8 * 8 + 8 * 16)
            + 8 * 8 * 9 * 16 * 32 + 4 * 4 * 9 * 2 * 32 * 32 + 32 * 10)
    assert flops == {"forward": 2 * macs, "train": 3 * 2 * macs}
    steps = report["steps"]
    assert steps["flops_per_image"] == flops
    assert steps["precision"] == ("mixed_bfloat16" if report["machine"]["platform"] == "gpu" else "float32")
    assert set(steps["settings"]) == set(SETTINGS)  # (d) only with --scan-step
    for name, s in steps["settings"].items():
        assert (s["steps"], s["warmup_steps"], s["repeats"], s["batch_size"]) == (2, 1, 2, BATCH), name
        assert len(s["epoch_seconds"]) == 2 and min(s["epoch_seconds"]) > 0
        assert s["seconds"] == pytest.approx(statistics.median(s["epoch_seconds"]))
        assert s["warmup_s"] > 0 and s["first_step_s"] > 0 and s["compile_s"] >= 0
        assert s["ms_per_step"] == pytest.approx(1000 * s["seconds"] / 2)
        assert s["images_per_s"] == pytest.approx(BATCH / s["ms_per_step"] * 1000)
        assert s["tflops"] == pytest.approx(flops["train"] * s["images_per_s"] / 1e12)
    a, b, c = (steps["settings"][name]["ms_per_step"] for name in ("no_augmentation", "augmentation", "augmentation_and_data_path"))
    assert steps["augmentation_overhead_pct"] == pytest.approx(100 * (b - a) / a)
    assert steps["data_path_overhead_pct"] == pytest.approx(100 * (c - b) / b)
    assert steps["input_share_pct"] == pytest.approx(100 * (c - a) / c)
    assert "faster_loop" not in steps


def test_runs_and_their_statistics_agree(bench_run):
    _, report, _, root = bench_run
    runs = report["runs"]
    assert [run["seed"] for run in runs] == [0, 1]
    for run in runs:
        assert run["status"] == "completed" and run["epochs_completed"] == 1
        assert 0 <= run["final_accuracy"] <= 1
        assert min(run["compile_s"], run["train_s"], run["eval_s"], run["wall_s"]) > 0
        saved = json.loads((root / "runs" / f"seed{run['seed']}" / "results.json").read_text())
        assert saved["config"]["seed"] == run["seed"]
        assert {key: saved[key] for key in RUN_KEYS if key != "seed"} == {key: run[key] for key in RUN_KEYS if key != "seed"}
    stats = report["stats"]
    for key in ("final_accuracy", "train_s", "compile_s", "eval_s", "wall_s"):
        values = [run[key] for run in runs]
        assert stats[key]["n"] == 2
        assert stats[key]["mean"] == pytest.approx(statistics.fmean(values)), key
        assert stats[key]["std"] == pytest.approx(statistics.stdev(values)), key
        assert (stats[key]["min"], stats[key]["max"]) == (min(values), max(values)), key
    reached = [run["seconds_to_target"] for run in runs if run["target_epoch"] is not None]
    assert stats["reached_target"] == stats["seconds_to_target"]["n"] == len(reached)
    assert stats["seconds_to_target"]["mean"] == (statistics.fmean(reached) if reached else None)
    assert (stats["target"], stats["runs"]) == (0.5, 2)


def test_the_printed_tables_carry_the_json_figures(bench_run):
    _, report, printed, root = bench_run
    assert printed.startswith("small mode (width 0.0625, 512 images, 1 epochs, batch 128, 2 seeds, 1 + 2x2 steps)")
    for name, label in SETTINGS.items():
        row = next(line for line in printed.splitlines() if line.startswith(label))
        assert f"{report['steps']['settings'][name]['images_per_s']:,.0f}" in row
    assert SCANNED_LABEL not in printed and "faster loop" not in printed
    accuracy = next(line for line in printed.splitlines() if line.startswith("final accuracy"))
    stats = report["stats"]["final_accuracy"]
    assert accuracy.split()[2:7] == ["2", *(f"{stats[k]:.4f}" for k in ("mean", "std", "min", "max"))]
    assert f"reached 0.5 in {report['stats']['reached_target']} of 2 runs" in printed
    assert printed.rstrip().endswith(f"benchmark: {root / 'bench.json'}")


def test_the_scanned_setting_times_its_steps_in_one_compiled_call_each():
    """Setting (d) of --scan-step: `steps` steps per call of the scanned loop, the
    first call compiling, each timed call a new permutation of the data."""
    from davidnet.config import Config
    from pipelines.synthetic import synthetic_cifar10

    data = synthetic_cifar10(n_train=40, n_test=8)
    config = Config(width=0.0625, batch_size=16, epochs=1, verbose=0, checkpoint=False, save_model=False)
    with one_off_compiles():
        s = davidnet_benchmark.scanned_steps(config, data.x_train, data.y_train, 10, 2, 2, 1e9)
    assert (s["steps"], s["warmup_steps"], s["repeats"], s["batch_size"]) == (2, 2, 2, 16)
    assert len(s["epoch_seconds"]) == 2 and s["seconds"] == pytest.approx(statistics.median(s["epoch_seconds"]))
    assert s["ms_per_step"] == pytest.approx(1000 * s["seconds"] / 2) and s["images_per_s"] == pytest.approx(16 / s["seconds"] * 2)
    assert s["tflops"] == pytest.approx(1e9 * s["images_per_s"] / 1e12)
    # The first call holds the compilation: far longer than a timed call, which it includes.
    assert s["compile_s"] == pytest.approx(s["first_step_s"] - s["seconds"]) and s["compile_s"] > s["seconds"]
    with pytest.raises(ValueError, match=r"--scan-step: 3 steps of batch 16 need 48 training images, there are 40"):
        davidnet_benchmark.scanned_steps(config, data.x_train, data.y_train, 10, 3, 1, 1e9)


def test_a_benchmark_stopped_after_a_setting_keeps_its_figures(tmp_path, monkeypatch):
    """Each setting is saved as it is measured: Ctrl-C (or the run book's time limit) in (b) keeps (a)."""
    real = davidnet_benchmark.time_steps
    calls = []

    def stopped_in_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(davidnet_benchmark, "time_steps", stopped_in_the_second)
    out = tmp_path / "b.json"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), one_off_compiles():
        code = main(["--small", "--synthetic", "--width", "0.0625", "--subset", "64", "--batch-size", "32", "--steps", "1",
                     "--warmup-steps", "1", "--repeats", "1", "--skip-training", *CACHE, "--out", str(out)])
    assert code == 130
    steps = json.loads(out.read_text())["steps"]
    assert list(steps["settings"]) == ["no_augmentation"] and steps["settings"]["no_augmentation"]["ms_per_step"] > 0
    assert "input_share_pct" not in steps  # the overheads need (a) to (c)


def test_the_loop_comparison_and_its_row_follow_the_ms_per_step():
    row = {"ms_per_step": 5.0, "images_per_s": 102_400.0, "tflops": 233.0, "compile_s": 9.0}
    settings = {name: dict(row) for name in (*SETTINGS, SCANNED)}
    for scanned_ms, faster, pct in ((4.0, "scan", -20.0), (5.5, "fit", 10.0), (5.0, "fit", 0.0)):
        settings[SCANNED]["ms_per_step"] = scanned_ms
        comparison = davidnet_benchmark.loop_comparison(settings)
        assert comparison["faster_loop"] == faster and comparison["scan_vs_fit_pct"] == pytest.approx(pct)
    steps = {"settings": settings, "augmentation_overhead_pct": 0.0, "data_path_overhead_pct": 0.0,
             "input_share_pct": 0.0, **davidnet_benchmark.loop_comparison(settings)}
    table = davidnet_benchmark.steps_table(steps).splitlines()
    scanned = next(line for line in table if line.startswith(SCANNED_LABEL))
    assert "5.000" in scanned and "+0.0% vs (c)" in scanned
    assert table[-1] == "faster loop: fit (--loop fit)"


def run_main(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_missing_data_folder_is_one_error_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, _, err = run_main(capsys, "--data-dir", str(missing), "--out", str(tmp_path / "b.json"),
                            "--results-dir", str(tmp_path / "runs"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and str(missing) in err
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps: must be > 0, got 0"),
        (["--width", "wide"], "--width: expected float, got 'wide'"),
        (["--batch-size", "1024"], "--batch-size 1024 is larger than the 512 training images"),
        (["--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--skip-steps", "--skip-training"], "leave nothing to run"),
        (["--data-dir", "."], "--synthetic and --data-dir exclude each other"),
        (["--eval-every", "-1"], "eval_every must be >= 0"),
        (["--scan-step", "--skip-steps"], "--scan-step times the scanned loop of --loop scan"),
        (["--scan-step", "--steps", "3", "--batch-size", "256"], "--scan-step: 3 steps of batch 256 need 768 training images, there are 512"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(tmp_path, capsys, args, message):
    code, _, err = run_main(capsys, "--small", "--synthetic", "--subset", "512", "--out", str(tmp_path / "b.json"),
                            "--results-dir", str(tmp_path / "runs"), *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_the_cycled_feed_starts_a_new_permutation_whenever_the_data_runs_out():
    from keras import ops

    from benchmarks.davidnet import Cycled
    from pipelines.feeds import DeviceFeed

    images = np.zeros((12, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(12)  # each image carries its index

    def indices(batch):
        return ops.convert_to_numpy(batch[0])[:, 0, 0, 0].tolist()

    feed = Cycled(DeviceFeed(images, np.arange(12) % 10, batch_size=4, seed=0), steps=7)
    assert len(feed) == 7
    seen = [indices(feed[i]) for i in range(7)]
    reference = DeviceFeed(images, np.arange(12) % 10, batch_size=4, seed=0)  # the same draws, by hand
    epochs = []
    for _ in range(3):
        epochs.append([indices(reference[i]) for i in range(3)])
        reference.on_epoch_begin()
    assert seen == epochs[0] + epochs[1] + epochs[2][:1]
    assert sorted(sum(epochs[0], [])) == list(range(12)) and epochs[0] != epochs[1]
