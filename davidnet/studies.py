"""What every study shares before it trains: its command line, its recipe,
its data and the checks and lines every study prints.

A study is a list of named runs (a `Config` each), made from its recipe: a
`StudyRecipe`, the `Config` every run starts from, of which the command line
and --config files may change the settings the study names (flags derived from
`Config`'s own definitions: help, choices, checks). The study's own settings
dataclass holds only what it varies (the seeds, the values compared).
`davidnet.study_runs` then trains the runs and writes the table.
"""

import argparse
import dataclasses
import os
import sys
import typing

from davidnet import config as settings_definitions
from davidnet import cli
from davidnet.config import Config
from davidnet.config_files import ConfigError, checked_values, load_config
from davidnet.results import check_writable, write_json_atomic


def study_parser(prog, doc, default_results_dir, settings_class, help_texts, choices=None, smoke_class=None,
                 data=True, results_help=None, smoke_help=None):
    """A study's command line: its docstring's first paragraph as the
    description, the common flags, and one flag per field of `settings_class`,
    each help ending in "(default: X; --smoke: Y)" (Y where `smoke_class`'s differs).

    Args:
        choices: field name -> allowed values, where there are few (verbose: 0, 1, 2 unless given).
        data: whether the study reads CIFAR-10 (--data-dir, --no-verify, --compile-cache).
        results_help, smoke_help: --results-dir's and --smoke's help, where a study's
            differ ("(default: D; --smoke: D-smoke)" is appended to --results-dir's
            where `default_results_dir` is given).
    """
    parser = cli.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    add_common_arguments(parser, default_results_dir, data=data, results_help=results_help, smoke_help=smoke_help)
    add_settings_arguments(parser, settings_class, help_texts, choices={"verbose": (0, 1, 2), **(choices or {})}, smoke_class=smoke_class)
    return parser


def smoke_dir(default_results_dir):
    """Where --smoke writes when --results-dir is not given: `<default>-smoke`,
    so a smoke test never blocks (or mixes with) the real study."""
    return f"{default_results_dir}-smoke"


def resolve_study_settings(parser, argv, settings_class, smoke_class, default_results_dir):
    """`resolve_settings` with --smoke: the smoke dataclass's defaults, and the
    results in `smoke_dir(default)` unless --results-dir says otherwise, so a smoke
    test never blocks the real study. Returns (args, settings)."""
    smoke = parser.parse_args(argv).smoke
    args, settings = resolve_settings(parser, argv, smoke_class if smoke else settings_class)
    if smoke and args.results_dir == default_results_dir:
        args.results_dir = smoke_dir(default_results_dir)
    return args, settings


@dataclasses.dataclass(frozen=True)
class StudyRecipe:
    """A study's recipe: the `Config` every run starts from, the settings of it
    that the command line and --config files may change, and --smoke's changes.

    Args:
        config: the base `Config`; its values are the flags' defaults.
        flags: the names of the settings given a flag (--batch-size for
            batch_size), with `Config`'s help, choices and checks.
        smoke: name -> value, --smoke's changes (--config and flags still win).
        shown: name -> how a default reads in --help where the value would not
            say it (e.g. milestones "" for "half and three quarters of the run").

    Example:
    ```python
    RECIPE = StudyRecipe(Config(model="resnet44", epochs=164), flags=("epochs",), smoke=dict(epochs=2))
    ```
    """

    config: Config
    flags: tuple
    smoke: dict = dataclasses.field(default_factory=dict)
    shown: dict = dataclasses.field(default_factory=dict)

    def values(self, config):
        """name -> value of `config`'s settings that have a flag (what config.json records of the recipe)."""
        return {name: getattr(config, name) for name in self.flags}


def add_recipe_arguments(parser, recipe):
    """One flag per setting of `recipe.flags` (--batch-size for batch_size), its
    help and choices from `Config`'s definition, "(default: X; --smoke: Y)" from
    the study's recipe. No flag has a default: an absent flag leaves the value
    to --smoke, --config or the recipe (`resolve_study`)."""
    group = parser.add_argument_group("recipe (defaults: the study's recipe, a Config; --config files and flags override)")
    hints = typing.get_type_hints(Config)
    for name in recipe.flags:
        default = _recipe_text(name, getattr(recipe.config, name), recipe.shown)
        smoke = f"; --smoke: {_recipe_text(name, recipe.smoke[name], {})}" if name in recipe.smoke else ""
        text = f"{settings_definitions.help_text(name)} (default: {default}{smoke})"
        options = dict(default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        flag = "--" + name.replace("_", "-")
        if hints[name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            kind = next((a for a in typing.get_args(hints[name]) if a is not type(None)), hints[name])
            group.add_argument(flag, type=kind, choices=settings_definitions.FIELDS[name].metadata["choices"], **options)
    return group


def _recipe_text(name, value, shown):
    """How a recipe setting's value reads in --help: as `Config`'s README table writes it."""
    if name in shown:
        return shown[name]
    if value == settings_definitions.DEFAULTS[name]:
        return settings_definitions.default_text(name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "":
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_config(base, values):
    """`base` (a Config) with `values` (name -> value) changed: each value
    checked by its setting's own definition (the error names its flag), then
    `Config`'s checks between settings. Raises ValueError (one line)."""
    for name, value in values.items():
        why = settings_definitions.problem(name, value)
        if why:
            raise ValueError(f"--{name.replace('_', '-')} {why}. Got: {settings_definitions.shown(value)}")
    return dataclasses.replace(base, **values)


def resolve_study(parser, argv, settings_class, smoke_class, default_results_dir, recipe):
    """A study's command line resolved: (args, settings, config).

    `settings` (a `settings_class`, or `smoke_class` with --smoke) and `config`
    (the recipe's `Config`) take their values from, in rising order, the
    dataclass's defaults or the recipe (with --smoke's changes), the --config
    file, then the flags given; --smoke's results go to `smoke_dir(default)`
    unless --results-dir says otherwise. A bad value exits 2 with one line."""
    args = parser.parse_args(argv)
    settings_values, recipe_values = {}, dict(recipe.smoke) if args.smoke else {}
    if args.config:
        try:
            values = load_config(args.config, settings_class, extra_keys=recipe.flags)
            given = {name: values.pop(name) for name in recipe.flags if name in values}
            recipe_values.update(checked_values(given, Config, source=args.config))
        except ConfigError as e:
            parser.exit(2, f"error: {e}\n")
        settings_values.update(values)
    for field in dataclasses.fields(settings_class):
        if hasattr(args, field.name):
            settings_values[field.name] = getattr(args, field.name)
    recipe_values.update({name: getattr(args, name) for name in recipe.flags if hasattr(args, name)})
    try:
        settings = (smoke_class if args.smoke else settings_class)(**settings_values)
        config = recipe_config(recipe.config, recipe_values)
    except (TypeError, ValueError) as e:  # the settings' own checks, then the recipe's (Config's)
        parser.exit(2, f"error: {e}\n")
    if args.smoke and args.results_dir == default_results_dir:
        args.results_dir = smoke_dir(default_results_dir)
    return args, settings, config


def add_common_arguments(parser, default_results_dir, data=True, results_help=None, smoke_help=None):
    """--data-dir, --results-dir, --config, --smoke, --no-verify, --compile-cache
    (without `data`: --results-dir, --config and --smoke only)."""
    if data:
        parser.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, the Keras cache, then tensorflow-datasets)")
    where = f" (default: {default_results_dir}; --smoke: {smoke_dir(default_results_dir)})" if default_results_dir else ""
    results_help = (results_help or "the study's folder: tables, plots, one folder per run") + where
    parser.add_argument("--results-dir", default=default_results_dir, help=results_help)
    parser.add_argument("--config", help="settings from a TOML, JSON or YAML file (flags given on the command line win)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help or "a tiny CPU version on synthetic data, in seconds")
    if data:
        parser.add_argument("--no-verify", action="store_true", help="load pickle batches whose md5 is not the official one")
        cache = os.path.expanduser("~/.cache/davidnet/jax")
        parser.add_argument("--compile-cache", default=cache, help=f"JAX compilation cache folder ('' to turn off; default: {cache})")


def add_settings_arguments(parser, settings_class, help_texts, choices=None, smoke_class=None):
    """One flag per field of `settings_class` (--max-lr for max_lr), for
    `resolve_settings`: no flag has a default, so an absent flag leaves the
    value to --config or to the dataclass.

    Args:
        help_texts: field name -> help text. "(default: X)" is appended unless
            the text says its default itself, then "; --smoke: Y" where
            `smoke_class`'s default differs.
        choices: field name -> allowed values, where there are few.
        smoke_class: the --smoke settings dataclass, if any.
    """
    group = parser.add_argument_group("settings (defaults: the Settings dataclass; --config files and flags override)")
    hints = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        options = dict(default=argparse.SUPPRESS, help=_settings_help(field, help_texts[field.name], smoke_class).replace("%", "%%"))
        flag = "--" + field.name.replace("_", "-")
        if hints[field.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            kind = next((a for a in typing.get_args(hints[field.name]) if a is not type(None)), hints[field.name])
            group.add_argument(flag, type=kind, choices=(choices or {}).get(field.name), **options)
    return group


def _settings_help(field, text, smoke_class):
    """The help text ending in "(default: X; --smoke: Y)", the same way in every
    study; a text that says its default itself ends in "(...default...)"."""
    smoke = getattr(smoke_class, field.name, field.default) if smoke_class else field.default
    smoke = f"--smoke: {_shown(smoke)}" if smoke != field.default else None
    if "default" not in text:
        return text + f" (default: {_shown(field.default)}" + (f"; {smoke})" if smoke else ")")
    if smoke:
        return text[:-1] + f"; {smoke})" if text.endswith(")") else text + f" ({smoke})"
    return text


def _shown(value):
    if value is None:
        return "none"
    if value == "":
        return "''"
    return str(value)


def dataset_label(data, subset=None):
    """What a plot's title says of the data: never JPEG or synthetic data as CIFAR-10,
    and "first N training images" when a run trains on fewer than all."""
    label = {
        "synthetic": "synthetic smoke data, not CIFAR-10",
        "jpeg": "CIFAR-10 JPEG copy (about 3 points harder than CIFAR-10)",
    }.get(data.image_format, "CIFAR-10")
    images = train_images(data, subset)
    return label + (f", first {images} training images" if images < len(data.x_train) else "")


# ---------------------------------------------------------------- what every study checks and says


def parse_list(text, kind, name, *, at_least=None, above=None, choices=None, allow_empty=False):
    """The studies' comma lists: '0, 1,2' -> [0, 1, 2], in the given order.

    Args:
        text: the setting's value (a flag's or a config file's string).
        kind: int, float or str.
        name: the setting's name (seeds, m_values): errors name its flag.
        at_least, above: every value must be >= `at_least` and > `above`.
        choices: the allowed values, for names.
        allow_empty: whether '' (no values) is a valid list.

    Returns:
        The values, each once.

    Raises:
        ValueError: one line naming the flag, what was expected and what was given.
    """
    flag = "--" + name.replace("_", "-")
    what = {int: "integers", float: "numbers", str: "names"}[kind]
    if at_least is not None:
        what += f" >= {at_least:g}"
    if above is not None:
        what += f" > {above:g}"
    expected = f"expected a comma list of distinct {what}{'' if allow_empty else ' (at least one)'}"
    try:
        values = [kind(part.strip()) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag}: {expected}, got {text!r}") from None
    bad = [v for v in values if (at_least is not None and v < at_least) or (above is not None and v <= above)]
    if (not values and not allow_empty) or bad or len(set(values)) != len(values):
        raise ValueError(f"{flag}: {expected}, got {text!r}")
    unknown = [v for v in values if choices is not None and v not in choices]
    if unknown:
        raise ValueError(f"{flag}: unknown {unknown[0]!r}, expected some of {', '.join(map(str, choices))}")
    return values


def parse_seeds(text):
    """--seeds, in every study that trains seeds: '0,1,2' -> [0, 1, 2]. Raises ValueError (one line)."""
    return parse_list(text, int, "seeds", at_least=0)


def train_images(data, subset=None):
    """How many images a run trains on: the first `subset` of the training set, or all."""
    return min(subset or len(data.x_train), len(data.x_train))


def check_batch_size(batch_size, data, subset=None):
    """Raises ValueError (one line) where a batch is larger than the training
    images (the first `subset`): an epoch would have no full step."""
    images = train_images(data, subset)
    if batch_size > images:
        more = " or a larger --subset" if images < len(data.x_train) else ""
        raise ValueError(f"--batch-size {batch_size} is larger than the {images} training images: give a smaller --batch-size{more}")


def print_data(data, subset=None):
    """Prints the study's data line and, on the JPEG copy of CIFAR-10, the note
    that its accuracies are not CIFAR-10's (the one place that says it)."""
    print(f"data: {data.source}; {train_images(data, subset)} train / {len(data.x_test)} test images")
    if data.image_format == "jpeg":
        from pipelines.cifar10 import equivalent_target

        print(
            "note: JPEG copy of CIFAR-10: accuracies are about 3 points below real CIFAR-10 "
            f"({equivalent_target('jpeg'):g} here ~ {equivalent_target('pickle'):g} there)"
        )


def resolved_target(target, data):
    """A study's `target` setting as its runs time it: None is the data's
    equivalent of DAWNBench's 94% (`pipelines.cifar10.equivalent_target`: 0.91
    on the JPEG copy, else 0.94), as `davidnet.training` resolves `Config.target`."""
    from pipelines.cifar10 import resolve_target

    return resolve_target(target, data.image_format)[0]


def target_line(target, data):
    """The line a study prints beside its table: which accuracy its runs timed."""
    value = resolved_target(target, data)
    if target is not None:
        return f"target: test accuracy {value:g} (--target)"
    return f"target: test accuracy {value:g}, this data's equivalent of DAWNBench's 94% on CIFAR-10 (--target to change)"


def fail(message):
    """A user error: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def subset_suffix(subset):
    """Run names say the subset, so whole-set and part-set runs can share a folder."""
    return f"-subset{subset}" if subset else ""


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


def study_data(args, config, smoke_sizes=(512, 200)):
    """The study's data (`load_data`), checked against the recipe's batch size
    (`check_batch_size`: exits 2 with one line); prints its data line (`print_data`)."""
    data = load_data(args, smoke_sizes)
    try:
        check_batch_size(config.batch_size, data, config.subset)
    except ValueError as e:
        fail(e)
    print_data(data, config.subset)
    return data


def prepare_study_dir(study_dir, settings, recipe_values=None):
    """Creates the study folder (or exits with one line) and saves the resolved
    settings in config.json, with `recipe_values` (`StudyRecipe.values`): a
    --config file that gives the study again."""
    try:
        study_dir = check_writable(study_dir)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_json_atomic(study_dir / "config.json", {**dataclasses.asdict(settings), **(recipe_values or {})})
    return study_dir
