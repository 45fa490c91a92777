"""A run's results folder: results.json, history.csv, DAWNBench files and plots, all written atomically.

Every file is written to a temporary file in the same folder and renamed into
place, so a run killed mid-write leaves the previous complete file, never half
of a new one.
"""

import json
import os
import tempfile
from pathlib import Path


class WriteError(OSError):
    """A file of the run could not be written; str(e) is one line naming it."""

    def __str__(self):
        return self.strerror


def write_bytes_atomic(path, data):
    """Writes `data` (bytes) to `path` through a temporary file and a rename.

    Raises OSError with one line naming the file (a full disk, a folder gone);
    the previous file at `path`, if any, is then untouched."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        raise WriteError(e.errno, f"could not write {path}: {e.strerror or e}") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text):
    """Writes `text` to `path` through a temporary file and a rename."""
    write_bytes_atomic(path, text.encode())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_writable(results_dir):
    """Creates `results_dir` and checks a file can be written there, before any
    training starts. Raises OSError with one line saying what to do."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(results_dir / ".write-test", "")
        (results_dir / ".write-test").unlink()
    except OSError as e:
        raise OSError(
            f"results folder {results_dir} is not writable ({e.strerror or e}): "
            "pass --results-dir with a folder you can write to"
        ) from e
    return results_dir


def dawnbench_rows(epochs, include_compile_s=0.0):
    """DAWNBench rows (epoch, hours, top1Accuracy in percent) for the evaluated
    epochs. Hours are cumulative training time, evaluation excluded, as
    cifar10-fast reported it; compilation is included, as a DAWNBench run pays it."""
    rows = []
    for record in epochs:
        accuracy = record.get("val_accuracy")
        if isinstance(accuracy, float):
            hours = (record["train_s_total"] + include_compile_s) / 3600.0
            rows.append({"epoch": record["epoch"], "hours": hours, "top1Accuracy": 100.0 * accuracy})
    return rows


def write_results(results_dir, results, plots=True):
    """Writes results.json, dawnbench.tsv, dawnbench.json and (optionally) PNG plots.

    Args:
        results_dir: the run's folder (it must exist).
        results: the run's dict, with at least "history" (per-epoch records
            from `TimeToAccuracy.epochs`), "compile_s", and "lr_history"
            ([step, lr] pairs) when plots are wanted.
        plots: whether to draw the PNGs (skipped for per-epoch checkpoints).
    """
    results_dir = Path(results_dir)
    write_json_atomic(results_dir / "results.json", results)
    rows = dawnbench_rows(results["history"], results.get("compile_s") or 0.0)
    tsv = "epoch\thours\ttop1Accuracy\n" + "".join(
        f"{r['epoch']}\t{r['hours']:.8f}\t{r['top1Accuracy']:.2f}\n" for r in rows
    )
    write_text_atomic(results_dir / "dawnbench.tsv", tsv)
    write_json_atomic(results_dir / "dawnbench.json", rows)
    write_text_atomic(results_dir / "history.csv", history_csv(results["history"]))
    if plots:
        plot_history(
            results["history"], results_dir / "accuracy_loss.png",
            title=run_title(results_dir, results), target=results.get("target"),
        )
        plot_learning_rate(results.get("lr_history", []), results_dir / "learning_rate.png")


# Columns first in history.csv, in this order; any other log key follows, sorted.
_CSV_FIRST = ("epoch", "learning_rate", "loss", "accuracy", "val_loss", "val_accuracy", "train_s", "train_s_total", "eval_s", "wall_s")


def history_csv(history):
    """One row per epoch: the Keras logs (loss, accuracy, val_*, learning_rate)
    and the timings; blank where an epoch was not evaluated.

    Written from the results, not by keras.callbacks.CSVLogger: so it is
    rewritten whole and atomically with results.json after every epoch, and
    stays equal to it after a kill and a resume (CSVLogger appends as it goes
    and would keep the epochs a killed run had not checkpointed)."""
    import csv
    import io

    keys = {key for record in history for key in record}
    columns = [key for key in _CSV_FIRST if key in keys] + sorted(keys - set(_CSV_FIRST))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def run_title(results_dir, results):
    """A run's plot title: its name, the hardware and backend, and the data."""
    devices = results.get("devices") or 1
    device = results.get("device", "?")
    hardware = (device if results.get("platform") == "gpu" else f"CPU ({device})") + (f" x{devices}" if devices > 1 else "")
    data = results.get("data") or {}
    label = {"jpeg": "CIFAR-10 JPEG copy", "synthetic": "synthetic data"}.get(data.get("image_format"), "CIFAR-10")
    return f"{Path(results_dir).resolve().name}: {hardware}, {results.get('backend', '?')}, {label}"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, compact=False):
    """Saves `fig` as a PNG through a temporary name and a rename: a half-written
    PNG is as bad as half a JSON.

    Args:
        compact: store it as a 256-colour palette PNG. Plots of flat colours
            and text lose nothing visible and shrink about 3x (the pictures in docs/).
    """
    import io

    buffer = io.BytesIO()
    if compact:
        from PIL import Image

        fig.savefig(buffer, format="png", dpi=100)
        buffer.seek(0)
        with Image.open(buffer) as image:
            buffer = io.BytesIO()
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="png", optimize=True)
    else:
        fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def plot_history(history, path, title=None, target=None):
    """Three panels: accuracy and loss per epoch (train and test), and test
    accuracy against training seconds, the headline's axis; `target` (an
    accuracy) is drawn as a line on both accuracy panels."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (acc_ax, loss_ax, time_ax) = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, keys in ((acc_ax, ("accuracy", "val_accuracy")), (loss_ax, ("loss", "val_loss"))):
        for key, label in zip(keys, ("train", "test")):
            points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), float)]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
    timed = [(r["train_s_total"], r["val_accuracy"]) for r in history if isinstance(r.get("val_accuracy"), float)]
    if timed:
        time_ax.plot(*zip(*timed), marker="o", color="C1", label="test")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    time_ax.set(xlabel="training seconds (evaluation excluded)", ylabel="test accuracy", title="Test accuracy against time")
    if target is not None:
        for ax in (acc_ax, time_ax):
            ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    for ax in (acc_ax, loss_ax, time_ax):
        ax.grid(alpha=0.3)
        if ax.lines:  # a run that diverged in its first epoch has nothing to draw
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_learning_rate(lr_history, path):
    """Learning rate per step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if lr_history:
        steps, lrs = zip(*lr_history)
        ax.plot(steps, lrs)
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def collect_results(run_info, timer, lr_callback, status, diverged=None):
    accuracies = [r.get("val_accuracy") for r in timer.epochs]
    final = accuracies[-1] if accuracies and isinstance(accuracies[-1], float) else None
    return {
        "status": status,
        **run_info,
        **timer.summary(),
        "final_accuracy": final,
        "epochs_completed": len(timer.epochs),
        "diverged": diverged,
        "history": timer.epochs,
        "lr_history": [[int(step), float(lr)] for step, lr in lr_callback.history],
    }


def summary_line(results):
    """The one final line a run prints."""
    target = results["target"]
    final = results["final_accuracy"]
    final_text = f"{final:.4f}" if final is not None else "n/a"
    if results.get("tta_accuracy") is not None:
        final_text += f" ({results['tta_accuracy']:.4f} with TTA level {results['tta_level']}, {results['tta_s']:.2f}s)"
    times = f"train {results['train_s']:.2f}s, compile {results['compile_s'] or 0:.2f}s, wall {results['wall_s']:.2f}s"
    if results.get("devices", 1) > 1:
        times += f" on {results['devices']} devices"
    if results["status"] == "diverged":
        d = results["diverged"]
        return f"diverged at epoch {d['epoch']} (learning rate {d['lr']:.4g}); {times}"
    if results["target_epoch"] is not None:
        return (
            f"target {target:.4f} reached at epoch {results['target_epoch']} in "
            f"{results['seconds_to_target']:.2f}s train time ({results['wall_to_target_s']:.2f}s wall); "
            f"final test accuracy {final_text}; {times}"
        )
    return f"target {target:.4f} not reached in {results['epochs_completed']} epochs; final test accuracy {final_text}; {times}"
