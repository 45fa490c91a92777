"""Learning-rate schedules for DavidNet: Smith's LR range test, then a seeded grid of schedules.

    python -m experiments.lr_schedules --range-test --data-dir DIR            # which peak LR?
    python -m experiments.lr_schedules --schedules piecewise,onecycle --lrs 0.2,0.4,0.8 --seeds 0,1,2
    python -m experiments.lr_schedules --scale-fn '0.5*(1+sin(x*pi/2.5))'     # adds a "custom" cyclic schedule
    python -m experiments.lr_schedules --subset 10000 --epochs 8              # the first 10,000 training images
    python -m experiments.lr_schedules --config grid.toml                      # settings from a file
    python -m experiments.lr_schedules --dry-run                               # list the runs, plot the schedules
    python -m experiments.lr_schedules --smoke [--range-test]                  # tiny, synthetic data, seconds on CPU

Range test (`--range-test`; Smith, "Cyclical Learning Rates", 2017, section 3.3): the recipe's
model and optimizer train for `range_steps` batches while the LR grows exponentially from
`range_min_lr` to `range_max_lr`. Each batch's loss is recorded and smoothed (bias-corrected
exponential moving average); the test stops once the smoothed loss exceeds `range_stop_factor`
times its lowest value. Suggested peak LR: where the smoothed loss falls fastest against log LR,
looked for before the loss's minimum (the other common rule, a tenth of the LR at the minimum,
is printed beside it). Writes range-test/range_test.csv (step, lr, loss, smoothed_loss),
range_test.json and lr_range_test.png. Measured (docs/lr_range_test.png; TensorFlow, 2 shared
CPU cores, 149 s; DavidNet width 0.25, batch 256, 100 steps from 1e-3 to 10, one seed, on the
JPEG copy of CIFAR-10, ~3 points harder than CIFAR-10): with batch norm the loss never blew up;
lowest smoothed loss at LR 0.61, suggestion 0.066. Both rules are conservative for such nets
(DavidNet trains at 0.4): take the suggestion as the low end of the --lrs to sweep.

Sweep (the default): every schedule of `schedules` x every peak LR of `lrs` (x every half-cycle
of `step_sizes` for the cyclic ones), each trained once per seed by `davidnet.training.train`.
"custom" is the triangular cycle with its amplitude scaled by `scale_fn` of the cycle number x
(1, 2, ...). Writes table.csv (schedule, params, number of seeds, mean/std final accuracy,
mean/std seconds to target over the seeds that reached it, how many reached it, how many
diverged), lr_schedules.png (the LR of every cell against the step, overlaid) and
runs/<name>/, one per run (e.g. onecycle-lr0.4-seed0, onecycle-lr0.4-seed0-subset10000
with --subset); a rerun skips finished runs. Results go to --results-dir (default
runs/lr_schedules, runs/lr_schedules-smoke for --smoke; the range test in its
range-test/ folder).

Why a plain grid and not a tuner: the question is how schedules compare, with a mean and a std
over seeds, not where a single optimum lies. A grid gives every cell the same seeds, names each
run after its settings so an interrupted sweep resumes, and puts the whole design on the
command line. (KerasTuner is not installed here, and its trials are single runs, not seeds.)
"""

import dataclasses
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

import keras  # noqa: E402  (after the env var)
import numpy as np  # noqa: E402

from davidnet import schedules, studies, study_runs  # noqa: E402
from davidnet.results import write_json_atomic  # noqa: E402
from davidnet.builders import assemble_run, build_schedule, set_precision  # noqa: E402
from davidnet.config import SCHEDULES, Config  # noqa: E402
from pipelines import keras_private  # noqa: E402

# Every run: DavidNet's recipe (experiments/davidnet.py) with its cell's schedule and peak LR (`run_config`).
RECIPE = studies.StudyRecipe(
    Config(
        gamma=0.999,  # exp_range: amplitude x gamma per iteration (~0.1 after 24 epochs of 97 steps)
        milestones="",  # step: LR x 0.1 at these epochs; "": half and three quarters of the run
        verbose=0,  # one line per epoch from the training engine is enough in a sweep
        save_model=False,  # dozens of runs: keep the numbers, not the weights
    ),
    flags=("model", "width", "epochs", "batch_size", "optimizer", "base_lr", "gamma", "pct_start", "milestones", "target", "subset"),
    smoke=dict(width=0.125, epochs=2, batch_size=32, target=0.5),  # batch 32: 16 steps an epoch, for batch norm's averages to settle
    shown=dict(milestones="1/2 and 3/4 of the epochs"),
)
CYCLIC = ("triangular", "triangular2", "exp_range", "custom")


@dataclasses.dataclass
class Settings:
    """What the study varies. Lists are comma-separated strings, on the command line and in config files."""

    # The grid
    schedules: str = "piecewise,step,triangular,triangular2,exp_range,onecycle"  # and "custom" (needs scale_fn)
    lrs: str = "0.2,0.4,0.8"  # peak learning rates
    step_sizes: str = ""  # cyclic half-cycles in iterations; "" = 2 epochs
    scale_fn: str | None = None  # "custom": amplitude scale of the cycle number x, e.g. "0.5*(1+sin(x*pi/2.5))"
    seeds: str = "0,1,2"  # every cell once per seed
    # The range test
    range_min_lr: float = 1e-4
    range_max_lr: float = 10.0
    range_steps: int = 200
    range_smoothing: float = 0.9  # EMA factor of the loss; it lags ~ 1 / (1 - factor) steps, shifting the curve right
    range_stop_factor: float = 4.0  # stop when the smoothed loss exceeds this x its lowest

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: the same study on synthetic data, in seconds to a minute on a CPU."""

    schedules: str = "piecewise,onecycle"
    lrs: str = "0.4"
    step_sizes: str = "8"
    seeds: str = "0,1"
    range_steps: int = 30
    range_smoothing: float = 0.8


def main(argv=None):
    parser = build_parser()
    args, settings, recipe = studies.resolve_study(parser, argv, Settings, SmokeSettings, RESULTS_DIR, RECIPE)
    try:
        plan = [] if args.range_test else sweep_plan(settings, recipe)
        runs = runs_of(recipe, plan)
        study_runs.check_reusable(runs, args.results_dir)  # before loading data: fail fast
    except ValueError as e:
        studies.fail(e)

    data = studies.study_data(args, recipe)
    if args.range_test:
        out_dir = studies.prepare_study_dir(Path(args.results_dir) / "range-test", settings, RECIPE.values(recipe))
        return range_test(settings, recipe, data, out_dir)
    sweep(settings, recipe, plan, runs, data, studies.prepare_study_dir(args.results_dir, settings, RECIPE.values(recipe)), args.dry_run)
    return 0


# --- Range test ---------------------------------------------------------------------


class LRRangeTest(schedules.LearningRateCallback):
    """Smith's LR range test: the LR grows exponentially from `min_lr` to
    `max_lr` over `num_steps` batches, and each batch's loss is recorded.

    Training stops after `num_steps` batches, or as soon as the smoothed loss
    is not finite or exceeds `stop_factor` x its lowest value so far. The LR is
    set like the other schedules of `davidnet.schedules` (through `self.model`
    on JAX); the loss is read in `on_train_batch_end`, which turns off Keras's
    asynchronous batch-end dispatch: this test needs every loss anyway.

    Args:
        min_lr, max_lr: the LR of the first and of the last batch.
        num_steps: batches in the test (at least 2).
        smoothing: factor of the exponential moving average of the loss.
        stop_factor: stop once the smoothed loss exceeds this x its lowest.

    Attributes:
        lrs, losses, smoothed: one value per batch trained.
        stopped_early: whether the loss blew up before `num_steps`.

    Example:
    ```python
    test = LRRangeTest(1e-4, 10.0, num_steps=200)
    model.fit(feed, epochs=math.ceil(200 / len(feed)), callbacks=[test])
    suggest_lr(test.lrs, test.smoothed)
    ```
    """

    requires_steps_per_epoch = False

    def __init__(self, min_lr, max_lr, num_steps, smoothing=0.9, stop_factor=4.0):
        super().__init__()
        self.min_lr, self.max_lr, self.num_steps = float(min_lr), float(max_lr), int(num_steps)
        self.smoothing, self.stop_factor = float(smoothing), float(stop_factor)
        self.lrs, self.losses, self.smoothed = [], [], []
        self.stopped_early = False
        self._average = 0.0
        self._epoch_mean = 0.0

    def _lr(self, steps):
        return self.min_lr * (self.max_lr / self.min_lr) ** (steps / (self.num_steps - 1))

    def on_train_batch_end(self, batch, logs=None):
        # Keras logs the mean loss of the epoch so far; the batch's own loss
        # is the difference of two consecutive running sums.
        mean = float(keras.ops.convert_to_numpy((logs or {})["loss"]))
        loss = mean if batch == 0 else (batch + 1) * mean - batch * self._epoch_mean
        self._epoch_mean = mean
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** (len(self.losses) + 1))  # bias-corrected
        self.lrs.append(self.history[-1][1])
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        best = min(self.smoothed)
        if not math.isfinite(smoothed) or smoothed > self.stop_factor * best:
            self.stopped_early = True
        if self.stopped_early or len(self.losses) >= self.num_steps:
            self.model.stop_training = True


def range_test(settings, recipe, data, out_dir):
    """Runs the LR range test on the study's first seed and writes its files; returns the exit code."""
    # The recipe's model and optimizer; the schedule is the test's own, so the cell's does not matter.
    config = run_config(recipe, Cell("piecewise", settings.range_min_lr), studies.parse_seeds(settings.seeds)[0])
    keras_private.set_random_seed(config.seed)
    set_precision(config.precision)
    # The run's own model, optimizer, loss (label smoothing included) and feed;
    # the learning rate is the range test's, set per batch.
    run = assemble_run(config, data, schedule_in_graph=False)
    model, feed, x_train = run.model, run.feed, run.x_train
    test = LRRangeTest(settings.range_min_lr, settings.range_max_lr, settings.range_steps, settings.range_smoothing, settings.range_stop_factor)
    steps_per_epoch = len(x_train) // config.batch_size
    print(f"range test: LR {settings.range_min_lr:g} -> {settings.range_max_lr:g} over {settings.range_steps} steps "
          f"({config.model} width {config.width}, batch {config.batch_size}, {config.optimizer}, seed {config.seed})", flush=True)
    model.fit(feed, epochs=math.ceil(settings.range_steps / steps_per_epoch), shuffle=False, callbacks=[test], verbose=0)
    if not any(math.isfinite(s) for s in test.smoothed):
        print(f"error: the loss was not finite from the first step (LR {settings.range_min_lr:g}): lower --range-min-lr", file=sys.stderr)
        return 1

    suggested = suggest_lr(test.lrs, test.smoothed)
    finite = [i for i, s in enumerate(test.smoothed) if math.isfinite(s)]
    lowest = min(finite, key=lambda i: test.smoothed[i])
    rows = [{"step": i, "lr": lr, "loss": loss, "smoothed_loss": smoothed} for i, (lr, loss, smoothed) in enumerate(zip(test.lrs, test.losses, test.smoothed))]
    study_runs.write_table(rows, ["step", "lr", "loss", "smoothed_loss"], out_dir / "range_test.csv")
    summary = {
        "suggested_lr": suggested,
        "rule": "steepest descent of the smoothed loss against log10(lr), before its minimum",
        "lr_at_min_loss": test.lrs[lowest],
        "min_smoothed_loss": test.smoothed[lowest],
        "steps": len(test.lrs),
        "stopped_early": test.stopped_early,
        "min_lr": settings.range_min_lr,
        "max_lr": settings.range_max_lr,
        "data": data.source,
        "jpeg_copy": data.image_format == "jpeg",
        "backend": keras.backend.backend(),
    }
    write_json_atomic(out_dir / "range_test.json", summary)
    plot_range_test(test, suggested, lowest, out_dir / "lr_range_test.png", describe_run(config, data))

    end = f"stopped at step {len(test.lrs)}, LR {test.lrs[-1]:.3g}: the smoothed loss passed {settings.range_stop_factor:g}x its lowest" if test.stopped_early else f"all {len(test.lrs)} steps, up to LR {test.lrs[-1]:.3g}"
    print(f"range test: {end}")
    print(f"lowest smoothed loss {test.smoothed[lowest]:.4f} at LR {test.lrs[lowest]:.3g} (a tenth of it: {test.lrs[lowest] / 10:.3g})")
    print(f"suggested max LR: {suggested:.3g} (steepest descent of the smoothed loss against log LR); "
          f"e.g. --lrs {suggested / 2:.2g},{suggested:.2g},{suggested * 2:.2g}")
    print(f"results: {out_dir}/range_test.csv, {out_dir}/range_test.json, {out_dir}/lr_range_test.png")
    return 0


def suggest_lr(lrs, smoothed):
    """The LR where the smoothed loss falls fastest against log10(LR), looked
    for before the lowest smoothed loss (past it the loss rises, and what falls
    there is noise; at it the slope is one-sided)."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    lowest = int(np.argmin(np.where(np.isfinite(smoothed), smoothed, np.inf)))
    if lowest < 2:
        return float(lrs[0])  # the loss never fell: lower range_min_lr
    slopes = np.gradient(smoothed[: lowest + 1], np.log10(lrs[: lowest + 1]))[:lowest]
    return float(lrs[int(np.argmin(slopes))])


def plot_range_test(test, suggested, lowest, path, title):
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(test.lrs, test.losses, color="0.7", linewidth=1, label="loss per batch")
    ax.plot(test.lrs, test.smoothed, color="C0", linewidth=2, label="smoothed")
    ax.axvline(suggested, color="C2", linestyle="--", label=f"suggested max LR {suggested:.3g} (steepest descent)")
    ax.axvline(test.lrs[lowest] / 10, color="C1", linestyle=":", label=f"lowest loss / 10: {test.lrs[lowest] / 10:.3g}")
    finite = [s for s in test.smoothed if math.isfinite(s)]
    ax.set_ylim(0.9 * min(finite), 1.05 * min(max(finite), test.stop_factor * min(finite)))
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def describe_run(config, data):
    return f"LR range test: {config.model} width {config.width:g}, batch {config.batch_size}, {config.optimizer}\n{studies.dataset_label(data, config.subset)}"


# --- Sweep --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (schedule, params) cell of the grid; its runs differ only in the seed."""

    schedule: str
    lr: float
    step_size: int | None = None
    scale_fn: str | None = None

    @property
    def name(self):
        return f"{self.schedule}-lr{self.lr:g}" + (f"-ss{self.step_size}" if self.step_size else "")

    @property
    def params(self):
        params = f"lr={self.lr:g}" + (f" step_size={self.step_size}" if self.step_size else "")
        return params + (f" scale_fn={self.scale_fn}" if self.scale_fn else "")

    @property
    def label(self):
        return f"{self.schedule} {self.params}"


def grid(settings, recipe):
    """The cells: each schedule x each LR (x each step size if cyclic). Raises ValueError for a bad grid."""
    names = studies.parse_list(settings.schedules, str, "schedules", choices=(*SCHEDULES, "custom"))
    if settings.scale_fn and "custom" not in names:
        names.append("custom")
    if "custom" in names and not settings.scale_fn:
        raise ValueError('--schedules: "custom" needs --scale-fn, e.g. --scale-fn "0.5*(1+sin(x*pi/2.5))"')
    if settings.scale_fn:
        try:
            schedules.scale_fn_from_expression(settings.scale_fn)
        except ValueError as e:
            raise ValueError(f"--scale-fn: {e}") from None
    lrs = studies.parse_list(settings.lrs, float, "lrs", above=0)
    step_sizes = studies.parse_list(settings.step_sizes, int, "step_sizes", above=0, allow_empty=True) or [None]
    cells = [
        Cell(name, lr, step_size if name in CYCLIC else None, settings.scale_fn if name == "custom" else None)
        for name in names
        for lr in lrs
        for step_size in (step_sizes if name in CYCLIC else [None])
    ]
    for cell in cells:  # the recipe's own checks (milestones, LRs), before any data is loaded
        build_schedule(run_config(recipe, cell, 0), steps_per_epoch=1)
    return cells


def sweep_plan(settings, recipe):
    """[(cell, seed)]: every cell of the grid once per seed. Raises ValueError (one line)."""
    return [(cell, seed) for cell in grid(settings, recipe) for seed in studies.parse_seeds(settings.seeds)]


def runs_of(recipe, plan):
    """[(run name, Config)] of the (cell, seed)s of `plan`: <cell>-seed<S> (then
    -subset<N> if any, so whole-set and part-set runs can share a folder)."""
    return [(f"{cell.name}-seed{seed}{studies.subset_suffix(recipe.subset)}", run_config(recipe, cell, seed)) for cell, seed in plan]


def planned_runs(settings, recipe):
    """[(run name, Config)]: what the sweep trains, in order. Raises ValueError (one line)."""
    return runs_of(recipe, sweep_plan(settings, recipe))


def run_config(recipe, cell, seed):
    """A run's `Config`: the recipe with the cell's schedule and peak learning rate."""
    return dataclasses.replace(
        recipe,
        lr=cell.lr,
        schedule="triangular" if cell.schedule == "custom" else cell.schedule,
        scale_fn=cell.scale_fn,
        step_size=cell.step_size,
        milestones=recipe.milestones or f"{recipe.epochs / 2:g},{recipe.epochs * 3 / 4:g}",
        seed=seed,
    )


def sweep(settings, recipe, plan, runs, data, study_dir, dry_run=False):
    """Plots the grid's schedules, trains `runs` (run i is `plan[i]`, a (cell, seed)) and writes the table."""
    if settings.scale_fn and "custom" not in studies.parse_list(settings.schedules, str, "schedules"):
        print('note: --scale-fn adds the "custom" schedule to the grid')
    cells = list(dict.fromkeys(cell for cell, _ in plan))
    steps_per_epoch = studies.train_images(data, recipe.subset) // recipe.batch_size
    schedules.plot_schedules(
        {cell.label: build_schedule(run_config(recipe, cell, 0), steps_per_epoch) for cell in cells},
        recipe.epochs * steps_per_epoch,
        study_dir / "lr_schedules.png",
    )
    if dry_run:
        print("\n".join(f"would train {name}" for name, _ in runs) + f"\nschedules: {study_dir}/lr_schedules.png")
        return
    results = study_runs.run_study(runs, data, study_dir)
    rows = table_rows(cells, [cell for cell, _ in plan], results)
    print(studies.target_line(recipe.target, data))
    print(study_runs.write_table(rows, COLUMNS, study_dir / "table.csv"))
    print(
        f"final_acc: test accuracy after the last epoch; s_to_target: training seconds (evaluation and the "
        f"first, compiling step excluded) to test accuracy {studies.resolved_target(recipe.target, data):g}, "
        "over the seeds that reached it"
    )
    print(f"results: {study_dir}/table.csv, {study_dir}/lr_schedules.png, {study_dir}/runs/")


COLUMNS = ["schedule", "params", "n_seeds", "final_acc_mean", "final_acc_std", "s_to_target_mean", "s_to_target_std", "reached_target", "diverged"]


def table_rows(cells, run_cells, results):
    """One row per cell; `run_cells[i]` is the cell of `results[i]`."""
    rows = []
    for cell in cells:
        cell_results = [r for run_cell, r in zip(run_cells, results) if run_cell == cell]
        accuracy = study_runs.mean_std([r.get("final_accuracy") for r in cell_results])
        seconds = study_runs.mean_std([r.get("seconds_to_target") for r in cell_results])
        rows.append({
            "schedule": cell.schedule,
            "params": cell.params,
            "n_seeds": len(cell_results),
            "final_acc_mean": accuracy[0],
            "final_acc_std": accuracy[1],
            "s_to_target_mean": seconds[0],
            "s_to_target_std": seconds[1],
            "reached_target": sum(r.get("seconds_to_target") is not None for r in cell_results),
            "diverged": sum(r.get("status") == "diverged" for r in cell_results),
        })
    return rows


# --- Command line -------------------------------------------------------------------

FLAG_HELP = {
    "schedules": "comma-separated schedules of the grid: piecewise, step, triangular, triangular2, exp_range, onecycle, custom",
    "lrs": "comma-separated peak learning rates of the grid",
    "step_sizes": "comma-separated cyclic half-cycles in iterations ('' = 2 epochs)",
    "scale_fn": "adds the 'custom' schedule: triangular cycles scaled by this function of the cycle number x",
    "seeds": "random seeds, e.g. 0,1,2 (every cell once per seed)",
    "range_min_lr": "range test: first learning rate",
    "range_max_lr": "range test: last learning rate",
    "range_steps": "range test: batches from the first to the last learning rate",
    "range_smoothing": "range test: exponential moving average factor of the loss",
    "range_stop_factor": "range test: stop when the smoothed loss exceeds this x its lowest",
}


RESULTS_DIR = "runs/lr_schedules"  # --smoke: runs/lr_schedules-smoke, so a smoke test never blocks the real study


def build_parser():
    parser = studies.study_parser(
        "python -m experiments.lr_schedules", __doc__, RESULTS_DIR, Settings, FLAG_HELP, smoke_class=SmokeSettings
    )
    studies.add_recipe_arguments(parser, RECIPE)
    parser.add_argument("--range-test", action="store_true", help="run the LR range test instead of the sweep (into <results-dir>/range-test)")
    parser.add_argument("--dry-run", action="store_true", help="sweep: list the runs and plot the schedules, train nothing")
    return parser


def check_settings(settings):
    """Raises ValueError (one line) for settings no run could use, from flags or a config file."""
    s = settings
    studies.parse_seeds(s.seeds)
    studies.parse_list(s.lrs, float, "lrs", above=0)
    studies.parse_list(s.step_sizes, int, "step_sizes", above=0, allow_empty=True)
    problems = [
        (not 0 < s.range_min_lr < s.range_max_lr, f"--range-min-lr must be > 0 and below --range-max-lr, got {s.range_min_lr:g} and {s.range_max_lr:g}"),
        (s.range_steps < 2, f"--range-steps must be at least 2, got {s.range_steps}"),
        (not 0 <= s.range_smoothing < 1, f"--range-smoothing must be in [0, 1), got {s.range_smoothing}"),
        (s.range_stop_factor <= 1, f"--range-stop-factor must be > 1, got {s.range_stop_factor}"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)


if __name__ == "__main__":
    sys.exit(main())
