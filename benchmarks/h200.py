"""The GPU figures of issue #16 in one prepared call of the `device` tool.

    bash benchmarks/h200.sh            # on the H200: one call, about 8.5 minutes
    bash benchmarks/h200.sh --smoke    # on a CPU first: every part at toy size

(benchmarks/h200.sh installs the carried wheels, unpacks the JPEG copy and runs
this module; benchmarks/devdata.sh makes what it carries.) The parts run in
this order, each in its own process and within its share of one time budget
(--budget): a part that ends early leaves its time to the next, a part that
runs out is stopped (SIGINT: the project's tools save what they measured),
and a part that cannot get its minimum is skipped, so a call never overruns.
Each part's figures are in --out as soon as it ends (in figures.tar.gz: the
device tool returns 8 files at most):

  env         env.json: GPU, driver, jax.devices(), versions
  reference   the JPEG copy as the files airbench's loader reads (cifar10/train.pt, test.pt)
  airbench    airbench94_muon.py, 5 runs: its own accuracy and time (airbench.json)
  steps       the DavidNet train step at batch 512, settings (a)-(d): fit and the scanned loop (steps.json)
  fast        the fast preset, seeds 0..9 (fast.json: n, mean, std, median/min/max time)
  davidnet24  DavidNet's 24 epochs, 3 seeds, in the faster loop of `steps` (davidnet24.json)
  epochs20    python -m experiments.davidnet --epochs 20, once: the README's command (epochs20.json)
  hiverge     hiverge/cifar10-speedrun's cifar10_speedrun.py, 3 runs, if time is left (hiverge.json)

then summary.json and summary.md: every figure against #16's targets, and as a
ratio to airbench94_muon's median time in the same call. parts.json says how
each part ended. --out holds these three and figures.tar.gz (each part's JSON
and log), rewritten after each part. A part takes its cap at most and leaves
the minimums of the parts after it (hiverge, optional, excepted).

The reference scripts are measuring sticks, carried in .devdata and never part
of the project: they run unmodified except for their run count (200 in their
loop), and read the JPEG copy through their own loader from the files
`reference` writes (instead of downloading CIFAR-10).

--smoke runs every part at toy size (a subset of the JPEG copy, tiny widths,
one or two seeds) on a CPU; the reference scripts need CUDA, so there their
copies are prepared and their data written and read back, but not run.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 20  # after SIGINT, before SIGKILL
RESERVE_S = STOP_GRACE_S + 10  # kept back from the budget: a stopped part's grace, and the summary
OPTIONAL = {"hiverge"}  # "if time is left": no time is kept back for it
RETURNED = ("summary.md", "summary.json", "parts.json")  # in --out beside figures.tar.gz

# #16's targets, on the JPEG copy (91% there is the 94% bar).
TARGETS = {
    "fast_mean_accuracy": 0.908,  # over n >= 10, in less time than airbench94_muon's median
    "fast_min_runs": 10,
    "davidnet24_mean_accuracy": 0.911,
    "davidnet24_train_s": 10.0,
    "step_images_per_s": 140_000,  # batch 512, augmentation on
}

# The reference scripts: carried file, runs, and the loop whose count is the one change.
REFERENCES = {
    "airbench": dict(script="airbench94_muon.py", runs=5, repo="KellerJordan/cifar10-airbench"),
    "hiverge": dict(script="cifar10_speedrun.py", runs=3, repo="hiverge/cifar10-speedrun"),
}
RUN_LOOP = re.compile(r"for run in range\((\d+)\)")

# Toy sizes of --smoke (a CPU) and the sizes of the real call.
SIZES = {
    "full": dict(
        steps=["--no-small", "--batch-size", "512", "--steps", "90", "--warmup-steps", "10", "--repeats", "3"],
        fast=["--seeds", "0,1,2,3,4,5,6,7,8,9"],
        davidnet24=["--no-small", "--seeds", "3", "--epochs", "24", "--batch-size", "512"],
        epochs20=["--epochs", "20"],
        reference_images=None,
    ),
    "smoke": dict(
        steps=["--small", "--width", "0.0625", "--subset", "1024", "--batch-size", "128", "--steps", "2",
               "--warmup-steps", "1", "--repeats", "1"],
        fast=["--seeds", "0,1", "--subset", "1000", "--epochs", "1", "--width", "0.0625", "--batch-size", "250"],
        davidnet24=["--small", "--seeds", "1", "--epochs", "1", "--width", "0.0625", "--subset", "1024",
                    "--batch-size", "128"],
        epochs20=["--epochs", "1", "--width", "0.0625", "--subset", "1024", "--batch-size", "128"],
        reference_images=(1000, 200),
    ),
}


class Context:
    """What the parts share: the options, the folders, the clock."""

    def __init__(self, args):
        self.smoke = args.smoke
        self.sizes = SIZES["smoke" if args.smoke else "full"]
        self.data = Path(args.data)
        self.returned = Path(args.out)  # what the device tool brings back: RETURNED and figures.tar.gz
        self.work = Path(args.work or tempfile.mkdtemp(prefix="h200-work-"))
        self.out = self.work / "figures"  # each part's JSON and log
        self.devdata = Path(args.devdata)
        self.python = sys.executable
        self.torch_python = args.torch_python or sys.executable
        self.cache = str(self.work / "jax-cache")
        self.deadline = time.monotonic() + args.budget
        self.parts = {}

    def left_s(self):
        return self.deadline - time.monotonic() - RESERVE_S


# ---------------------------------------------------------------- the parts


def env_command(ctx):
    return [ctx.python, "-c", f"from benchmarks.h200 import write_environment; write_environment({str(ctx.out / 'env.json')!r})"]


def reference_command(ctx):
    dest = ctx.work / "reference" / "cifar10"
    return [ctx.torch_python, "-c", "from benchmarks.h200 import write_reference_data; "
            f"write_reference_data({str(ctx.data)!r}, {str(dest)!r}, {str(ctx.out / 'reference.json')!r}, "
            f"{ctx.sizes['reference_images']!r})"]


def reference_script_command(name):
    def command(ctx):
        spec = REFERENCES[name]
        source = ctx.devdata / spec["script"]
        if not source.exists():
            return f"{source} is missing: bash benchmarks/devdata.sh copies it from {spec['repo']}"
        if ctx.parts.get("reference", {}).get("status") != "completed":
            return "no reference data (the reference part did not complete)"
        dest = ctx.work / "reference" / spec["script"]
        dest.write_text(with_run_count(source.read_text(), spec["runs"]))  # raises ValueError (one line)
        if ctx.smoke:
            return f"needs CUDA: {dest.name} prepared ({spec['runs']} runs), not run in --smoke"
        return [ctx.torch_python, dest.name]
    return command


def steps_command(ctx):
    return [ctx.python, "-m", "benchmarks.davidnet", "--data-dir", str(ctx.data), *ctx.sizes["steps"],
            "--skip-training", "--scan-step", "--compile-cache", ctx.cache,
            "--out", str(ctx.out / "steps.json"), "--results-dir", str(ctx.work / "steps")]


def fast_command(ctx):
    return [ctx.python, "-m", "experiments.fast_ablation", "--data-dir", str(ctx.data), "--only", "",
            *ctx.sizes["fast"], "--compile-cache", ctx.cache, "--results-dir", str(ctx.work / "fast")]


def faster_loop(out):
    """The loop `steps` found faster ("fit" or "scan"), or "auto" without its figures."""
    try:
        return json.loads((out / "steps.json").read_text())["steps"]["faster_loop"]
    except (OSError, ValueError, KeyError, TypeError):
        return "auto"


def davidnet24_command(ctx):
    return [ctx.python, "-m", "benchmarks.davidnet", "--data-dir", str(ctx.data), *ctx.sizes["davidnet24"],
            "--skip-steps", "--precompile", "--loop", faster_loop(ctx.out), "--compile-cache", ctx.cache,
            "--out", str(ctx.out / "davidnet24.json"), "--results-dir", str(ctx.work / "davidnet24")]


def epochs20_command(ctx):
    return [ctx.python, "-m", "experiments.davidnet", "--data-dir", str(ctx.data), *ctx.sizes["epochs20"],
            "--compile-cache", ctx.cache, "--results-dir", str(ctx.work / "epochs20")]


def collect_reference(name):
    def collect(ctx, log):
        runs = parse_reference_log(log.read_text(errors="replace"))
        spec = REFERENCES[name]
        listed = ctx.devdata / "references.txt"  # "<script> <commit>" per line, from devdata.sh
        commits = dict(line.split()[:2] for line in listed.read_text().splitlines() if len(line.split()) >= 2) if listed.exists() else {}
        write_json(ctx.out / f"{name}.json", {
            "script": spec["script"], "repository": spec["repo"], "commit": commits.get(spec["script"]),
            "change": f"run count {spec['runs']} instead of 200; data from the JPEG copy through its own loader",
            "runs": runs, **accuracy_time_stats([r["tta_val_acc"] for r in runs], [r["time_seconds"] for r in runs]),
        })
    return collect


def collect_fast(ctx, log):
    from experiments.fast_ablation import accuracy_and_time

    runs = []
    for path in sorted((ctx.work / "fast" / "runs").glob("*/results.json")):
        results = json.loads(path.read_text())
        if results.get("status") == "completed":
            accuracy, seconds = accuracy_and_time(results)
            runs.append({"run": path.parent.name, "accuracy": accuracy, "time_s": seconds,
                         "compile_s": results.get("compile_s"), "loop": results.get("loop")})
    write_json(ctx.out / "fast.json", {
        "what": "the fast preset (experiments/recipes/fast.toml); accuracy with TTA, time = training + the final "
                "evaluation, compilation excluded, as airbench counts it",
        "runs": runs, **accuracy_time_stats([r["accuracy"] for r in runs], [r["time_s"] for r in runs]),
    })
    table = ctx.work / "fast" / "table.csv"
    if table.exists():
        shutil.copy(table, ctx.out / "fast_table.csv")


def collect_epochs20(ctx, log):
    results = ctx.work / "epochs20" / "results.json"
    if results.exists():
        shutil.copy(results, ctx.out / "epochs20.json")
    for name in ("dawnbench.tsv", "history.csv"):
        if (ctx.work / "epochs20" / name).exists():
            shutil.copy(ctx.work / "epochs20" / name, ctx.out / f"epochs20_{name}")


# name -> (command builder, seconds it may take at most, seconds it needs at least, what collects its figures)
PARTS = {
    "env": (env_command, 60, 10, None),
    "reference": (reference_command, 60, 20, None),
    "airbench": (reference_script_command("airbench"), 150, 60, collect_reference("airbench")),
    "steps": (steps_command, 120, 40, None),
    "fast": (fast_command, 150, 45, collect_fast),
    "davidnet24": (davidnet24_command, 100, 40, None),
    "epochs20": (epochs20_command, 60, 30, collect_epochs20),
    "hiverge": (reference_script_command("hiverge"), 120, 70, collect_reference("hiverge")),
}


# ---------------------------------------------------------------- what the parts call


def write_environment(path):
    """env.json: the GPU as nvidia-smi and JAX see it, and the versions (a child process: JAX takes the GPU)."""
    import importlib.metadata
    import platform

    import jax

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        smi = f"nvidia-smi: {e}"
    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "keras", "numpy", "torch", "torchvision", "tensorflow"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env = {"nvidia_smi": smi, "jax_devices": [str(d) for d in jax.devices()], "jax_backend": jax.default_backend(),
           "versions": versions, "cpu_count": os.cpu_count(), "os": platform.platform()}
    write_json(path, env)
    print(json.dumps(env, indent=1))


def reference_arrays(data, limit=None):
    """The dataset as airbench's loader keeps CIFAR-10: {"images": (n, 32, 32, 3) uint8,
    "labels": (n,) int64, "classes": names} per split; `limit`: (train, test) first images."""
    import numpy as np

    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    arrays = {}
    for index, (split, (x, y)) in enumerate(splits.items()):
        n = len(x) if limit is None else limit[index]
        arrays[split] = {"images": np.ascontiguousarray(x[:n], dtype=np.uint8),
                         "labels": np.asarray(y[:n], dtype=np.int64), "classes": list(data.class_names)}
    return arrays


def write_reference_data(data_dir, dest, report, limit=None):
    """Writes `dest`/train.pt and test.pt, the files airbench's and hiverge's
    CifarLoader read before they would download CIFAR-10, from the JPEG copy
    (through this project's loader), then reads them back as they do."""
    import torch

    from pipelines.cifar10 import load_cifar10

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    data = load_cifar10(data_dir, progress=False)
    summary = {"source": str(data_dir), "image_format": data.image_format}
    for split, arrays in reference_arrays(data, limit).items():
        path = dest / f"{split}.pt"
        torch.save({"images": torch.from_numpy(arrays["images"]), "labels": torch.from_numpy(arrays["labels"]),
                    "classes": arrays["classes"]}, path)
        back = torch.load(path, weights_only=True)  # as hiverge's loader reads it
        if back["images"].dtype != torch.uint8 or tuple(back["images"].shape[1:]) != (32, 32, 3) or back["labels"].dtype != torch.int64:
            raise ValueError(f"{path} does not read back as uint8 (n, 32, 32, 3) images and int64 labels")
        summary[split] = {"images": int(back["images"].shape[0]), "classes": back["classes"],
                          "per_class": torch.bincount(back["labels"], minlength=len(back["classes"])).tolist()}
    write_json(report, summary)
    print(json.dumps(summary))


def with_run_count(text, runs):
    """The reference script with `runs` runs instead of its 200: the one change made to it."""
    found = RUN_LOOP.findall(text)
    if found != ["200"]:
        raise ValueError(f"expected one 'for run in range(200)' in the reference script, found {found or 'none'}: "
                         "it changed upstream; check how it runs before measuring it")
    return RUN_LOOP.sub(f"for run in range({runs})", text)


def parse_reference_log(text):
    """The runs in an airbench-style log: [{"run", "tta_val_acc", "time_seconds"}]
    from each run's final ("eval") row, the warm-up run left out."""
    runs, current = [], None
    for line in text.replace("\r", "\n").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "run":
            continue
        if cells[0]:
            current = cells[0]
        if cells[1] == "eval" and current != "warmup":
            try:
                runs.append({"run": current, "tta_val_acc": float(cells[4]), "time_seconds": float(cells[5])})
            except ValueError:
                continue
    return runs


def accuracy_time_stats(accuracies, times):
    """n, mean and std of the accuracies, median, min and max of the times (airbench's way
    of stating them; mean and std as the fast preset's study table computes them)."""
    from davidnet.study_runs import mean_std

    mean, std = mean_std(accuracies)
    return {
        "n": len(accuracies),
        "mean_accuracy": mean,
        "std_accuracy": std,
        "median_time_s": statistics.median(times) if times else None,
        "min_time_s": min(times, default=None),
        "max_time_s": max(times, default=None),
    }


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=1, default=str) + "\n")


# ---------------------------------------------------------------- running a part


def run_command(command, log_path, limit_s, cwd, env):
    """Runs `command`, its output to `log_path` and to stdout as it comes; at
    `limit_s` sends SIGINT to its process group, then SIGKILL after a grace.
    Returns "completed", "failed (exit N)" or "stopped at its time limit"."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", start_new_session=True)

        def copy():
            for line in process.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        stopped = False
        try:
            process.wait(timeout=max(limit_s, 0.1))
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=5)
    if stopped:
        return "stopped at its time limit"
    return "completed" if process.returncode == 0 else f"failed (exit {process.returncode})"


def run_part(name, ctx, later=()):
    """Runs one part within its share of the budget (at most its cap; the
    minimums of the `later` parts kept back where it can still get its own)
    and records how it ended in ctx.parts."""
    build, cap_s, min_s, collect = PARTS[name]
    record = {"status": None, "seconds": 0.0}
    ctx.parts[name] = record
    left = ctx.left_s()
    if left < min_s:
        record["status"] = f"skipped: {left:.0f} s left of the budget, it needs {min_s} s"
        return record
    try:
        command = build(ctx)
    except (OSError, ValueError) as e:
        command = f"could not prepare it: {e}"
    if isinstance(command, str):
        record["status"] = f"skipped: {command}"
        return record
    kept = sum(PARTS[other][2] for other in later if other not in OPTIONAL)
    limit = min(cap_s, ctx.left_s(), max(min_s, ctx.left_s() - kept))
    record |= {"command": command, "limit_s": round(limit, 1)}
    print(f"\n=== {name} (at most {limit:.0f} s): {' '.join(command)}", flush=True)
    log = ctx.out / f"{name}.log"
    cwd = ctx.work / "reference" if name in REFERENCES else ROOT
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.monotonic()
    record["status"] = run_command(command, log, limit, cwd, env)
    record["seconds"] = round(time.monotonic() - start, 1)
    if collect is not None:
        try:
            collect(ctx, log)
        except (OSError, ValueError, KeyError) as e:
            record["collect_error"] = str(e)
    return record


# ---------------------------------------------------------------- the summary


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def summarise(out):
    """summary.json and summary.md from the parts' JSON in `out`: each figure
    against #16's targets, and as a ratio to airbench94_muon's median time."""
    airbench, hiverge, fast = (read_json(out / f"{name}.json") for name in ("airbench", "hiverge", "fast"))
    steps, d24, e20, env = (read_json(out / f"{name}.json") for name in ("steps", "davidnet24", "epochs20", "env"))
    base = (airbench or {}).get("median_time_s")

    def ratio(seconds):
        return seconds / base if seconds is not None and base else None

    rows = []

    def row(what, measured, target, met, seconds=None):
        rows.append({"what": what, "measured": measured, "target": target, "met": met,
                     "ratio_to_airbench94_muon": ratio(seconds)})

    for name, ref in (("airbench94_muon", airbench), ("hiverge cifar10_speedrun", hiverge)):
        if ref and ref["n"]:
            row(f"{name}: {ref['n']} runs, mean accuracy (TTA) / median time", [ref["mean_accuracy"], ref["median_time_s"]],
                None, None, ref["median_time_s"])
    if steps and steps.get("steps"):  # its settings so far, where it was stopped
        settings = steps["steps"]["settings"]
        if "augmentation" in settings:
            images = settings["augmentation"]["images_per_s"]
            row(f"DavidNet train step, batch {steps['config']['batch_size']}, augmentation on: images/s (fit)", images,
                TARGETS["step_images_per_s"], images >= TARGETS["step_images_per_s"])
        for key, setting in settings.items():
            row(f"  step setting {key}: ms/step", setting["ms_per_step"], None, None)
        if "faster_loop" in steps["steps"]:
            row("faster loop (d vs c)", f"{steps['steps']['faster_loop']} ({steps['steps']['scan_vs_fit_pct']:+.1f}%)", None, None)
    if fast and fast["n"]:
        met = (fast["n"] >= TARGETS["fast_min_runs"] and fast["mean_accuracy"] >= TARGETS["fast_mean_accuracy"]
               and base is not None and fast["median_time_s"] < base)
        row(f"fast preset: {fast['n']} runs, mean accuracy (TTA) / median time",
            [fast["mean_accuracy"], fast["median_time_s"]],
            f">= {TARGETS['fast_mean_accuracy']} over n >= {TARGETS['fast_min_runs']}, time < airbench94_muon's median",
            met, fast["median_time_s"])
    if d24 and d24.get("stats"):
        stats = d24["stats"]
        accuracy, train_s = stats["final_accuracy"]["mean"], stats["train_s"]["mean"]
        met = (accuracy is not None and train_s is not None and accuracy >= TARGETS["davidnet24_mean_accuracy"]
               and train_s <= TARGETS["davidnet24_train_s"])
        row(f"DavidNet 24 epochs ({d24['config']['loop']} loop): {stats['runs']} runs, mean accuracy / mean train s",
            [accuracy, train_s], f">= {TARGETS['davidnet24_mean_accuracy']} in <= {TARGETS['davidnet24_train_s']:g} s", met, train_s)
        row(f"  seconds to {stats['target']} (mean over the {stats['reached_target']} runs that reached it)",
            stats["seconds_to_target"]["mean"], None, None, stats["seconds_to_target"]["mean"])
        row("  compile s / eval s (mean)", [stats["compile_s"]["mean"], stats["eval_s"]["mean"]], None, None)
    if e20:
        row("python -m experiments.davidnet --epochs 20: final accuracy / train s / seconds to target",
            [e20.get("final_accuracy"), e20.get("train_s"), e20.get("seconds_to_target")], None, None, e20.get("train_s"))
    summary = {"environment": env, "airbench94_muon_median_time_s": base, "targets": TARGETS, "rows": rows,
               "parts": read_json(out / "parts.json")}
    write_json(out / "summary.json", summary)
    lines = ["| figure | measured | target | met | / airbench94_muon time |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r["what"], _show(r["measured"]), _show(r["target"]), _show(r["met"]), _show(r["ratio_to_airbench94_muon"])]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _show(value):
    if value is None:
        return "-"
    if isinstance(value, list):
        return " / ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------- main


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.h200", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part at toy size, on a CPU (the reference scripts are prepared, not run)")
    parser.add_argument("--data", required=True, help="the JPEG copy, unpacked (train/ and test/)")
    parser.add_argument("--out", required=True, help="where the figures go (the device tool's $OUT), an empty or new folder")
    parser.add_argument("--work", help="an empty or new folder for the run folders, the reference data and the JAX compilation cache (default: a new one in the temp folder)")
    parser.add_argument("--devdata", default=".devdata", help="the carried folder: airbench94_muon.py, cifar10_speedrun.py, references.txt")
    parser.add_argument("--torch-python", help="the Python with PyTorch for the reference parts (default: this one)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all the parts (default 500; --smoke: 1200)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list, in this order: {','.join(PARTS)}")
    return parser


def publish(ctx):
    """Copies RETURNED and packs every figure and log into figures.tar.gz in
    --out, each replaced whole (a call cut short returns the last complete set)."""
    import tarfile

    for name in RETURNED:
        if (ctx.out / name).exists():
            shutil.copy(ctx.out / name, ctx.returned / f".{name}.tmp")
            os.replace(ctx.returned / f".{name}.tmp", ctx.returned / name)
    partial = ctx.returned / ".figures.tar.gz.tmp"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(ctx.out, arcname="figures")
    os.replace(partial, ctx.returned / "figures.tar.gz")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name for name in args.parts.split(",") if name]
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {','.join(unknown)}; expected names from {','.join(PARTS)}")
    if not (Path(args.data) / "train").is_dir():
        parser.error(f"--data {args.data}: expected the unpacked JPEG copy (train/ and test/ in it)")
    for flag, folder in (("--out", args.out), ("--work", args.work)):
        if folder and Path(folder).exists() and (not Path(folder).is_dir() or any(Path(folder).iterdir())):
            parser.error(f"{flag} {folder}: expected an empty or new folder (figures of an earlier call would mix with these)")
    args.budget = args.budget or (1200.0 if args.smoke else 500.0)
    ctx = Context(args)
    for folder in (ctx.returned, ctx.out, ctx.work / "reference"):
        folder.mkdir(parents=True, exist_ok=True)
    began = time.time()
    order = [name for name in PARTS if name in names]
    for index, name in enumerate(order):
        run_part(name, ctx, later=order[index + 1:])
        write_json(ctx.out / "parts.json", {"smoke": ctx.smoke, "budget_s": args.budget,
                                            "elapsed_s": round(time.time() - began, 1), "parts": ctx.parts})
        publish(ctx)
    summarise(ctx.out)
    publish(ctx)
    print("\n" + (ctx.out / "summary.md").read_text())
    for name, record in ctx.parts.items():
        print(f"{name}: {record['status']} ({record['seconds']} s)")
    print(f"figures: {ctx.returned} (summary.md, summary.json, parts.json; each part's JSON and log in figures.tar.gz)")
    failed = [name for name, record in ctx.parts.items() if record["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
