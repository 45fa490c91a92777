"""The classic ablations on DavidNet: what each part of the recipe is worth.

    python -m experiments.ablations                             # every comparison, 24 epochs each
    python -m experiments.ablations --only optimizer --adam-lrs 0.0003,0.001 --fraction 0.5
    python -m experiments.ablations --smoke                     # seconds on a CPU, synthetic data

Each configuration is the baseline recipe (DavidNet's DAWNBench entry, see
experiments/davidnet.py; `--model resnet44` for the other network) with one
thing changed, trained with the same budget and compared with it:

- norm: batch normalisation on / off (without it each convolution gets a bias);
- augment: crop + flip + cutout on / off;
- regularisation: L1, L2 (Keras kernel regularisers on every convolution and
  the classifier) or dropout before the classifier, each added to the
  baseline, which has none of them (only the recipe's weight decay, kept in
  every configuration; `--weight-decay 0` compares against none at all);
- optimizer: SGD (Nesterov) and Adam at several peak learning rates, with
  the baseline's schedule shape. Both take the weight decay coupled, as
  PyTorch's SGD and Adam (davidnet.torch_optimizers).

`--fraction 0.5` trains every configuration on the first half of the
training set, to see how the comparisons change with less data.
A configuration that diverges (training loss NaN or inf) is stopped, recorded
as diverged in the table, and the others go on.

Outputs, in --results-dir (default runs/ablations, runs/ablations-smoke for
--smoke): table.csv (one row per configuration), comparison.png (train / test
loss and accuracy per epoch, one line per configuration; `--log-log` for
log-log axes), config.json, and runs/<configuration>/ with each run's results
and tensorboard/ logs from `keras.callbacks.TensorBoard` (`tensorboard --logdir
runs/ablations/runs`; `--no-tensorboard` where TensorFlow is not installed,
as on a JAX-only machine). A rerun skips finished runs; a run
folder trained with another recipe is refused (exit 2), not reused.

Measured, on 2 CPU cores shared with other work, Keras 3.15.1:
- `--smoke` (synthetic data, width 0.0625, 2 epochs, 7 configurations):
  38 s on TensorFlow 2.21, 60 s on JAX 0.10.2, most of it compiling. It
  checks the machinery, not the claims.
- `--data-dir <JPEG copy of CIFAR-10> --width 0.25 --fraction 0.1 --epochs 8
  --batch-size 128 --lr 0.1 --only norm,augment,optimizer --sgd-lrs 0.1
  --adam-lrs 0.001 --target 0.5` (TensorFlow, one seed; batch 128 at lr 0.1 is
  DavidNet's 512 at 0.4 scaled down, for more steps on 5,000 images;
  docs/ablations.png): final test accuracy 63.9% baseline, 46.2% without
  batch norm, 65.6% without augmentation (train accuracy 94.0% against the
  baseline's 63.5%: it has started to overfit), 58.2% with Adam at 1e-3.
  In eight epochs augmentation had not paid yet; one seed, so a point or two
  may be noise.
"""

import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

from davidnet.studies import (  # noqa: E402  (after the env var)
    check_reusable,
    dataset_label,
    load_data,
    prepare_study_dir,
    resolve_study_settings,
    run_study,
    study_parser,
    train_in_fresh_session,
    write_table,
)

COMPARISONS = ("norm", "augment", "regularisation", "optimizer")


@dataclasses.dataclass
class Settings:
    """The baseline recipe and what each comparison changes in it."""

    only: str = ",".join(COMPARISONS)  # which comparisons to run
    model: str = "davidnet"  # davidnet | resnet44
    width: float = 1.0
    epochs: int = 24
    batch_size: int = 512
    lr: float = 0.4  # the baseline's peak learning rate (SGD, piecewise linear 0 -> lr -> 0)
    weight_decay: float = 5e-4  # kept in every configuration (PyTorch's coupled decay)
    # L1's pull (l1 per weight) is about the weight decay's (5e-4 x |w|) at DavidNet's
    # typical initial weights (|w| ~ 0.02); L2's (2 x l2 x w) doubles the decay.
    l1: float = 1e-5
    l2: float = 2.5e-4
    dropout: float = 0.2
    sgd_lrs: str = "0.1,0.4,1.6"  # SGD peak learning rates
    adam_lrs: str = "0.0003,0.001,0.003"  # Adam peak learning rates
    fraction: float = 1.0  # of the training set, for every configuration
    target: float = 0.94  # test accuracy to time (read 0.91 on the JPEG copy)
    seed: int = 0
    verbose: int = 0  # Keras progress bar (each epoch prints its own line anyway)
    tensorboard: bool = True  # write TensorBoard event logs for each run

    def __post_init__(self):
        numbers(self.only, "only", str)
        numbers(self.sgd_lrs, "sgd_lrs", float)
        numbers(self.adam_lrs, "adam_lrs", float)
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]. Got: {self.fraction}")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be an accuracy in (0, 1]. Got: {self.target}")


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: the same study, tiny (flags and --config still win)."""

    width: float = 0.0625
    epochs: int = 2
    batch_size: int = 64
    sgd_lrs: str = "0.4"  # the baseline itself: no extra run
    adam_lrs: str = "0.001"


SMOKE_SIZES = (256, 100)  # synthetic train / test images: 4 steps of 64 per epoch

HELP = {
    "only": f"comparisons to run, from {','.join(COMPARISONS)}",
    "model": "network: davidnet (ResNet-9) or resnet44",
    "width": "channel multiplier (0.0625-0.25 for quick CPU runs)",
    "epochs": "epochs per configuration",
    "batch_size": "batch size",
    "lr": "the baseline's peak learning rate (SGD)",
    "weight_decay": "coupled weight decay of every configuration",
    "l1": "the L1 configuration's kernel regularisation",
    "l2": "the L2 configuration's kernel regularisation",
    "dropout": "the dropout configuration's rate before the classifier",
    "sgd_lrs": "SGD peak learning rates, e.g. 0.1,0.4",
    "adam_lrs": "Adam peak learning rates, e.g. 0.0003,0.001",
    "fraction": "fraction of the training set for every configuration, e.g. 0.5",
    "target": "test accuracy to time (0.91 on the JPEG copy ~ 0.94 on CIFAR-10)",
    "seed": "random seed",
    "verbose": "Keras progress bar: 0 none, 1 bar, 2 a line per epoch",
    "tensorboard": "TensorBoard event logs in each run's folder",
}


def numbers(text, name, kind):
    """'0.1,0.4' -> [0.1, 0.4] (`kind` float, or str for names); distinct, at least one."""
    try:
        values = [kind(part.strip()) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be numbers separated by commas, e.g. 0.1,0.4. Got: {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must list distinct values, at least one. Got: {text!r}")
    if kind is float and min(values) <= 0:
        raise ValueError(f"{name} must be learning rates > 0. Got: {text!r}")
    if kind is str and set(values) - set(COMPARISONS):
        raise ValueError(f"{name} must name comparisons from {', '.join(COMPARISONS)}. Got: {text!r}")
    return values


def configurations(s, train_images):
    """[(name, comparison, Config)]: the baseline, then one changed thing per
    configuration. A configuration equal to an earlier one (SGD at the
    baseline's learning rate) is that one, trained once."""
    from davidnet.training import Config

    only = numbers(s.only, "only", str)
    base = Config(
        model=s.model, width=s.width, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
        weight_decay=s.weight_decay, target=s.target, seed=s.seed, verbose=s.verbose,
        subset=int(s.fraction * train_images) if s.fraction < 1 else None,
    )
    change = dataclasses.replace
    candidates = [("baseline", "reference", base)]
    if "norm" in only:
        candidates.append(("no-batchnorm", "norm", change(base, batch_norm=False)))
    if "augment" in only:
        candidates.append(("no-augmentation", "augment", change(base, crop_padding=0, flip=False, cutout=0)))
    if "regularisation" in only:
        candidates += [
            (f"l1-{s.l1:g}", "regularisation", change(base, l1=s.l1)),
            (f"l2-{s.l2:g}", "regularisation", change(base, l2=s.l2)),
            (f"dropout-{s.dropout:g}", "regularisation", change(base, dropout=s.dropout)),
        ]
    if "optimizer" in only:
        candidates += [(f"sgd-lr{lr:g}", "optimizer", change(base, lr=lr)) for lr in numbers(s.sgd_lrs, "sgd_lrs", float)]
        candidates += [
            (f"adam-lr{lr:g}", "optimizer", change(base, optimizer="adam", lr=lr)) for lr in numbers(s.adam_lrs, "adam_lrs", float)
        ]
    unique = []
    for name, comparison, config in candidates:
        if all(config != seen for _, _, seen in unique):
            unique.append((name + fraction_suffix(s.fraction), comparison, config))
    return unique


def fraction_suffix(fraction):
    """Run names say the fraction, so whole-set and part-set runs can share a folder."""
    return f"-fraction{fraction:g}" if fraction < 1 else ""


def main(argv=None):
    parser = build_parser()
    try:
        args, settings = resolve_study_settings(parser, argv, Settings, SmokeSettings, RESULTS_DIR)
    except ValueError as e:
        parser.error(str(e))

    data = load_data(args, SMOKE_SIZES)
    try:
        configs = configurations(settings, len(data.x_train))
    except ValueError as e:  # Config's own checks (e.g. dropout 1)
        parser.error(str(e))
    train_images = configs[0][2].subset or len(data.x_train)
    if settings.batch_size > train_images:
        parser.error(f"--batch-size {settings.batch_size} is larger than the {train_images} training images")
    print(f"data: {data.source}; {train_images} train / {len(data.x_test)} test images")
    if data.image_format == "jpeg":
        print("note: JPEG copy of CIFAR-10: accuracies are about 3 points below real CIFAR-10 (0.91 here ~ 0.94 there)")
    runs = [(name, config) for name, _, config in configs]
    try:
        check_reusable(runs, args.results_dir)  # before config.json is overwritten
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_dir = prepare_study_dir(args.results_dir, settings)

    results = run_study(runs, data, study_dir, train_fn=train_with_tensorboard if settings.tensorboard else train_in_fresh_session)
    rows = [table_row(name, comparison, r) for (name, comparison, _), r in zip(configs, results)]
    print(f"target: test accuracy {settings.target}")
    print(write_table(rows, COLUMNS, study_dir / "table.csv"))
    network = {"davidnet": "DavidNet", "resnet44": "ResNet-44"}[settings.model] + (f" (width {settings.width:g})" if settings.width != 1 else "")
    title = f"{network}, {settings.epochs} epochs\n{dataset_label(data, settings.fraction)}"
    labels = [name.removesuffix(fraction_suffix(settings.fraction)) for name, _, _ in configs]  # the title says it
    plot_comparison(results, labels, study_dir / "comparison.png", title, args.log_log)
    print(f"results: {study_dir}")
    return 0


# ---------------------------------------------------------------- command line


RESULTS_DIR = "runs/ablations"  # --smoke: runs/ablations-smoke, so a smoke test never blocks the real study


def build_parser():
    parser = study_parser("python -m experiments.ablations", __doc__, RESULTS_DIR, Settings, HELP, {"model": ("davidnet", "resnet44"), "verbose": (0, 1, 2)})
    parser.add_argument("--log-log", action="store_true", help="log-log axes in comparison.png")
    return parser


# ---------------------------------------------------------------- table, logs, plot

COLUMNS = ["configuration", "comparison", "final_test_accuracy", "final_train_accuracy", "final_test_loss", "seconds_to_target", "status"]


def table_row(name, comparison, results):
    last = results["history"][-1] if results["history"] else {}
    number = lambda value: value if isinstance(value, float) else None  # noqa: E731  (NaN and inf were stored as text)
    return {
        "configuration": name,
        "comparison": comparison,
        "final_test_accuracy": number(results.get("final_accuracy")),
        "final_train_accuracy": number(last.get("accuracy")),
        "final_test_loss": number(last.get("val_loss")),
        "seconds_to_target": results.get("seconds_to_target"),
        "status": results["status"],
    }


def train_with_tensorboard(config, data, run_dir):
    """A study run with Keras's TensorBoard callback logging into run_dir/tensorboard
    (it writes through TensorFlow: without it, the run goes on without logs)."""
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorflow") is None:
        print("note: TensorFlow is not installed here: no TensorBoard logs (results.json holds the same history)")
        return train_in_fresh_session(config, data, run_dir)
    return train_in_fresh_session(
        config, data, run_dir, callbacks=[keras.callbacks.TensorBoard(log_dir=str(Path(run_dir) / "tensorboard"))]
    )


def plot_comparison(results, names, path, title, log_log=False):
    """Train / test loss and accuracy per epoch (2 x 2 panels), one line per configuration."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = {
        (0, 0): ("loss", "train loss"), (0, 1): ("val_loss", "test loss"),
        (1, 0): ("accuracy", "train accuracy"), (1, 1): ("val_accuracy", "test accuracy"),
    }
    colors = plt.cm.tab10.colors + plt.cm.Dark2.colors
    for index, (run, name) in enumerate(zip(results, names)):
        label = name + (" (diverged)" if run["status"] == "diverged" else "")
        for (row, col), (key, _) in panels.items():
            points = [(r["epoch"], r[key]) for r in run["history"] if isinstance(r.get(key), float) and (r[key] > 0 or not log_log)]
            if points:
                style = dict(color=colors[index % len(colors)], marker="o" if len(points) < 20 else None, markersize=3)
                axes[row, col].plot(*zip(*points), label=label, linestyle="--" if run["status"] == "diverged" else "-", **style)
    for (row, col), (key, heading) in panels.items():
        ax = axes[row, col]
        ax.set(title=heading, xlabel="epoch" if row else None)
        if log_log:
            ax.set(xscale="log", yscale="log")
            plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 0.3, not 3 x 10^-1
            ax.xaxis.set_major_locator(ticker.LogLocator(base=2))  # epochs 1, 2, 4, 8, ...
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both" if log_log else "major")
        _zoom_on_finished_runs(ax, [run for run in results if run["status"] == "completed"], key, log_log)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat:  # a configuration with no train loss to draw may still have accuracies
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small")
    first, _, rest = title.partition("\n")
    fig.suptitle(f"Ablations, {first}" + (" (log-log axes)" if log_log else "") + (f"\n{rest}" if rest else ""), fontsize="medium")
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(labels) + 3) // 4), 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def _zoom_on_finished_runs(ax, completed, key, log_log):
    """Limits the y axis to the completed runs' values, so a diverged run's
    loss of 1e17 does not flatten every other line (it leaves the panel)."""
    values = [r[key] for run in completed for r in run["history"] if isinstance(r.get(key), float) and (r[key] > 0 or not log_log)]
    if not values:
        return
    low, high = min(values), max(values)
    if log_log:
        ax.set_ylim(low / 1.2, high * 1.2)
    else:
        pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - pad, high + pad)


if __name__ == "__main__":
    sys.exit(main())
