"""A study's runs and its table: trains a list of named runs one after another,
survives interruption, and writes the comparison.

`run_study` trains the runs into `study_dir/runs/<name>/`; a run whose
results.json says `completed` or `diverged` is not trained again, so an
interrupted study is rerun with the same command and picks up where it
stopped (an interrupted run resumes from its checkpoint). A diverged run is
recorded as such and the others go on. A finished run trained with other
settings is refused by name (`check_reusable`). `write_table` writes the CSV
and returns the text table the study prints.
"""

import csv
import dataclasses
import io
import json
import statistics
import time
from pathlib import Path

from davidnet.checkpoint import CHECKPOINT_DIR
from davidnet.results import write_text_atomic
from davidnet.studies import resolved_target

FINISHED = ("completed", "diverged")
# Settings that change what a run prints or keeps, not its results.
NOT_RESULTS = ("verbose", "save_model", "checkpoint")


def finished_results(run_dir):
    """The results of a finished run in `run_dir`, or None."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None  # none, or damaged: the run is trained (again)
    return results if isinstance(results, dict) and results.get("status") in FINISHED else None


def check_reusable(runs, study_dir, data=None):
    """A finished run is skipped by name: refuse one trained with other settings
    (e.g. other --epochs) rather than report it as this study's. Raises ValueError.

    The target is compared as the runs timed it (a target of None is the data's
    equivalent of 94%, and results.json's "target" is the value timed): with
    `data`, exactly; without, a None on either side is let through."""
    for name, config in runs:
        results = finished_results(Path(study_dir) / "runs" / name)
        if results is None:
            continue
        old, new = dict(results.get("config", {})), dataclasses.asdict(config)
        if "target" in old and (old["target"] is None or new["target"] is None):
            if data is None:
                old["target"] = new["target"]
            else:
                old["target"], new["target"] = results.get("target", old["target"]), resolved_target(new["target"], data)
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
        train_fn: the training function (default: `train` in a fresh Keras
            session), called as `train`: (config, data, run_dir, resume=, overwrite=).

    Returns:
        The results dicts, in the order of `runs`, each with its "name".

    Raises:
        ValueError: a finished run of the same name had other settings.
        KeyboardInterrupt: a run was interrupted (Ctrl-C); the study stops there,
            and the same command continues it.
    """
    check_reusable(runs, study_dir, data)
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
            # An interrupted run goes on from its checkpoint; an unfinished one without any starts again.
            resumable = (run_dir / CHECKPOINT_DIR / "state.json").exists()
            results = train_fn(config, data, run_dir, resume=resumable, overwrite=not resumable)
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
