"""The one-call GPU run book of issue #16 (benchmarks/h200.sh, benchmarks/h200.py):
its command lines parse, the reference scripts get their one change, their logs
are read right, a part that runs out of time is stopped and the rest fit the
budget, and the summary checks each figure against its target. No training
here: `bash benchmarks/h200.sh --smoke` runs every part at toy size (minutes)."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import h200

ROOT = Path(__file__).resolve().parents[1]
# The module starts processes and reads files, the same on either backend: the JAX pass, as its GPU run.
pytestmark = pytest.mark.one_backend("jax")

AIRBENCH_LIKE = "def main(run, model):\n    pass\n\naccs = [main(run, None) for run in range(200)]\n"


def context(tmp_path, smoke, budget=500.0):
    devdata = tmp_path / "devdata"
    devdata.mkdir(exist_ok=True)
    (devdata / "airbench94_muon.py").write_text(AIRBENCH_LIKE)
    (devdata / "references.txt").write_text("airbench94_muon.py " + "a" * 40 + "\n")
    args = argparse.Namespace(smoke=smoke, data=str(tmp_path / "data"), out=str(tmp_path / "out"),
                              work=str(tmp_path / "work"), devdata=str(devdata), torch_python="/opt/torch/python3",
                              budget=budget)
    ctx = h200.Context(args)
    for folder in (ctx.returned, ctx.out, ctx.work / "reference"):
        folder.mkdir(parents=True, exist_ok=True)
    return ctx


@pytest.mark.parametrize("smoke", [False, True])
def test_every_part_is_a_command_its_tool_accepts_in_the_issues_order(tmp_path, smoke):
    from benchmarks import davidnet as benchmark
    from experiments import davidnet as train_cli
    from experiments import fast_ablation

    assert list(h200.PARTS) == ["env", "reference", "airbench", "steps", "fast", "davidnet24", "epochs20", "hiverge"]
    parsers = {"benchmarks.davidnet": benchmark.build_parser, "experiments.fast_ablation": fast_ablation.build_parser,
               "experiments.davidnet": train_cli.build_parser}
    ctx = context(tmp_path, smoke)
    ctx.parts["reference"] = {"status": "completed"}
    seen = {}
    for name, (build, _, _, _) in h200.PARTS.items():
        command = build(ctx)
        if name == "hiverge":  # not in this devdata: a reason, not a command
            assert command.startswith(f"{ctx.devdata / 'cifar10_speedrun.py'} is missing")
            continue
        if name == "airbench":
            prepared = (ctx.work / "reference" / "airbench94_muon.py").read_text()
            assert prepared == AIRBENCH_LIKE.replace("range(200)", "range(5)")
            if smoke:
                assert command.startswith("needs CUDA")
            else:
                assert command == ["/opt/torch/python3", "airbench94_muon.py"]
            continue
        if command[1] == "-m":
            parsers[command[2]]().parse_args(command[3:])  # an unknown flag or a bad value exits here
            seen[name] = command[3:]
        else:  # env and reference: a function of this module, in a process of its own
            assert command[1] == "-c" and command[2].startswith("from benchmarks.h200 import ")
            compile(command[2], name, "exec")
    full = not smoke
    assert ("--no-small" in seen["steps"]) == full and "--scan-step" in seen["steps"]
    assert seen["steps"][seen["steps"].index("--batch-size") + 1] == ("512" if full else "128")
    # One scanned call of --steps steps must fit in the training images (50,000; 1,024 in --smoke).
    steps, batch = (int(seen["steps"][seen["steps"].index(flag) + 1]) for flag in ("--steps", "--batch-size"))
    benchmark.check_scan_steps(steps, batch, 50_000 if full else 1024)
    assert seen["fast"][seen["fast"].index("--seeds") + 1] == ("0,1,2,3,4,5,6,7,8,9" if full else "0,1")
    assert seen["fast"][seen["fast"].index("--only") + 1] == ""  # the preset alone
    assert seen["davidnet24"][seen["davidnet24"].index("--seeds") + 1] == ("3" if full else "1")
    assert seen["epochs20"][seen["epochs20"].index("--epochs") + 1] == ("20" if full else "1")


def test_davidnet24_runs_in_the_loop_the_step_benchmark_found_faster(tmp_path):
    ctx = context(tmp_path, smoke=False)
    loop = lambda: (c := h200.davidnet24_command(ctx))[c.index("--loop") + 1]  # noqa: E731
    assert loop() == "auto"  # no step figures
    for faster in ("scan", "fit"):
        (ctx.out / "steps.json").write_text(json.dumps({"steps": {"faster_loop": faster}}))
        assert loop() == faster
    (ctx.out / "steps.json").write_text('{"steps": null}')  # the step part stopped early
    assert loop() == "auto"


def test_a_reference_script_changes_only_its_run_count_and_refuses_an_unknown_loop():
    text = "x = 1\nfor run in range(200):\n    main(run)\nrange(200)\n"
    assert h200.with_run_count(text, 5) == "x = 1\nfor run in range(5):\n    main(run)\nrange(200)\n"
    for changed, found in (("for run in range(100):\n", "['100']"), ("for seed in range(200):\n", "none"),
                           ("for run in range(200): a\nfor run in range(200): b\n", "['200', '200']")):
        with pytest.raises(ValueError, match=r"expected one 'for run in range\(200\)'.*found " + found.replace("[", r"\[")):
            h200.with_run_count(changed, 5)


def test_a_reference_part_without_its_data_or_script_is_skipped_with_the_reason(tmp_path):
    ctx = context(tmp_path, smoke=False)
    assert h200.PARTS["airbench"][0](ctx) == "no reference data (the reference part did not complete)"
    ctx.parts["reference"] = {"status": "completed"}
    (ctx.devdata / "airbench94_muon.py").write_text("for run in range(7): pass\n")
    record = h200.run_part("airbench", ctx)
    assert record["status"].startswith("skipped: could not prepare it: expected one 'for run in range(200)'")


def airbench_row(*cells):
    widths = [6, 5, 9, 7, 11, 12]
    return "|" + "".join(f"  {str(c).rjust(w)}  |" for c, w in zip(cells, widths))


def test_the_reference_log_gives_each_runs_final_accuracy_and_time_without_the_warmup():
    rule = "-" * 70
    lines = [rule, airbench_row("run   ", "epoch", "train_acc", "val_acc", "tta_val_acc", "time_seconds"), rule,
             airbench_row("warmup", 1, "0.1000", "0.1000", "", "3.0000"),
             airbench_row("", "eval", "0.1200", "0.1100", "0.1150", "9.5000"), rule]
    for run, (acc, seconds) in enumerate([(0.9071, 1.3912), (0.9088, 1.4020)]):
        lines += [airbench_row(run + 1, 1, "0.5000", "0.6000", "", "0.2000"),
                  airbench_row("", 8, "0.9000", "0.9000", "", "1.3000"),
                  airbench_row("", "eval", "0.9100", "0.9050", f"{acc:.4f}", f"{seconds:.4f}"), rule]
    text = "\n".join(lines) + "\nMean accuracy after 2 runs: 0.907950 | Mean time: 1.396600s\rMean: 0.9080    Std: 0.0012\n"
    assert h200.parse_reference_log(text) == [
        {"run": "1", "tta_val_acc": 0.9071, "time_seconds": 1.3912},
        {"run": "2", "tta_val_acc": 0.9088, "time_seconds": 1.402},
    ]
    stats = h200.accuracy_time_stats([0.9071, 0.9088], [1.3912, 1.402])
    assert stats["n"] == 2 and stats["mean_accuracy"] == pytest.approx(0.90795)
    assert stats["median_time_s"] == pytest.approx(1.3966) and stats["std_accuracy"] == pytest.approx(0.0012021, abs=1e-6)


def test_the_reference_arrays_are_what_airbenchs_loader_keeps():
    from pipelines.synthetic import synthetic_cifar10

    data = synthetic_cifar10(n_train=64, n_test=32)
    arrays = h200.reference_arrays(data, limit=(50, 20))
    train, test = arrays["train"], arrays["test"]
    assert train["images"].shape == (50, 32, 32, 3) and train["images"].dtype == np.uint8
    assert test["images"].shape == (20, 32, 32, 3) and test["labels"].dtype == np.int64
    np.testing.assert_array_equal(train["images"], data.x_train[:50])
    np.testing.assert_array_equal(test["labels"], data.y_test[:20])
    assert train["classes"] == list(data.class_names) == ["airplane", "automobile", "bird", "cat", "deer",
                                                          "dog", "frog", "horse", "ship", "truck"]
    assert len(h200.reference_arrays(data)["train"]["labels"]) == 64


SAVES_ON_SIGINT = """
import sys, time
try:
    print("started", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    open(sys.argv[1], "w").write("saved")
    sys.exit(130)
"""


def test_a_part_past_its_limit_is_interrupted_and_the_next_is_skipped_once_the_budget_is_spent(tmp_path, monkeypatch):
    ctx = context(tmp_path, smoke=True, budget=h200.RESERVE_S + 4)
    saved = tmp_path / "saved"
    slow = lambda ctx: [sys.executable, "-c", SAVES_ON_SIGINT, str(saved)]  # noqa: E731
    fails = lambda ctx: [sys.executable, "-c", "raise SystemExit(3)"]  # noqa: E731
    monkeypatch.setattr(h200, "PARTS", {"slow": (slow, 60, 1, None), "fails": (fails, 60, 1, None),
                                        "late": (fails, 60, 1, None)})
    start = time.monotonic()
    record = h200.run_part("slow", ctx)
    assert record["status"] == "stopped at its time limit" and 3 <= record["limit_s"] <= 4
    assert saved.read_text() == "saved"  # it got SIGINT and could save, as the project's tools do
    assert time.monotonic() - start < 10
    assert (ctx.out / "slow.log").read_text().startswith("started")
    ctx.deadline = time.monotonic() + h200.RESERVE_S + 5
    assert h200.run_part("fails", ctx)["status"] == "failed (exit 3)"
    ctx.deadline = time.monotonic() + h200.RESERVE_S + 0.5
    assert h200.run_part("late", ctx)["status"].startswith("skipped: 0 s left of the budget, it needs 1 s")


WRITES_FILES = "import sys, pathlib\nfor i in range(12): (pathlib.Path(sys.argv[1]) / f'f{i}.json').write_text('{}')\nprint('wrote')"


def test_the_call_returns_four_files_at_most_and_every_figure_in_one_archive(tmp_path, monkeypatch):
    """The device tool brings back 8 files at most: the summary, parts.json and one archive of the rest."""
    import tarfile

    writes = lambda ctx: [sys.executable, "-c", WRITES_FILES, str(ctx.out)]  # noqa: E731
    fails = lambda ctx: [sys.executable, "-c", "raise SystemExit(3)"]  # noqa: E731
    monkeypatch.setattr(h200, "PARTS", {"writes": (writes, 60, 1, None), "fails": (fails, 60, 1, None)})
    (tmp_path / "data" / "train").mkdir(parents=True)
    out = tmp_path / "out"
    code = h200.main(["--smoke", "--data", str(tmp_path / "data"), "--out", str(out), "--work", str(tmp_path / "work"),
                      "--parts", "writes,fails"])
    assert code == 1  # a part failed
    assert sorted(path.name for path in out.iterdir()) == ["figures.tar.gz", "parts.json", "summary.json", "summary.md"]
    with tarfile.open(out / "figures.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"figures/f{i}.json" for i in range(12)} | {"figures/writes.log", "figures/fails.log", "figures/parts.json",
                                                         "figures/summary.md"} <= names
    parts = json.loads((out / "parts.json").read_text())["parts"]
    assert parts["writes"]["status"] == "completed" and parts["fails"]["status"] == "failed (exit 3)"


def test_a_part_leaves_the_minimums_of_the_required_parts_after_it(tmp_path, monkeypatch):
    quick = lambda ctx: [sys.executable, "-c", "pass"]  # noqa: E731
    monkeypatch.setattr(h200, "PARTS", {"first": (quick, 300, 10, None), "second": (quick, 300, 50, None),
                                        "third": (quick, 300, 30, None), "hiverge": (quick, 300, 70, None)})
    ctx = context(tmp_path, smoke=True, budget=h200.RESERVE_S + 200)
    record = h200.run_part("first", ctx, later=["second", "third", "hiverge"])  # hiverge is optional: nothing kept for it
    assert 119 <= record["limit_s"] <= 120
    ctx.deadline = time.monotonic() + h200.RESERVE_S + 60
    assert h200.run_part("first", ctx, later=["second", "third"])["limit_s"] == 10  # its own minimum first
    ctx.deadline = time.monotonic() + h200.RESERVE_S + 1000
    assert h200.run_part("first", ctx, later=["second"])["limit_s"] == 300  # its cap


def write(out, name, obj):
    (out / f"{name}.json").write_text(json.dumps(obj))


def test_the_summary_checks_each_figure_against_its_target_and_airbench(tmp_path):
    out = tmp_path
    write(out, "airbench", {"n": 5, "mean_accuracy": 0.9079, "median_time_s": 1.40})
    write(out, "fast", {"n": 10, "mean_accuracy": 0.9085, "median_time_s": 1.26})
    settings = {name: {"ms_per_step": 3.0, "images_per_s": 150_000.0}
                for name in ("no_augmentation", "augmentation", "augmentation_and_data_path", "scanned")}
    settings["augmentation"]["images_per_s"] = 139_999.0
    write(out, "steps", {"config": {"batch_size": 512}, "steps": {"settings": settings, "faster_loop": "scan",
                                                                   "scan_vs_fit_pct": -20.0}})
    stat = lambda mean: {"mean": mean}  # noqa: E731
    write(out, "davidnet24", {"config": {"loop": "scan"}, "stats": {
        "runs": 3, "target": 0.91, "reached_target": 3, "final_accuracy": stat(0.9115), "train_s": stat(7.0),
        "seconds_to_target": stat(6.3), "compile_s": stat(20.0), "eval_s": stat(0.5)}})
    summary = h200.summarise(out)
    rows = {row["what"].split(":")[0]: row for row in summary["rows"]}
    assert summary["airbench94_muon_median_time_s"] == 1.40
    assert rows["fast preset"]["met"] is True and rows["fast preset"]["ratio_to_airbench94_muon"] == pytest.approx(0.9)
    assert rows["DavidNet train step, batch 512, augmentation on"]["met"] is False  # 139,999 < 140,000
    assert rows["DavidNet 24 epochs (scan loop)"]["met"] is True
    assert rows["DavidNet 24 epochs (scan loop)"]["ratio_to_airbench94_muon"] == pytest.approx(5.0)
    assert rows["faster loop (d vs c)"]["measured"] == "scan (-20.0%)"
    table = (out / "summary.md").read_text().splitlines()
    assert len(table) == 2 + len(summary["rows"]) and "| 0.9085 / 1.26 |" in next(line for line in table if "fast preset" in line)

    partial = {name: settings[name] for name in ("no_augmentation",)}  # stopped after setting (a)
    write(out, "steps", {"config": {"batch_size": 512}, "steps": {"settings": partial}})
    rows = [row["what"] for row in h200.summarise(out)["rows"]]
    assert "  step setting no_augmentation: ms/step" in rows and not any("augmentation on" in row for row in rows)

    write(out, "fast", {"n": 10, "mean_accuracy": 0.9085, "median_time_s": 1.41})  # slower than airbench
    assert next(r for r in h200.summarise(out)["rows"] if r["what"].startswith("fast preset"))["met"] is False
    write(out, "fast", {"n": 9, "mean_accuracy": 0.95, "median_time_s": 1.0})  # too few runs
    assert next(r for r in h200.summarise(out)["rows"] if r["what"].startswith("fast preset"))["met"] is False
    (out / "airbench.json").unlink()  # no airbench figure: no ratio, and the time bar cannot be met
    fast = next(r for r in h200.summarise(out)["rows"] if r["what"].startswith("fast preset"))
    assert fast["met"] is False and fast["ratio_to_airbench94_muon"] is None


def test_the_run_book_refuses_bad_calls_with_one_line(tmp_path):
    script = ROOT / "benchmarks" / "h200.sh"
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "usage: bash benchmarks/h200.sh [--smoke]\n"
    missing = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "error: .devdata/cifar10-jpeg.tar.gz is missing: make .devdata with bash benchmarks/devdata.sh first\n"
    usage = subprocess.run(["bash", str(ROOT / "benchmarks" / "devdata.sh")], capture_output=True, text=True, cwd=tmp_path)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bash benchmarks/devdata.sh AIRBENCH_GIT_DIR")
    assert not (tmp_path / ".devdata").exists()


@pytest.mark.parametrize("args, message", [
    (["--parts", "env,gpu"], "--parts: unknown gpu"),
    (["--data", "/nowhere"], "--data /nowhere: expected the unpacked JPEG copy"),
    (["--out", "{used}"], "--out {used}: expected an empty or new folder"),
    (["--work", "{used}"], "--work {used}: expected an empty or new folder"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, args, message):
    (tmp_path / "data" / "train").mkdir(parents=True)
    used = tmp_path / "used"
    used.mkdir()
    (used / "summary.json").write_text("{}")  # an earlier call's figures
    args = [arg.format(used=used) for arg in args]
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), *args]
    with pytest.raises(SystemExit) as exit_:
        h200.main(argv)
    assert exit_.value.code == 2 and message.format(used=used) in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
