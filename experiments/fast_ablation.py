"""The fast preset, with each of its ingredients removed: what each one is worth.

    python -m experiments.fast_ablation --data-dir DIR                 # seeds 0..9 for every configuration
    python -m experiments.fast_ablation --only muon,tta --seeds 0,1,2,3,4
    python -m experiments.fast_ablation --only ''                      # the preset alone: its n, mean, std, time
    python -m experiments.fast_ablation --subset 10000                 # the first 10,000 training images
    python -m experiments.fast_ablation --smoke                        # seconds on a CPU, synthetic data

The baseline is `python -m experiments.davidnet --preset fast`
(experiments/recipes/fast.toml: airbench94_muon's recipe in Keras). Each other
configuration removes one ingredient (or, for lookahead, which the preset
leaves out as airbench94_muon does, adds it), trained with the same budget:

- whitening: the first conv trained from PyTorch's default initialisation
  instead of the frozen patch-whitening kernel;
- dirac: 3x3 convs from PyTorch's default initialisation, without the identity;
- gelu: ReLU instead of GELU;
- frozen-bn-scale: batch norms with a trainable scale;
- alternating-flip: random flips instead of the derandomised ones;
- translate: no 2-px random translation;
- muon: airbench94's SGD for everything instead (lr 1.5, biases at 64x,
  coupled decay 1.3305e-3, the head and the whitening bias on the main schedule);
- head-lr: the head at the biases' learning rate instead of its own;
- whiten-bias-epochs: the whitening bias trained for all epochs, not frozen after 3;
- label-smoothing: none;
- tta: the final evaluation without test-time augmentation;
- lookahead: added, every 5 steps with airbench94's alpha schedule.

Every configuration runs once per seed of --seeds (default 0,1,...,9). The
table gives, the way airbench states its results, n, the mean and std of the
final test accuracy (with TTA where the configuration has it) and the median,
min and max of the time: training plus the final evaluation, compilation
excluded, as airbench counts it. Outputs in --results-dir (default
runs/fast-ablation, runs/fast-ablation-smoke for --smoke): table.csv,
config.json and runs/<name>-seed<S>/. A rerun skips finished runs.
"""

import dataclasses
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

from davidnet.config import Config  # noqa: E402  (after the env var; no Keras)
from davidnet.config_files import load_config  # noqa: E402
from davidnet.studies import (  # noqa: E402
    StudyRecipe,
    add_recipe_arguments,
    fail,
    parse_list,
    parse_seeds,
    prepare_study_dir,
    resolve_study,
    study_data,
    study_parser,
    subset_suffix,
)
from davidnet.study_runs import check_reusable, mean_std, run_study, write_table  # noqa: E402
from experiments.davidnet import PRESETS  # noqa: E402


def preset():
    """The fast preset's Config (experiments/recipes/fast.toml)."""
    return Config(**load_config(PRESETS["fast"], Config))


# The baseline: the fast preset, quiet (each epoch prints its own line anyway).
RECIPE = StudyRecipe(
    dataclasses.replace(preset(), verbose=0),
    flags=("epochs", "width", "batch_size", "subset", "verbose"),
    smoke=dict(epochs=1, width=0.0625, batch_size=64),
)

# Each ingredient and the change that removes it from the preset.
INGREDIENTS = {
    "whitening": dict(whiten=False),
    "dirac": dict(dirac=False),
    "gelu": dict(activation="relu"),
    "frozen-bn-scale": dict(frozen_bn_scale=False),
    "alternating-flip": dict(alternating_flip=False, flip=True),
    "translate": dict(crop_padding=0),
    # airbench94's optimizer (its hyperparameters converted to a mean loss, davidnet/optimizers.py):
    # SGD at airbench94's rate, for the filters too.
    "muon": dict(optimizer="sgd", lr=1.5, bias_lr_scale=64.0, head_lr=None, weight_decay=1.3305e-3, whiten_bias_epochs=0.0),
    "head-lr": dict(head_lr=None),
    "whiten-bias-epochs": dict(whiten_bias_epochs=0.0),
    "label-smoothing": dict(label_smoothing=0.0),
    "tta": dict(tta=0),
    "lookahead": dict(lookahead=5),  # an addition: the preset has none
}


@dataclasses.dataclass
class Settings:
    """What the study varies: the ingredients removed, and the seeds."""

    only: str = ",".join(INGREDIENTS)  # ingredients to ablate
    seeds: str = ",".join(map(str, range(10)))  # every configuration once per seed

    def __post_init__(self):
        parse_seeds(self.seeds)
        names(self.only)


@dataclasses.dataclass
class SmokeSettings(Settings):
    """--smoke: tiny, on synthetic data (flags and --config still win)."""

    only: str = "muon,tta"
    seeds: str = "0"


SMOKE_SIZES = (256, 100)
HELP = {
    "only": f"ingredients to ablate, from {','.join(INGREDIENTS)} ('': the preset alone; default: all)",
    "seeds": "random seeds, e.g. 0,1,2 (each configuration once per seed)",
}


def names(text):
    """'muon,tta' -> ['muon', 'tta']; '' (--only '') -> []: the preset alone. Raises ValueError (one line)."""
    return parse_list(text, str, "only", choices=tuple(INGREDIENTS), allow_empty=True)


def configurations(settings, recipe):
    """[(name, Config)]: the preset (`recipe`), then one per ingredient, without it."""
    base = recipe
    configs = [("preset", base)]
    for name in names(settings.only):
        sign = "+" if name == "lookahead" else "-"
        configs.append((f"{sign}{name}", dataclasses.replace(base, **INGREDIENTS[name])))
    return configs


def runs_of(configs, seeds):
    """[(run name, Config)]: each configuration once per seed, <name>-seed<S> (then
    -subset<N> if any, so whole-set and part-set runs can share a folder)."""
    return [
        (f"{name}-seed{seed}{subset_suffix(config.subset)}", dataclasses.replace(config, seed=seed))
        for name, config in configs
        for seed in seeds
    ]


def planned_runs(settings, recipe):
    """[(run name, Config)]: what the study trains, in order. Raises ValueError (one line)."""
    return runs_of(configurations(settings, recipe), parse_seeds(settings.seeds))


def accuracy_and_time(results):
    """The accuracy airbench reports (with TTA where there is TTA) and its
    time: training plus that final evaluation, compilation excluded."""
    if results.get("tta_accuracy") is not None:
        return results["tta_accuracy"], results["train_s"] + results["tta_s"]
    last_eval = results["history"][-1]["eval_s"] if results["history"] else 0.0
    return results["final_accuracy"], results["train_s"] + last_eval


def table_rows(configs, results, seeds):
    """One row per configuration; `results` are `runs_of(configs, seeds)`'s, in order."""
    rows = []
    for index, (name, _) in enumerate(configs):
        mine = results[index * len(seeds) : (index + 1) * len(seeds)]
        done = [accuracy_and_time(r) for r in mine if r["status"] == "completed"]
        accuracies, times = [a for a, _ in done if a is not None], [t for _, t in done]
        mean, std = mean_std(accuracies)
        rows.append({
            "configuration": name,
            "n": len(accuracies),
            "mean_accuracy": mean,
            "std_accuracy": std,
            "median_time_s": statistics.median(times) if times else None,
            "min_time_s": min(times, default=None),
            "max_time_s": max(times, default=None),
            "not_completed": len(mine) - len(done),
        })
    return rows


COLUMNS = ["configuration", "n", "mean_accuracy", "std_accuracy", "median_time_s", "min_time_s", "max_time_s", "not_completed"]
RESULTS_DIR = "runs/fast-ablation"


def build_parser():
    parser = study_parser("python -m experiments.fast_ablation", __doc__, RESULTS_DIR, Settings, HELP, smoke_class=SmokeSettings)
    add_recipe_arguments(parser, RECIPE)
    return parser


def main(argv=None):
    parser = build_parser()
    args, settings, recipe = resolve_study(parser, argv, Settings, SmokeSettings, RESULTS_DIR, RECIPE)
    seeds = parse_seeds(settings.seeds)
    try:
        configs = configurations(settings, recipe)
    except ValueError as e:
        fail(e)
    data = study_data(args, recipe, SMOKE_SIZES)
    runs = runs_of(configs, seeds)
    try:
        check_reusable(runs, args.results_dir, data)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_dir = prepare_study_dir(args.results_dir, settings, RECIPE.values(recipe))
    results = run_study(runs, data, study_dir)
    print(write_table(table_rows(configs, results, seeds), COLUMNS, study_dir / "table.csv"))
    print(f"results: {study_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
