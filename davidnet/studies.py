"""What every study shares: its command line, its data, running a list of
trainings that survives interruption, and its table.

A study is a list of named runs (a `Config` each). `run_study` trains them one
after another into `study_dir/runs/<name>/`; a run whose results.json says
`completed` or `diverged` is not trained again, so an interrupted study is
rerun with the same command and picks up where it stopped. A diverged run is
recorded as such and the others go on.
"""

import argparse
import csv
import dataclasses
import io
import json
import os
import statistics
import sys
import time
import typing
from pathlib import Path

from davidnet.config_files import ConfigError, load_config
from davidnet.results import check_writable, write_json_atomic, write_text_atomic

FINISHED = ("completed", "diverged")
# Settings that change what a run prints or keeps, not its results.
NOT_RESULTS = ("verbose", "save_model", "checkpoint")


def study_parser(prog, doc, default_results_dir, settings_class, help_texts, choices=None):
    """A study's command line: its docstring's first paragraph as the
    description, the common flags, and one flag per field of `settings_class`."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_common_arguments(parser, default_results_dir)
    add_settings_arguments(parser, settings_class, help_texts, choices=choices or {"verbose": (0, 1, 2)})
    return parser


def resolve_study_settings(parser, argv, settings_class, smoke_class, default_results_dir):
    """`resolve_settings` with --smoke: the smoke dataclass's defaults, and the
    results in `<default>-smoke` unless --results-dir says otherwise, so a smoke
    test never blocks the real study. Returns (args, settings)."""
    smoke = parser.parse_args(argv).smoke
    args, settings = resolve_settings(parser, argv, smoke_class if smoke else settings_class)
    if smoke and args.results_dir == default_results_dir:
        args.results_dir += "-smoke"
    return args, settings


def add_common_arguments(parser, default_results_dir):
    """--data-dir, --results-dir, --config, --smoke, --no-verify, --compile-cache."""
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, the Keras cache, then tensorflow-datasets)")
    parser.add_argument("--results-dir", default=default_results_dir, help="the study's folder: tables, plots, one folder per run")
    parser.add_argument("--config", help="settings from a TOML, JSON or YAML file (flags given on the command line win)")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU version on synthetic data, in seconds")
    parser.add_argument("--no-verify", action="store_true", help="load pickle batches whose md5 is not the official one")
    parser.add_argument("--compile-cache", default=os.path.expanduser("~/.cache/davidnet/jax"), help="JAX compilation cache folder ('' to turn off)")


def add_settings_arguments(parser, settings_class, help_texts, choices=None):
    """One flag per field of `settings_class` (--max-lr for max_lr), for
    `resolve_settings`: no flag has a default, so an absent flag leaves the
    value to --config or to the dataclass.

    Args:
        help_texts: field name -> help text (the default is appended unless
            the text mentions one).
        choices: field name -> allowed values, where there are few.
    """
    group = parser.add_argument_group("recipe (defaults: the Settings dataclass; --config files and flags override)")
    hints = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        text = help_texts[field.name]
        if "default" not in text:
            text += f" (default {field.default})"
        options = dict(default=argparse.SUPPRESS, help=text)
        flag = "--" + field.name.replace("_", "-")
        if hints[field.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            kind = next((a for a in typing.get_args(hints[field.name]) if a is not type(None)), hints[field.name])
            group.add_argument(flag, type=kind, choices=(choices or {}).get(field.name), **options)
    return group


def dataset_label(data, fraction=1.0):
    """What a plot's title says of the data: never JPEG or synthetic data as CIFAR-10."""
    label = {
        "synthetic": "synthetic smoke data, not CIFAR-10",
        "jpeg": "CIFAR-10 JPEG copy (about 3 points harder than CIFAR-10)",
    }.get(data.image_format, "CIFAR-10")
    return label + (f", {fraction:g} of the training set" if fraction < 1 else "")


def resolve_settings(parser, argv, settings_class, presets=None):
    """Parses `argv`; values come from (in rising order) `settings_class`'s
    defaults, the --preset's recipe file (`presets`: name -> path, for a
    parser with a --preset flag), the --config file, then flags given on the
    command line.

    The parser's flags for the settings must be named after the dataclass
    fields (--max-lr for max_lr) and default to None.

    Returns:
        (args, settings): the argparse namespace and a `settings_class` instance.
    """
    args = parser.parse_args(argv)
    values = {}
    files = [presets[args.preset]] if getattr(args, "preset", None) else []
    for path in files + ([args.config] if args.config else []):
        try:
            values.update(load_config(path, settings_class))
        except ConfigError as e:
            parser.exit(2, f"error: {e}\n")
    for field in dataclasses.fields(settings_class):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    try:
        return args, settings_class(**values)
    except (TypeError, ValueError) as e:  # the settings' own checks (__post_init__)
        parser.exit(2, f"error: {e}\n")


def load_data(args, smoke_sizes=(512, 200)):
    """The study's data: synthetic for --smoke (unless --data-dir is given),
    else CIFAR-10 from the usual sources. A data problem exits with one line."""
    from davidnet.hardware import use_compilation_cache
    from pipelines.cifar10 import DataError, load_cifar10, synthetic_cifar10

    use_compilation_cache(args.compile_cache)
    if args.smoke and not args.data_dir:
        return synthetic_cifar10(*smoke_sizes)
    try:
        return load_cifar10(args.data_dir, verify=not args.no_verify)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def prepare_study_dir(study_dir, settings):
    """Creates the study folder (or exits with one line) and saves the resolved settings."""
    try:
        study_dir = check_writable(study_dir)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_json_atomic(study_dir / "config.json", dataclasses.asdict(settings))
    return study_dir


def finished_results(run_dir):
    """The results of a finished run in `run_dir`, or None."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if results.get("status") in FINISHED else None


def check_reusable(runs, study_dir):
    """A finished run is skipped by name: refuse one trained with other settings
    (e.g. other --epochs) rather than report it as this study's. Raises ValueError."""
    for name, config in runs:
        results = finished_results(Path(study_dir) / "runs" / name)
        if results is None:
            continue
        old, new = results.get("config", {}), dataclasses.asdict(config)
        changed = [
            f"{key} {old[key]!r} there, {new[key]!r} now"
            for key in new
            if key in old and key not in NOT_RESULTS and old[key] != new[key]
        ]
        if changed:
            raise ValueError(
                f"{study_dir}/runs/{name} was trained with other settings ({'; '.join(changed)}): use another --results-dir"
            )


def train_in_fresh_session(config, data, run_dir, **kwargs):
    """`train`, after dropping the previous run's models: a study builds many in one process."""
    import keras

    from davidnet.training import train

    keras.backend.clear_session()
    return train(config, data, run_dir, **kwargs)


def run_study(runs, data, study_dir, train_fn=train_in_fresh_session):
    """Trains each (name, Config) of `runs` unless it already finished.

    Args:
        runs: list of (name, Config); names are folder names.
        data: a `Cifar10`.
        study_dir: the study's folder; run i goes to study_dir/runs/<name>.
        train_fn: the training function (default: `train` in a fresh Keras session).

    Returns:
        The results dicts, in the order of `runs`, each with its "name".

    Raises:
        ValueError: a finished run of the same name had other settings.
        KeyboardInterrupt: a run was interrupted (Ctrl-C); the study stops there,
            and the same command continues it.
    """
    check_reusable(runs, study_dir)
    all_results, spent, trained = [], 0.0, 0
    for index, (name, config) in enumerate(runs):
        run_dir = Path(study_dir) / "runs" / name
        results = finished_results(run_dir)
        prefix = f"[{index + 1}/{len(runs)}] {name}"
        if results is not None:
            print(f"{prefix}: already {results['status']}, skipped", flush=True)
        else:
            remaining = len(runs) - index
            eta = f", ETA {_duration(spent / trained * remaining)}" if trained else ""
            print(f"{prefix}: training{eta}", flush=True)
            start = time.perf_counter()
            results = train_fn(config, data, run_dir)
            if results["status"] == "interrupted":
                print(f"{prefix}: interrupted; run the same command again to continue the study", flush=True)
                raise KeyboardInterrupt
            spent += time.perf_counter() - start
            trained += 1
            final = results.get("final_accuracy")
            print(f"{prefix}: {results['status']}, final accuracy {final if final is None else round(final, 4)}", flush=True)
        all_results.append({**results, "name": name})
    return all_results


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def mean_std(values):
    """(mean, std) of the numbers in `values`, ignoring None; std 0 for one value."""
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(rows, columns):
    """A plain-text table of `rows` (dicts) in `columns` order."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_table(rows, columns, csv_path):
    """Writes `rows` as CSV (atomically) and returns the text table."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, buffer.getvalue())
    return format_table(rows, columns)
