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

from davidnet.studies import (  # noqa: E402  (after the env var)
    check_batch_size,
    check_common_settings,
    check_reusable,
    dataset_label,
    fail,
    load_data,
    mean_std,
    parse_list,
    parse_seeds,
    prepare_study_dir,
    print_data,
    resolve_study_settings,
    run_study,
    study_parser,
    subset_suffix,
    target_line,
    write_table,
)


@dataclasses.dataclass
class Settings:
    """The study: He et al.'s ResNet-44 recipe, with M batch-augmentation copies."""

    m_values: str = "0,2,4,8,16,32"  # M: 0 = He et al. only; 1 = + cutout; >= 2 = M copies with cutout
    epochs: int = 164  # He et al.: 64k iterations of batch 128 on 50k images
    milestones: str = ""  # learning rate / 10 at these epochs; "" = Hoffer et al.'s 81 and 122 of 164, scaled to the epochs
    batch_size: int = 64  # samples per step, before the M copies
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4  # coupled L2 on the kernels, as He et al. and Hoffer et al.
    zero_init_residual: bool = False  # each block's last batch-norm scale starts at 0 (Hoffer et al.'s code)
    crop_padding: int = 4  # zero padding ("constant") before the random crop
    cutout: int = 16  # cutout side of the copies (Hoffer et al.'s code: 1 hole, 16 px)
    width: float = 1.0  # channel multiplier: 16/32/64 channels at 1
    target: float | None = None  # validation accuracy to time; None: the data's equivalent of DAWNBench's 94% (0.91 on the JPEG copy)
    seeds: str = "0"  # one run per M and seed; the table shows means
    subset: int | None = None  # the first N training images, for quick runs (None: all)
    verbose: int = 0  # Keras progress bar (each epoch prints its own line anyway)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0. Got: {getattr(self, name)}")
        check_common_settings(self)
        parse_m_values(self)


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: the same study, tiny (flags and --config still win)."""

    m_values: str = "0,2"
    epochs: int = 2
    width: float = 0.125


SMOKE_SIZES = (256, 100)  # synthetic train / test images: 4 steps of 64 per epoch

HELP = {
    "m_values": "batch-augmentation copies M to compare, e.g. 0,2,4 (0: He et al. only; 1: + cutout; >= 2: M copies with cutout)",
    "epochs": "epochs per run",
    "milestones": "epochs at which the learning rate is divided by 10, e.g. 81,122 (default: 81/164 and 122/164 of the epochs, Hoffer et al.'s regime)",
    "batch_size": "samples per step before the M copies",
    "lr": "initial learning rate",
    "momentum": "SGD momentum (plain, as He et al.)",
    "weight_decay": "coupled weight decay of the conv and dense kernels",
    "zero_init_residual": "start each residual block's last batch-norm scale at 0 (Hoffer et al.'s code)",
    "crop_padding": "zero padding before the random crop (0: no crop)",
    "cutout": "cutout square side for M >= 1 (0: off)",
    "width": "channel multiplier (0.125 for quick CPU runs)",
    "target": "validation accuracy to time (default: the data's equivalent of DAWNBench's 94%: 0.94 on CIFAR-10, 0.91 on the JPEG copy)",
    "seeds": "random seeds, e.g. 0,1,2 (one run per M and seed)",
    "subset": "train on the first N training images, e.g. 5000 for a quick look (default: all)",
    "verbose": "Keras progress bar: 0 none, 1 bar, 2 a line per epoch",
}


def parse_m_values(settings):
    """'0,2,4' -> [0, 2, 4]: the copies M to compare. Raises ValueError (one line)."""
    return parse_list(settings.m_values, int, "m_values", at_least=0)


def lr_milestones(settings):
    """Hoffer et al.'s regime (lr / 10 after epochs 81 and 122 of 164), scaled to the run, unless given."""
    return settings.milestones or f"{settings.epochs * 81 / 164:g},{settings.epochs * 122 / 164:g}"


def run_config(settings, m, seed):
    """One run's `Config`: the recipe with M copies, on `settings.subset` images."""
    from davidnet.config import Config

    s = settings
    return Config(
        model="resnet44",
        width=s.width,
        epochs=s.epochs,
        batch_size=s.batch_size,
        optimizer="sgd",
        lr=s.lr,
        momentum=s.momentum,
        nesterov=False,
        lr_in_buffer=False,  # torch.optim.SGD
        weight_decay=s.weight_decay,
        weight_decay_kernels_only=True,
        zero_init_residual=s.zero_init_residual,
        schedule="step",
        lr_step_offset=0,  # the regime changes between epochs
        milestones=lr_milestones(s),
        decay=0.1,
        crop_padding=s.crop_padding,
        crop_mode="constant",
        flip=True,
        cutout=s.cutout if m >= 1 else 0,
        cutout_mode="centre",
        copies=max(m, 1),
        target=s.target,
        seed=seed,
        subset=s.subset,
        verbose=s.verbose,
    )


def runs_of(settings, copies, seeds):
    """[(run name, Config)]: one run per M and seed, m<M>-seed<S> (then -subset<N> if any,
    so whole-set and part-set runs can share a folder)."""
    return [(f"m{m}-seed{seed}{subset_suffix(settings.subset)}", run_config(settings, m, seed)) for m in copies for seed in seeds]


def planned_runs(settings):
    """[(run name, Config)]: what the study trains, in order. Raises ValueError (one line)."""
    return runs_of(settings, parse_m_values(settings), parse_seeds(settings.seeds))


def main(argv=None):
    parser = build_parser()
    args, settings = resolve_study_settings(parser, argv, Settings, SmokeSettings, RESULTS_DIR)
    copies, seeds = parse_m_values(settings), parse_seeds(settings.seeds)
    try:
        from davidnet.config import parse_milestones

        parse_milestones(lr_milestones(settings), settings.epochs)
    except ValueError as e:
        fail(e)

    data = load_data(args, SMOKE_SIZES)
    try:
        check_batch_size(settings.batch_size, data, settings.subset)
        runs = runs_of(settings, copies, seeds)  # Config's own checks (e.g. a negative cutout)
    except ValueError as e:
        fail(e)
    print_data(data, settings.subset)
    try:
        check_reusable(runs, args.results_dir, data)  # before config.json is overwritten
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_dir = prepare_study_dir(args.results_dir, settings)

    results = run_study(runs, data, study_dir)

    rows = table_rows(copies, results)
    print(target_line(settings.target, data))
    print(write_table(rows, COLUMNS, study_dir / "table.csv"))
    network = "ResNet-44" + (f" (width {settings.width:g})" if settings.width != 1 else "")
    title = f"{network}, {settings.epochs} epochs, {len(seeds)} seed{'s' * (len(seeds) > 1)}\n{dataset_label(data, settings.subset)}"
    plot_validation_error(copies, results, study_dir / "validation_error.png", title)
    print(f"results: {study_dir}")
    return 0


# ---------------------------------------------------------------- command line


RESULTS_DIR = "runs/resnet44"  # --smoke: runs/resnet44-smoke, so a smoke test never blocks the real study


def build_parser():
    return study_parser("python -m experiments.resnet44", __doc__, RESULTS_DIR, Settings, HELP, smoke_class=SmokeSettings)


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
