"""The classic ablations on DavidNet: what each part of the recipe is worth.

    python -m experiments.ablations                             # every comparison, 24 epochs each
    python -m experiments.ablations --only optimizer --adam-lrs 0.0003,0.001 --subset 25000
    python -m experiments.ablations --only norm --seeds 0,1,2   # each configuration once per seed
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

`--subset 25000` trains every configuration on the first 25,000 training
images, to see how the comparisons change with less data. `--seeds 0,1,2`
trains each configuration once per seed; the table gives, per configuration,
n and the mean (and std) over its seeds, and the plot their mean curves.
A run that diverges (training loss NaN or inf) is stopped, recorded as
diverged in the table, and the others go on.

Outputs, in --results-dir (default runs/ablations, runs/ablations-smoke for
--smoke): table.csv (one row per configuration), comparison.png (train / test
loss and accuracy per epoch, one line per configuration; `--log-log` for
log-log axes), config.json, and runs/<configuration>-seed<S>/ with each run's
results and tensorboard/ logs from `keras.callbacks.TensorBoard` (`tensorboard
--logdir runs/ablations/runs`; `--no-tensorboard` where TensorFlow is not
installed, as on a JAX-only machine). A rerun skips finished runs; a run
folder trained with another recipe is refused (exit 2), not reused.

Measured, on 2 CPU cores shared with other work, Keras 3.15.1:
- `--smoke` (synthetic data, width 0.0625, 2 epochs, 7 configurations):
  38 s on TensorFlow 2.21, 60 s on JAX 0.10.2, most of it compiling. It
  checks the machinery, not the claims.
- `--data-dir <JPEG copy of CIFAR-10> --width 0.25 --subset 5000 --epochs 8
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

from davidnet.config import Config  # noqa: E402  (after the env var; no Keras)
from davidnet.studies import (  # noqa: E402
    StudyRecipe,
    add_recipe_arguments,
    dataset_label,
    fail,
    parse_list,
    parse_seeds,
    prepare_study_dir,
    resolve_study,
    study_data,
    study_parser,
    subset_suffix,
    target_line,
)
from davidnet.study_runs import check_reusable, mean_std, run_study, train_in_fresh_session, write_table  # noqa: E402

# The baseline: DavidNet's DAWNBench recipe (experiments/davidnet.py), SGD, piecewise linear 0 -> lr -> 0,
# with the recipe's weight decay kept in every configuration.
RECIPE = StudyRecipe(
    Config(verbose=0),  # each epoch prints its own line anyway
    flags=("model", "width", "epochs", "batch_size", "lr", "weight_decay", "subset", "target", "verbose"),
    smoke=dict(width=0.0625, epochs=2, batch_size=64),
)
COMPARISONS = ("norm", "augment", "regularisation", "optimizer")


@dataclasses.dataclass
class Settings:
    """What each comparison changes in the baseline."""

    only: str = ",".join(COMPARISONS)  # which comparisons to run
    # L1's pull (l1 per weight) is about the weight decay's (5e-4 x |w|) at DavidNet's
    # typical initial weights (|w| ~ 0.02); L2's (2 x l2 x w) doubles the decay.
    l1: float = 1e-5
    l2: float = 2.5e-4
    dropout: float = 0.2
    sgd_lrs: str = "0.1,0.4,1.6"  # SGD peak learning rates
    adam_lrs: str = "0.0003,0.001,0.003"  # Adam peak learning rates
    seeds: str = "0"  # each configuration is trained once per seed; the table shows means
    tensorboard: bool = True  # write TensorBoard event logs for each run

    def __post_init__(self):
        parse_seeds(self.seeds)
        comparisons(self)


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: the same study, tiny (flags and --config still win)."""

    sgd_lrs: str = "0.4"  # the baseline itself: no extra run
    adam_lrs: str = "0.001"


SMOKE_SIZES = (256, 100)  # synthetic train / test images: 4 steps of 64 per epoch

HELP = {
    "only": f"comparisons to run, from {','.join(COMPARISONS)} (default: all)",
    "l1": "the L1 configuration's kernel regularisation",
    "l2": "the L2 configuration's kernel regularisation",
    "dropout": "the dropout configuration's rate before the classifier",
    "sgd_lrs": "SGD peak learning rates, e.g. 0.1,0.4",
    "adam_lrs": "Adam peak learning rates, e.g. 0.0003,0.001",
    "seeds": "random seeds, e.g. 0,1,2 (each configuration once per seed)",
    "tensorboard": "TensorBoard event logs in each run's folder",
}


def comparisons(s):
    """(only, SGD learning rates, Adam learning rates) of the settings. Raises ValueError (one line)."""
    return (
        parse_list(s.only, str, "only", choices=COMPARISONS),
        parse_list(s.sgd_lrs, float, "sgd_lrs", above=0),
        parse_list(s.adam_lrs, float, "adam_lrs", above=0),
    )


def configurations(s, recipe):
    """[(name, comparison, Config)]: the baseline (`recipe`), then one changed
    thing per configuration, each at the first seed (`runs_of` trains every
    seed). A configuration equal to an earlier one (SGD at the baseline's
    learning rate) is that one, trained once."""
    only, sgd_lrs, adam_lrs = comparisons(s)
    change = dataclasses.replace
    base = change(recipe, seed=parse_seeds(s.seeds)[0])
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
        candidates += [(f"sgd-lr{lr:g}", "optimizer", change(base, lr=lr)) for lr in sgd_lrs]
        candidates += [(f"adam-lr{lr:g}", "optimizer", change(base, optimizer="adam", lr=lr)) for lr in adam_lrs]
    unique = []
    for name, comparison, config in candidates:
        if all(config != seen for _, _, seen in unique):
            unique.append((name, comparison, config))
    return unique


def runs_of(configs, seeds):
    """[(run name, Config)]: each configuration once per seed, configuration by
    configuration, named <configuration>-seed<S> (then -subset<N> if any, so
    whole-set and part-set runs can share a folder)."""
    return [
        (f"{name}-seed{seed}{subset_suffix(config.subset)}", dataclasses.replace(config, seed=seed))
        for name, _, config in configs
        for seed in seeds
    ]


def planned_runs(settings, recipe):
    """[(run name, Config)]: what the study trains, in order. Raises ValueError (one line)."""
    return runs_of(configurations(settings, recipe), parse_seeds(settings.seeds))


def main(argv=None):
    parser = build_parser()
    args, settings, recipe = resolve_study(parser, argv, Settings, SmokeSettings, RESULTS_DIR, RECIPE)
    seeds = parse_seeds(settings.seeds)
    try:
        configs = configurations(settings, recipe)  # Config's own checks (e.g. dropout 1)
    except ValueError as e:
        fail(e)
    runs = runs_of(configs, seeds)
    data = study_data(args, recipe, SMOKE_SIZES)
    try:
        check_reusable(runs, args.results_dir, data)  # before config.json is overwritten
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_dir = prepare_study_dir(args.results_dir, settings, RECIPE.values(recipe))

    results = run_study(runs, data, study_dir, train_fn=train_with_tensorboard if settings.tensorboard else train_in_fresh_session)
    groups = [results[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(configs))]
    rows = [table_row(name, comparison, group) for (name, comparison, _), group in zip(configs, groups)]
    print(target_line(recipe.target, data))
    print(write_table(rows, COLUMNS, study_dir / "table.csv"))
    network = NETWORKS.get(recipe.model, recipe.model) + (f" (width {recipe.width:g})" if recipe.width != 1 else "")
    seeds_text = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else "1 seed"
    title = f"{network}, {recipe.epochs} epochs, {seeds_text}\n{dataset_label(data, recipe.subset)}"
    plot_comparison(groups, [name for name, _, _ in configs], study_dir / "comparison.png", title, args.log_log)
    print(f"results: {study_dir}")
    return 0


# ---------------------------------------------------------------- command line


RESULTS_DIR = "runs/ablations"  # --smoke: runs/ablations-smoke, so a smoke test never blocks the real study


NETWORKS = {"davidnet": "DavidNet", "resnet9": "ResNet-9", "resnet44": "ResNet-44", "airbench94": "airbench94"}  # in plot titles


def build_parser():
    parser = study_parser("python -m experiments.ablations", __doc__, RESULTS_DIR, Settings, HELP, smoke_class=SmokeSettings)
    add_recipe_arguments(parser, RECIPE)
    parser.add_argument("--log-log", action="store_true", help="log-log axes in comparison.png")
    return parser


# ---------------------------------------------------------------- table, logs, plot

COLUMNS = [
    "configuration", "comparison", "n", "final_test_accuracy", "final_test_accuracy_std", "final_train_accuracy",
    "final_test_loss", "seconds_to_target", "reached", "status",
]
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")


def table_row(name, comparison, group):
    """One configuration's row: n runs (one per seed), the means over them (the
    std of the test accuracy where n > 1), seconds_to_target over the runs that
    reached the target (`reached` says how many)."""
    number = lambda value: value if isinstance(value, float) else None  # noqa: E731  (NaN and inf were stored as text)
    last = [run["history"][-1] if run["history"] else {} for run in group]
    accuracy, accuracy_std = mean_std([number(run.get("final_accuracy")) for run in group])
    reached = [run["seconds_to_target"] for run in group if run.get("seconds_to_target") is not None]
    return {
        "configuration": name,
        "comparison": comparison,
        "n": len(group),
        "final_test_accuracy": accuracy,
        "final_test_accuracy_std": accuracy_std if len(group) > 1 else None,
        "final_train_accuracy": mean_std([number(record.get("accuracy")) for record in last])[0],
        "final_test_loss": mean_std([number(record.get("val_loss")) for record in last])[0],
        "seconds_to_target": mean_std(reached)[0],
        "reached": f"{len(reached)}/{len(group)}",
        "status": ",".join(sorted({run["status"] for run in group})),
    }


def mean_history(group):
    """One history for a configuration's runs (one per seed): at each epoch
    every run reached, the mean of each value every run has as a number. Over
    the completed runs where any completed (a diverged seed would cut the curve
    short), else over all."""
    runs = [run for run in group if run["status"] == "completed"] or group
    per_run = [{record["epoch"]: record for record in run["history"]} for run in runs]
    epochs = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    history = []
    for epoch in epochs:
        record = {"epoch": epoch}
        for key in HISTORY_KEYS:
            values = [p[epoch].get(key) for p in per_run]
            if all(isinstance(v, float) for v in values):
                record[key] = mean_std(values)[0]
        history.append(record)
    return history


def train_with_tensorboard(config, data, run_dir, **kwargs):
    """A study run with Keras's TensorBoard callback logging into run_dir/tensorboard
    (it writes through TensorFlow: without it, the run goes on without logs)."""
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorflow") is None:
        print("note: TensorFlow is not installed here: no TensorBoard logs (results.json holds the same history)")
        return train_in_fresh_session(config, data, run_dir, **kwargs)
    return train_in_fresh_session(
        config, data, run_dir, callbacks=[keras.callbacks.TensorBoard(log_dir=str(Path(run_dir) / "tensorboard"))], **kwargs
    )


def plot_comparison(groups, names, path, title, log_log=False):
    """Train / test loss and accuracy per epoch (2 x 2 panels), one line per
    configuration: the mean over its seeds (`groups[i]`: the results of
    configuration i, one per seed). A configuration whose runs all diverged is
    dashed; the legend says how many diverged."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = {
        (0, 0): ("loss", "train loss"), (0, 1): ("val_loss", "test loss"),
        (1, 0): ("accuracy", "train accuracy"), (1, 1): ("val_accuracy", "test accuracy"),
    }
    colors = plt.cm.tab10.colors + plt.cm.Dark2.colors
    curves, finished = [], []
    for group, name in zip(groups, names):
        diverged = sum(run["status"] == "diverged" for run in group)
        all_diverged = diverged == len(group)
        label = name + ("" if not diverged else " (diverged)" if all_diverged else f" ({diverged}/{len(group)} diverged)")
        history = mean_history(group)
        curves.append((label, history, all_diverged))
        if any(run["status"] == "completed" for run in group):
            finished.append(history)
    for index, (label, history, all_diverged) in enumerate(curves):
        for (row, col), (key, _) in panels.items():
            points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), float) and (r[key] > 0 or not log_log)]
            if points:
                style = dict(color=colors[index % len(colors)], marker="o" if len(points) < 20 else None, markersize=3)
                axes[row, col].plot(*zip(*points), label=label, linestyle="--" if all_diverged else "-", **style)
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
        _zoom_on_finished_runs(ax, finished, key, log_log)
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


def _zoom_on_finished_runs(ax, histories, key, log_log):
    """Limits the y axis to the values of the configurations that completed
    (`histories`), so a diverged run's loss of 1e17 does not flatten every other
    line (it leaves the panel)."""
    values = [r[key] for history in histories for r in history if isinstance(r.get(key), float) and (r[key] > 0 or not log_log)]
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
