"""Batch augmentation on ResNet-44: Hoffer et al., "Augment your batch" (2019).

    python -m experiments.resnet44                                # M = 0, 2, 4, 8, 16, 32; 164 epochs each
    python -m experiments.resnet44 --epochs 40 --m-values 0,4 --seeds 0,1
    python -m experiments.resnet44 --subset 5000 --epochs 6       # the first 5,000 training images
    python -m experiments.resnet44 --smoke                        # seconds on a CPU, synthetic data

The recipe is He et al. 2016's CIFAR-10 ResNet-44 (section 4.2) as Hoffer et
al.'s code (github.com/eladhoffer/convNet.pytorch) trains it: batch 64, SGD
with plain (not Nesterov) momentum 0.9, learning rate 0.1 divided by 10 after
epochs 81 and 122 of 164 (the code's regime; He et al.'s 32k and 48k of 64k
iterations), coupled weight decay 1e-4 on the conv and dense kernels only,
He-normal (fan-out) conv init, 4-pixel zero padding, random 32x32 crop and
flip. docs/fidelity.md lists every setting against both references.

Batch augmentation (BA) puts M differently augmented copies of each of the 64
samples in every batch: a batch of M x 64, the same number of steps per
epoch, M times the compute per step. Following Hoffer et al.'s code
(`--duplicates M --cutout`, which is one 16x16 cutout hole per copy,
`{'holes': 1, 'length': 16}` in main.py, centred on any pixel and clipped at
the border as DeVries & Taylor's Cutout; its README's ResNet-44 example is
`--duplicates 40 --cutout -b 64 --epochs 100`), the copies also get cutout
16. M = 0 is the plain He et al. recipe (no cutout, no copies); M = 1 is that
recipe plus cutout 16, without copies, for telling the two effects apart.

The claim under test: more copies reach a given validation error in fewer
epochs, and a lower final error. What that costs in wall time is the
`wall_to_target_s` column: each step does M times the work.

Differences from Hoffer et al.'s code (docs/fidelity.md says why): identity
shortcuts with zero-padded channels (He et al.'s option A) where the code
projects with a 1x1 conv, CIFAR-10's normalisation where it uses ImageNet's,
and the crop's padding is the mean colour (zeros after normalising) where the
code pads black.

Outputs, in --results-dir (default runs/resnet44, runs/resnet44-smoke for
--smoke): table.csv (one row per M: means over seeds), validation_error.png
(validation error, i.e. on the test set as in both papers, per epoch and per
second of training, one line per M), config.json (the resolved settings) and
runs/m<M>-seed<S>/ (each run's results.json, plots, model). An interrupted
study is rerun with the same command and skips the finished runs; a run
folder trained with another recipe is refused (exit 2), not reused.

Measured, on 2 CPU cores shared with other work, Keras 3.15.1:
- `--smoke` (synthetic data, width 0.125, 2 epochs, M in {0, 2}): 53 s on
  TensorFlow 2.21, 39 s on JAX 0.10.2, most of it compiling. It checks the
  machinery, not the claim.
- `--data-dir <JPEG copy of CIFAR-10> --width 0.25 --subset 5000 --epochs 6
  --m-values 0,2,4 --target 0.5` (TensorFlow, one seed; docs/resnet44.png):
  final validation error 58.3% (M=0), 65.5% (M=2), 61.8% (M=4). In so short
  a run on 5,000 images, batch augmentation with its cutout did worse than
  none (one seed: a few points may be noise); it says nothing about Hoffer
  et al.'s full-length runs. Its training times are not comparable between
  runs: the machine's load changed under them.
"""

import dataclasses
import os
import sys

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
from davidnet.study_runs import check_reusable, mean_std, run_study, write_table  # noqa: E402

# He et al.'s ResNet-44 as Hoffer et al.'s code trains it; each run adds its M copies (`run_config`).
RECIPE = StudyRecipe(
    Config(
        model="resnet44",
        epochs=164,  # He et al.: 64k iterations of batch 128 on 50k images
        batch_size=64,  # samples per step, before the M copies
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
        lr_in_buffer=False,  # torch.optim.SGD
        weight_decay=1e-4, weight_decay_kernels_only=True,  # coupled L2 on the kernels, as He et al. and Hoffer et al.
        schedule="step", decay=0.1,
        milestones="",  # "": Hoffer et al.'s 81 and 122 of 164 epochs, scaled to the epochs (`lr_milestones`)
        lr_step_offset=0,  # the regime changes between epochs
        crop_padding=4, crop_mode="constant",  # zero padding (after normalising) before the random crop
        cutout=16, cutout_mode="centre",  # the copies' cutout (Hoffer et al.'s code: 1 hole, 16 px, clipped at the border)
        verbose=0,  # each epoch prints its own line anyway
    ),
    flags=("epochs", "milestones", "batch_size", "lr", "momentum", "weight_decay", "zero_init_residual",
           "crop_padding", "cutout", "width", "target", "subset", "verbose"),
    smoke=dict(epochs=2, width=0.125),
    shown=dict(milestones="81/164 and 122/164 of the epochs, Hoffer et al.'s regime"),
)


@dataclasses.dataclass
class Settings:
    """What the study varies: the copies M, and the seeds."""

    m_values: str = "0,2,4,8,16,32"  # M: 0 = He et al. only; 1 = + cutout; >= 2 = M copies with cutout
    seeds: str = "0"  # one run per M and seed; the table shows means

    def __post_init__(self):
        parse_seeds(self.seeds)
        parse_m_values(self)


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: the same study, tiny (flags and --config still win)."""

    m_values: str = "0,2"


SMOKE_SIZES = (256, 100)  # synthetic train / test images: 4 steps of 64 per epoch

HELP = {
    "m_values": "batch-augmentation copies M to compare, e.g. 0,2,4 (0: He et al. only; 1: + cutout; >= 2: M copies with cutout)",
    "seeds": "random seeds, e.g. 0,1,2 (one run per M and seed)",
}


def parse_m_values(settings):
    """'0,2,4' -> [0, 2, 4]: the copies M to compare. Raises ValueError (one line)."""
    return parse_list(settings.m_values, int, "m_values", at_least=0)


def lr_milestones(recipe):
    """Hoffer et al.'s regime (lr / 10 after epochs 81 and 122 of 164), scaled to the run, unless given."""
    return recipe.milestones or f"{recipe.epochs * 81 / 164:g},{recipe.epochs * 122 / 164:g}"


def run_config(recipe, m, seed):
    """One run's `Config`: the recipe with M copies (and its cutout from M = 1 on)."""
    cutout = recipe.cutout if m >= 1 else 0
    return dataclasses.replace(recipe, milestones=lr_milestones(recipe), cutout=cutout, copies=max(m, 1), seed=seed)


def runs_of(recipe, copies, seeds):
    """[(run name, Config)]: one run per M and seed, m<M>-seed<S> (then -subset<N> if any,
    so whole-set and part-set runs can share a folder)."""
    return [(f"m{m}-seed{seed}{subset_suffix(recipe.subset)}", run_config(recipe, m, seed)) for m in copies for seed in seeds]


def planned_runs(settings, recipe):
    """[(run name, Config)]: what the study trains, in order. Raises ValueError (one line)."""
    return runs_of(recipe, parse_m_values(settings), parse_seeds(settings.seeds))


def main(argv=None):
    parser = build_parser()
    args, settings, recipe = resolve_study(parser, argv, Settings, SmokeSettings, RESULTS_DIR, RECIPE)
    copies, seeds = parse_m_values(settings), parse_seeds(settings.seeds)
    try:
        runs = runs_of(recipe, copies, seeds)  # Config's own checks (e.g. milestones past the epochs)
    except ValueError as e:
        fail(e)

    data = study_data(args, recipe, SMOKE_SIZES)
    try:
        check_reusable(runs, args.results_dir, data)  # before config.json is overwritten
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_dir = prepare_study_dir(args.results_dir, settings, RECIPE.values(recipe))

    results = run_study(runs, data, study_dir)

    rows = table_rows(copies, results)
    print(target_line(recipe.target, data))
    print(write_table(rows, COLUMNS, study_dir / "table.csv"))
    network = "ResNet-44" + (f" (width {recipe.width:g})" if recipe.width != 1 else "")
    title = f"{network}, {recipe.epochs} epochs, {len(seeds)} seed{'s' * (len(seeds) > 1)}\n{dataset_label(data, recipe.subset)}"
    plot_validation_error(copies, results, study_dir / "validation_error.png", title)
    print(f"results: {study_dir}")
    return 0


# ---------------------------------------------------------------- command line


RESULTS_DIR = "runs/resnet44"  # --smoke: runs/resnet44-smoke, so a smoke test never blocks the real study


def build_parser():
    parser = study_parser("python -m experiments.resnet44", __doc__, RESULTS_DIR, Settings, HELP, smoke_class=SmokeSettings)
    add_recipe_arguments(parser, RECIPE)
    return parser


# ---------------------------------------------------------------- table and plot

COLUMNS = ["M", "runs", "reached", "wall_to_target_s", "epoch_reached", "final_error", "final_error_std", "train_s", "status"]


def table_rows(m_values, results):
    """One row per M, means over its seeds. wall_to_target_s and epoch_reached
    are over the runs that reached the target (`reached` says how many)."""
    rows = []
    for m in m_values:
        group = [r for r in results if _m_of(r) == m]
        reached = [r for r in group if r.get("target_epoch") is not None]
        error, error_std = mean_std([1.0 - r["final_accuracy"] for r in group if isinstance(r.get("final_accuracy"), float)])
        rows.append({
            "M": m,
            "runs": len(group),
            "reached": f"{len(reached)}/{len(group)}",
            "wall_to_target_s": mean_std([r["wall_to_target_s"] for r in reached])[0],
            "epoch_reached": mean_std([r["target_epoch"] for r in reached])[0],
            "final_error": error,
            "final_error_std": error_std if len(group) > 1 else None,
            "train_s": mean_std([r.get("train_s") for r in group])[0],
            "status": ",".join(sorted({r["status"] for r in group})),
        })
    return rows


def _m_of(results):
    """M of a run, from its name (m<M>-seed<S>)."""
    return int(results["name"].split("-")[0][1:])


def plot_validation_error(m_values, results, path, title):
    """Validation error per epoch and per training second, one line per M (mean over seeds)."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.cm.viridis([0.85 * i / max(1, len(m_values) - 1) for i in range(len(m_values))])  # no pale yellow
    for m, color in zip(m_values, colors):
        curve = _mean_curve([r for r in results if _m_of(r) == m])
        if not curve:
            continue
        epochs, seconds, errors = zip(*curve)
        name = {0: "M=0 (He et al.)", 1: "M=1 (+ cutout)"}.get(m, f"M={m}")
        marker = "o" if len(curve) < 20 else None
        by_epoch.plot(epochs, errors, color=color, marker=marker, label=name)
        by_time.plot(seconds, errors, color=color, marker=marker, label=name)
    by_epoch.set(xlabel="epoch", ylabel="validation error (%)")
    by_epoch.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    by_time.set(xlabel="training time (s, evaluation excluded)", ylabel="validation error (%)")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.suptitle(f"Batch augmentation, {title}", fontsize="medium")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _mean_curve(group):
    """[(epoch, mean train_s_total, mean error %)] over the runs of one M, at
    the epochs every run evaluated."""
    per_run = [{r["epoch"]: r for r in run["history"] if isinstance(r.get("val_accuracy"), float)} for run in group]
    if not per_run:
        return []
    shared = sorted(set.intersection(*(set(p) for p in per_run)))
    return [
        (e, mean_std([p[e]["train_s_total"] for p in per_run])[0], 100.0 * (1.0 - mean_std([p[e]["val_accuracy"] for p in per_run])[0]))
        for e in shared
    ]


if __name__ == "__main__":
    sys.exit(main())
