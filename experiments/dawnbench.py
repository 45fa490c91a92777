"""Place a run on the CIFAR-10 time-to-94% leaderboard (DAWNBench and the records since).

    python -m experiments.dawnbench runs/davidnet-1/results.json
    python -m experiments.dawnbench runs/seed*/results.json --label "DavidNet, JAX"   # median of n
    python -m experiments.dawnbench --smoke        # a made-up example run, to see the output

Prints the leaderboard with the run inserted at its rank, and writes
dawnbench_comparison.csv and dawnbench.png (log time axis) into --results-dir
(default: the first run's folder; runs/dawnbench-smoke for --smoke). Only a
fair comparison is ranked: real CIFAR-10, target 0.94, reached by every run,
every run finished. A run on the JPEG copy (where 91% is the DavidNet-equivalent
of 94%), on synthetic data, or that diverged, was interrupted or is still
running is shown apart, with the reason, and never ranked. A results.json that
is not a run's (a wrong type, NaN, a negative time, ...) is refused with one
line naming the file and the field (exit code 2).
"""

import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports keras

from davidnet import leaderboard  # noqa: E402  (after the env var)
from davidnet.run_results import path_text  # noqa: E402
from davidnet.results import check_writable, write_json_atomic  # noqa: E402
from davidnet.studies import resolve_settings, smoke_dir, study_parser  # noqa: E402
from davidnet.study_runs import format_table, write_table  # noqa: E402


@dataclasses.dataclass
class Settings:
    label: str = "this run"  # the run's name in the table and the plot
    timing: str = "train"  # which time is compared: train, wall or train+compile (see leaderboard.TIMINGS)
    title: str = ""  # the plot's title ("" for the default)
    plot: bool = True  # draw dawnbench.png

    def __post_init__(self):
        if self.timing not in leaderboard.TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(leaderboard.TIMINGS)}, got {self.timing!r}")
        # Both are printed in the table and drawn: one line each, not a page.
        for name, value, least in (("label", self.label, 1), ("title", self.title, 0)):
            if not (least <= len(value) <= 200 and value.isprintable()):
                raise ValueError(f"--{name} should be one line of at most 200 printable characters"
                                 f"{' (not empty)' if least else ''}, got {ascii(value)[:60]}")


HELP = {
    "label": "the run's name in the table and plot",
    "timing": "which of the run's times is compared (train: compilation and evaluation excluded)",
    "title": "the plot's title (default: '', a title made from the runs)",
    "plot": "draw dawnbench.png",
}
RESULTS_DIR = "runs/dawnbench"  # only with --smoke, as runs/dawnbench-smoke: a real comparison goes beside its first run


def example_results():
    """A made-up results.json for --smoke: real CIFAR-10, 30 s to 94% on one H200. Not a measurement."""
    return {
        "status": "example",
        "note": "made up by experiments.dawnbench --smoke: not a measurement",
        "backend": "jax",
        "platform": "gpu",
        "device": "NVIDIA H200",
        "device_count": 1,
        "versions": {"keras": "3.15.1", "jax": "0.10.2"},
        "target": 0.94,
        "target_epoch": 24,
        "seconds_to_target": 30.0,
        "wall_to_target_s": 41.0,
        "compile_s": 9.0,
        "final_accuracy": 0.9412,
        "data": {"source": "example", "image_format": "pickle", "jpeg_copy": False},
        "history": [],
    }


def build_parser():
    parser = study_parser(
        "python -m experiments.dawnbench", __doc__, None, Settings, HELP, {"timing": tuple(leaderboard.TIMINGS)}, data=False,
        results_help=f"where dawnbench_comparison.csv and dawnbench.png go (default: the first run's folder; --smoke: {smoke_dir(RESULTS_DIR)})",
        smoke_help="without RESULTS_JSON: place a made-up example run (30 s on an H200)",
    )
    parser.add_argument("results", nargs="*", metavar="RESULTS_JSON", help="a run's results.json; several (e.g. seeds) are compared by their median")
    return parser


def main(argv=None):
    parser = build_parser()
    args, settings = resolve_settings(parser, argv, Settings)
    paths = list(args.results)
    results_dir = args.results_dir
    try:
        if not paths:
            if not args.smoke:
                parser.error("pass one or more RESULTS_JSON (or --smoke for a made-up example)")
            results_dir = check_writable(results_dir or smoke_dir(RESULTS_DIR))
            paths = [results_dir / "example_results.json"]
            write_json_atomic(paths[0], example_results())
            if settings.label == Settings.label:
                settings.label = "example run (made up, not measured)"
        run = leaderboard.place_runs(paths, settings.label, settings.timing)
        results_dir = check_writable(results_dir or Path(paths[0]).parent)
        entries = leaderboard.leaderboard()  # the shipped tables, checked: nothing unranked ranks first
    except (ValueError, OSError) as e:  # run_results.ResultsError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2

    rows = leaderboard.table_rows(entries, run)
    write_table(rows, leaderboard.CSV_COLUMNS, results_dir / "dawnbench_comparison.csv")
    print(format_table(leaderboard.printable([r for r in rows if r["rank"] is not None]), leaderboard.TABLE_COLUMNS))
    print()
    print(f"run time: {leaderboard.TIMINGS[settings.timing]}")
    print(leaderboard.summary_line(run, entries))
    written = [results_dir / "dawnbench_comparison.csv"]
    if settings.plot:
        leaderboard.plot_leaderboard(rows, run, results_dir / "dawnbench.png", settings.title or None, settings.timing)
        written.append(results_dir / "dawnbench.png")
    print("written: " + ", ".join(map(path_text, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
