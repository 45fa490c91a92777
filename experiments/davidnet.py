"""Train DavidNet (ResNet-9) on CIFAR-10 and report its seconds to the target accuracy.

    python -m experiments.davidnet --epochs 20
    python -m experiments.davidnet --epochs 2 --subset 2000 --width 0.25 --data-dir DIR
    python -m experiments.davidnet --preset fast --data-dir DIR     # airbench94_muon's recipe in Keras

The recipe (the defaults) is David Page's DAWNBench entry (cifar10-fast
`dawn.py`): batch 512, SGD with Nesterov momentum 0.9 and coupled weight decay
5e-4, learning rate 0 -> 0.4 -> 0 piecewise linear with the peak at epoch 5,
random 4-px crop with reflect padding, flip, 8x8 cutout; docs/fidelity.md
compares it with the reference detail by detail. `python -m experiments.davidnet --help` lists the flags.
"""

import argparse
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

from davidnet.studies import check_batch_size, print_data, resolve_settings  # noqa: E402  (after the env var)
from davidnet import cli, config  # noqa: E402  (no Keras: flags and data are checked before the backend loads)
from davidnet.config import Config  # noqa: E402

PRESETS = {path.stem: path for path in (Path(__file__).parent / "recipes").glob("*.toml")}


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m experiments.davidnet",
        description=__doc__.split("\n\n")[0],
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data-dir", help="CIFAR-10 folder: cifar-10-batches-py, or an image folder with train/ and test/ (default: $CIFAR10_DIR, the Keras cache, then tensorflow-datasets)")
    data.add_argument("--results-dir", help="folder for results.json, history.csv, dawnbench.tsv/json, plots, model.keras (default: runs/davidnet-<time>)")
    data.add_argument("--preset", choices=sorted(PRESETS), help="a recipe of experiments/recipes/ as the base: fast (airbench94_muon's recipe in Keras), resnet9_adam_onecycle; --config and flags override it (default: none)")
    data.add_argument("--config", help="recipe settings from a TOML, JSON or YAML file; flags given on the command line win (default: none)")
    data.add_argument("--resume", action="store_true", help="continue the interrupted run in --results-dir from its last epoch, with its saved settings and data; flags given again must equal them (default: off)")
    data.add_argument("--overwrite", action="store_true", help="start afresh in a --results-dir that holds another run, replacing its files (default: off: such a folder is refused)")
    data.add_argument("--no-verify", action="store_true", help="load pickle batches whose md5 is not the official one (default: off)")
    data.add_argument("--resize", action="store_true", help="resize images that are not 32x32 (default: off)")
    data.add_argument("--compile-cache", default=os.path.expanduser("~/.cache/davidnet/jax"), help="JAX persistent compilation cache folder, '' to turn it off (default: ~/.cache/davidnet/jax)")
    recipe = parser.add_argument_group("recipe (defaults: DavidNet's DAWNBench entry)")
    # One flag per setting of davidnet.config.Config, its help, choices and checks from the setting's definition.
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{config.help_text(field.name)} (default: {config.default_text(field.name)})".replace("%", "%%")
        # Defaults stay None here so that a config file can fill what the flags leave out.
        if field.type is bool:
            recipe.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = _scalar_type(field.type)
        recipe.add_argument(flag, type=_checked(kind, field.name), default=None, choices=field.metadata["choices"], help=help_text)
    return parser


def _scalar_type(annotation):
    """`float | None` -> float; `int` -> int."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _checked(kind, name):
    """An argparse type for the setting `name`: its kind, then its own checks (`davidnet.config.problem`)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {config.shown(text)}") from None
        why = config.problem(name, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    parse.__name__ = kind.__name__
    return parse


def flag_table(parser=None):
    """The README's table of this command's flags, from the parser (and so from
    the settings' definitions): a test keeps README.md equal to it."""
    parser = parser or build_parser()
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for action in parser._actions:  # argparse keeps no public list of its actions
        if not action.option_strings or action.dest == "help":
            continue
        flags = " / ".join(f"`{flag}`" for flag in action.option_strings)
        text = (action.help or "").replace("%%", "%")
        default = "none"
        if text.endswith(")") and "(default: " in text:
            text, default = text.rsplit(" (default: ", 1)
            default = default[:-1]
        rows.append(f"| {flags} | {default} | {text.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = build_parser()
    args, config = resolve_settings(parser, argv, Config, PRESETS)

    from davidnet import run_folder
    from pipelines.cifar10 import DataError, load_cifar10

    results_dir = args.results_dir or time.strftime("runs/davidnet-%Y%m%d-%H%M%S")
    try:
        # The folder, then the data, before Keras and its backend load
        # (seconds): a run that cannot start fails at once, and leaves no
        # empty run folder.
        if args.resume:
            config, data_dir = _resumed(parser, args, config)
        else:
            run_folder.check_fresh(results_dir, args.overwrite)
            data_dir = args.data_dir
        data = load_cifar10(data_dir, verify=not args.no_verify, resize=args.resize)
        check_batch_size(config.batch_size, data, config.subset)
        from davidnet.hardware import use_compilation_cache
        from davidnet.results import summary_line
        from davidnet.training import train

        use_compilation_cache(args.compile_cache)
    except (DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_data(data, config.subset)

    from davidnet import interrupts

    try:
        results = train(config, data, results_dir, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, MemoryError, OSError) as e:  # the run's own errors, one line each (see train)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training began: nothing was saved", file=sys.stderr)
        return interrupts.exit_code()
    print(summary_line(results))
    print(f"results: {results_dir}")
    if results["status"] == "interrupted":
        return interrupts.exit_code()
    return {"completed": 0, "diverged": 1}[results["status"]]


def _resumed(parser, args, resolved):
    """--resume: (the run's saved settings, its data folder). Flags, --preset
    and --config may be given again (the same command with --resume added);
    a setting that differs from the saved one is refused, naming each."""
    from davidnet import run_folder

    if not args.results_dir:
        parser.error("--resume needs --results-dir, the folder of the run to continue")
    state = run_folder.read_state(args.results_dir)
    saved = run_folder.saved_config(state, Config)
    given = _given_settings(args, resolved)
    changed = run_folder.changed_settings(saved, dataclasses.replace(saved, **given), names=given)
    if changed:
        raise run_folder.ResumeError(
            f"cannot resume {args.results_dir} with other settings: {'; '.join(changed)} "
            "(resume with the run's own settings, or start a new run in another --results-dir)"
        )
    where = (state["results"].get("data") or {}).get("location")
    if args.data_dir and where and str(Path(os.path.expanduser(args.data_dir)).resolve()) != where:
        raise run_folder.ResumeError(
            f"--data-dir {args.data_dir}: the run being resumed trained on {where}; drop --data-dir to resume on it"
        )
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in run_folder.MAY_CHANGE_ON_RESUME}), args.data_dir or where


def _given_settings(args, resolved):
    """The settings this command line sets itself (flags, --preset, --config),
    name -> value as resolved (`resolved`, a Config)."""
    from davidnet.config_files import load_config

    named = {f.name for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    for path in ([PRESETS[args.preset]] if args.preset else []) + ([args.config] if args.config else []):
        named |= set(load_config(path, Config))  # already read without error by resolve_settings
    return {name: getattr(resolved, name) for name in named}


if __name__ == "__main__":
    sys.exit(main())
