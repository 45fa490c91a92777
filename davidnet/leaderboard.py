"""Where a run stands among the published CIFAR-10 time-to-94% results.

Two tables ship with the package, in `davidnet/data/`:
- `dawnbench_cifar10_train.csv`: every CIFAR-10 training entry of the DAWNBench
  leaderboard (31 rows), its seconds to 94% being the first logged epoch whose
  top-1 accuracy is >= 94.0%.
- `records.csv`: the published records since then (airbench, hlb-CIFAR10,
  Myrtle's post 8, ...), with their hardware, as published.

`place_runs` reads one or more results.json files of the same recipe (several
seeds), and ranks their median seconds to 94% among those entries, but only
when the comparison is fair: real CIFAR-10 (not the JPEG copy, not synthetic
data), a target of 0.94, reached by every run. Otherwise it says why and the
run stays out of the ranking.

Example:
```python
runs = place_runs(["runs/davidnet-1/results.json"], label="seed 0")
rows = table_rows(leaderboard(), runs)
print(format_table(rows, TABLE_COLUMNS))
```
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json
import math
import statistics
from pathlib import Path

DAWNBENCH_CSV = "dawnbench_cifar10_train.csv"
RECORDS_CSV = "records.csv"
DAWNBENCH_TARGET = 0.94
# On the JPEG copy of CIFAR-10, the DavidNet recipe that reaches 94.08% on the
# real data reaches about 91.1%: 0.91 is read there as the 94% bar.
JPEG_EQUIVALENT_TARGET = 0.91
JPEG_CAVEAT = "JPEG copy, not comparable: its 91% is the DavidNet-equivalent of 94%"
# Which of a run's times is compared with the published seconds.
TIMINGS = {
    "train": "training time to the target (compilation and evaluation excluded)",
    "wall": "wall-clock time to the target (compilation and evaluation included)",
    "train+compile": "training time to the target plus compilation (as our dawnbench.tsv)",
}
TABLE_COLUMNS = ["rank", "entry", "hardware", "seconds_to_94", "framework/source", "board"]
CSV_COLUMNS = [*TABLE_COLUMNS, "notes"]


class ResultsError(ValueError):
    """A results.json that cannot be read or is not a run's results; str(e) is one line."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One published result.

    Attributes:
        entry: its name (the DAWNBench entry id, or the record's name).
        hardware: as published.
        seconds: seconds to 94% test accuracy.
        source: the framework (DAWNBench) or where it was published (records).
        board: "published" (records.csv) or "DAWNBench".
        notes: anything the number needs to be read right.
    """

    entry: str
    hardware: str
    seconds: float
    source: str
    board: str
    notes: str = ""


@dataclasses.dataclass
class RunPlacement:
    """One run (or the median of several) and whether it may be ranked.

    Attributes:
        label: the run's name in tables and plots.
        hardware: e.g. "1x NVIDIA H200 (gpu)".
        framework: e.g. "Keras 3.15.1 + jax 0.10.2".
        n: how many results files.
        times: each run's seconds to its target (None where not reached).
        seconds: the median of `times` when every run reached its target, else None.
        target: the runs' target accuracy (the first run's, if they differ).
        kind: "ranked", "jpeg" (the JPEG copy), "synthetic", "other_target",
            "not_reached" or "mixed".
        reason: one line saying why it is not ranked ("" when ranked).
        paths: the results files.
    """

    label: str
    hardware: str
    framework: str
    n: int
    times: list
    seconds: float | None
    target: float | None
    kind: str
    reason: str
    paths: list

    @property
    def ranked(self):
        return self.kind == "ranked"


# --- the published tables -------------------------------------------------------------


def _data_text(name):
    return importlib.resources.files("davidnet").joinpath("data", name).read_text()


def dawnbench_entries():
    """The 31 DAWNBench CIFAR-10 training entries, as `Entry`s, in file order."""
    rows = csv.DictReader(_data_text(DAWNBENCH_CSV).splitlines())
    return [
        Entry(
            entry=row["entry"],
            hardware=row["hardware"],
            seconds=float(row["seconds_to_94"]),
            source=row["framework"],
            board="DAWNBench",
            notes=f"{row['model']}, {row['date']}, final top-1 {float(row['final_top1']):.2f}%",
        )
        for row in rows
    ]


def record_entries():
    """The published records since DAWNBench (records.csv), as `Entry`s."""
    rows = csv.DictReader(_data_text(RECORDS_CSV).splitlines())
    return [
        Entry(row["entry"], row["hardware"], float(row["seconds_to_94"]), row["source"], "published", row["notes"])
        for row in rows
    ]


def leaderboard():
    """Records and DAWNBench entries together, fastest first."""
    return sorted([*record_entries(), *dawnbench_entries()], key=lambda e: e.seconds)


# --- reading runs -------------------------------------------------------------------


def read_results(path):
    """Reads a run's results.json and checks it has what placing needs.

    Raises:
        ResultsError: missing, unreadable, not JSON, or not a run's results.
    """
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: pass the results.json of a run (RUN_DIR/results.json)") from None
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ResultsError(f"{path} is not valid JSON ({str(e).splitlines()[0]}): expected a run's results.json") from None
    expected = "expected a results.json written by experiments.davidnet"
    if not isinstance(results, dict):
        raise ResultsError(f"{path}: {expected}, got a JSON {type(results).__name__}")
    missing = [k for k in ("target", "seconds_to_target", "data") if k not in results]
    if missing:
        raise ResultsError(f"{path}: {expected}; it has no {', '.join(missing)}")
    if not _is_number(results["target"]):
        raise ResultsError(f"{path}: target should be a number, got {results['target']!r}")
    data = results["data"]
    if not isinstance(data, dict) or not isinstance(data.get("image_format"), str):
        raise ResultsError(f"{path}: data.image_format should be a string (pickle, png, jpeg, tfds, synthetic), got {data!r}")
    for key in ("seconds_to_target", "wall_to_target_s", "compile_s"):
        if results.get(key) is not None and not _is_number(results[key]):
            raise ResultsError(f"{path}: {key} should be a number or null, got {results[key]!r}")
    return results


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_hardware(results):
    """'1x NVIDIA H200 (gpu)' from a results dict's device fields."""
    device = results.get("device") or "unknown device"
    count = results.get("device_count") or 1
    platform = results.get("platform")
    return f"{count}x {device}" + (f" ({platform})" if platform else "")


def run_framework(results):
    """'Keras 3.15.1 + jax 0.10.2' from a results dict."""
    backend = results.get("backend") or "unknown backend"
    versions = results.get("versions") or {}
    keras_version = versions.get("keras")
    backend_version = versions.get(backend)
    return f"Keras{' ' + keras_version if keras_version else ''} + {backend}{' ' + backend_version if backend_version else ''}"


def run_seconds(results, timing="train"):
    """The run's seconds to its target under `timing` (see TIMINGS), or None if not reached."""
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {', '.join(TIMINGS)}. Got: {timing!r}")
    if results.get("target_epoch") is None and "target_epoch" in results:
        return None
    train = results.get("seconds_to_target")
    if train is None:
        return None
    if timing == "wall":
        return results.get("wall_to_target_s")
    if timing == "train+compile":
        return train + (results.get("compile_s") or 0.0)
    return train


def verdict(results, timing="train"):
    """(kind, reason) for one run: may it be ranked as a CIFAR-10 result, and if not, why."""
    data = results["data"]
    image_format = data.get("image_format")
    target = results["target"]
    seconds = run_seconds(results, timing)
    reached = "not reached" if seconds is None else f"reached in {seconds:.4g} s"
    if image_format == "synthetic":
        return "synthetic", "synthetic data (class-coloured noise), not CIFAR-10: not ranked"
    if data.get("jpeg_copy") or image_format == "jpeg":
        if math.isclose(target, JPEG_EQUIVALENT_TARGET):
            return "jpeg", f"{JPEG_CAVEAT} (target {target:g} {reached})"
        return "jpeg", f"{JPEG_CAVEAT}; its target was {target:g} ({reached}), read 0.91 as the 94% bar on this copy"
    if not math.isclose(target, DAWNBENCH_TARGET):
        return "other_target", f"its target was {target:g}, not 0.94 ({reached}): not ranked"
    if seconds is None:
        final = results.get("final_accuracy")
        final = f"final test accuracy {final:.4f}" if _is_number(final) else "no final accuracy"
        return "not_reached", f"did not reach 94% ({final}): not ranked"
    return "ranked", ""


def place_runs(paths, label="this run", timing="train"):
    """Reads the results files of one recipe (e.g. several seeds) into a `RunPlacement`.

    The median time is ranked only if every run may be ranked (see `verdict`);
    a single run that may not makes the group unranked, with the reasons.

    Raises:
        ResultsError: a file that is missing or not a run's results.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ResultsError("no results.json given: pass one or more RUN_DIR/results.json")
    all_results = [read_results(p) for p in paths]
    verdicts = [verdict(r, timing) for r in all_results]
    times = [run_seconds(r, timing) for r in all_results]
    kinds = {kind for kind, _ in verdicts}
    n = len(paths)
    if len(kinds) == 1:
        kind = kinds.pop()
        reason = verdicts[0][1] if n == 1 else _group_reason(verdicts, paths)
    else:
        kind = "mixed"
        reason = "the runs differ: " + _group_reason(verdicts, paths)
    reached = [t for t in times if t is not None]
    seconds = statistics.median(reached) if reached and len(reached) == n else None
    hardware = sorted({run_hardware(r) for r in all_results})
    framework = sorted({run_framework(r) for r in all_results})
    return RunPlacement(
        label=label,
        hardware=" / ".join(hardware),
        framework=" / ".join(framework),
        n=n,
        times=times,
        seconds=seconds,
        target=all_results[0]["target"],
        kind=kind,
        reason=reason,
        paths=[str(p) for p in paths],
    )


def _group_reason(verdicts, paths):
    counts = {}
    for (kind, reason), path in zip(verdicts, paths):
        if kind != "ranked":
            counts.setdefault(_without_times(reason), []).append(path.parent.name or str(path))
    parts = [f"{len(names)} of {len(paths)} runs: {reason}" for reason, names in counts.items()]
    return "; ".join(parts) if parts else ""


def _without_times(reason):
    # "(target 0.91 reached in 12.3 s)" differs per seed; the reason does not.
    return reason.split(" (")[0]


# --- the comparison -------------------------------------------------------------------


def rank_of(seconds, entries):
    """1 + how many entries are strictly faster than `seconds`."""
    return 1 + sum(e.seconds < seconds for e in entries)


def seconds_text(seconds):
    """'1.99', '30', '9,102': three significant digits below 100 s, whole seconds above."""
    if seconds is None:
        return None
    return f"{seconds:.3g}" if seconds < 100 else f"{seconds:,.0f}"


def printable(rows):
    """`rows` with the seconds as text, for `format_table` (which would print 1.007e+04)."""
    return [{**row, "seconds_to_94": seconds_text(row["seconds_to_94"])} for row in rows]


def run_name(run):
    n = f", median of n={run.n}" if run.n > 1 else ""
    return f"=> {run.label}{n}"


def table_rows(entries, run=None):
    """Rows (dicts with CSV_COLUMNS) of `entries` fastest first, with `run`
    inserted at its rank when it may be ranked, or appended, unranked, when not."""
    entries = sorted(entries, key=lambda e: e.seconds)
    rows = [
        {
            "entry": e.entry,
            "hardware": e.hardware,
            "seconds_to_94": e.seconds,
            "framework/source": e.source,
            "board": e.board,
            "notes": e.notes,
        }
        for e in entries
    ]
    if run is not None:
        row = {"entry": run_name(run), "hardware": run.hardware, "framework/source": run.framework}
        if run.ranked:
            times = ", ".join(f"{t:.4g}" for t in run.times)
            note = f"median of {run.n} runs ({times} s)" if run.n > 1 else ""
            rows.insert(rank_of(run.seconds, entries) - 1, {**row, "seconds_to_94": run.seconds, "board": "THIS RUN", "notes": note})
        else:
            rows.append({**row, "seconds_to_94": None, "board": "not ranked", "notes": run.reason})
    rank = 0
    for row in rows:
        if row["board"] != "not ranked":
            rank += 1
            row["rank"] = rank
        else:
            row["rank"] = None
    return rows


def summary_line(run, entries):
    """One line saying where the run stands, or why it does not."""
    n = f" (median of n={run.n})" if run.n > 1 else ""
    if run.ranked:
        rank = rank_of(run.seconds, entries)
        faster = [e for e in sorted(entries, key=lambda e: e.seconds) if e.seconds < run.seconds]
        after = f", just behind {faster[-1].entry} ({faster[-1].seconds:g} s)" if faster else ", ahead of every entry"
        return f"{run.label}: {run.seconds:.4g} s to 94%{n} on {run.hardware}: rank {rank} of {len(entries) + 1}{after}"
    times = [t for t in run.times if t is not None]
    # A single run's reason already gives its time; a group's gives the reasons only.
    shown = f"{statistics.median(times):.4g} s to its target {run.target:g}{n}; " if times and run.n > 1 else ""
    return f"{run.label}: NOT RANKED: {shown}{run.reason}"


def plot_leaderboard(rows, run, path, title=None, timing="train"):
    """Horizontal bars on a log time axis, fastest at the top, each labelled
    with its hardware; the run highlighted, or shown below the ranking when
    it may not be ranked."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    ranked = [r for r in rows if r["rank"] is not None]
    unranked = [r for r in rows if r["rank"] is None]
    shown_unranked = [r for r in unranked if run is not None and any(t is not None for t in run.times)]
    n_bars = len(ranked) + len(shown_unranked)
    fig, ax = plt.subplots(figsize=(11, 0.21 * (n_bars + len(unranked)) + 2.2))
    colors = {"published": "tab:blue", "DAWNBench": "silver", "THIS RUN": "tab:orange"}
    y = list(range(len(ranked)))
    seconds = [r["seconds_to_94"] for r in ranked]
    bars = ax.barh(y, seconds, color=[colors[r["board"]] for r in ranked], height=0.7)
    for bar, row in zip(bars, ranked):
        if row["board"] == "THIS RUN":
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
    for yi, row in zip(y, ranked):
        bold = "bold" if row["board"] == "THIS RUN" else "normal"
        ax.text(row["seconds_to_94"] * 1.12, yi, f"{seconds_text(row['seconds_to_94'])} s  {row['hardware']}",
                va="center", fontsize=7, fontweight=bold, clip_on=False)
    labels = [f"{r['rank']}. {r['entry']}" for r in ranked]
    if shown_unranked:
        # Shown below a line, never inside the ranking.
        ax.axhline(len(ranked) - 0.2, color="black", linestyle="--", linewidth=0.8)
        times = [t for t in run.times if t is not None]
        value = statistics.median(times)
        yi = len(ranked) + 0.6
        ax.barh([yi], [value], color="white", edgecolor="tab:red", hatch="///", height=0.7)
        caveat = JPEG_CAVEAT if run.kind == "jpeg" else run.reason
        ax.text(value * 1.12, yi, f"{seconds_text(value)} s to its target {run.target:g}  {run.hardware}: {caveat}",
                va="center", fontsize=7, color="tab:red", clip_on=False)
        y.append(yi)
        labels.append(f"not ranked: {run.label}")
    ax.set_yticks(y, labels, fontsize=7)
    for tick, row in zip(ax.get_yticklabels(), ranked):
        if row["board"] == "THIS RUN":
            tick.set_fontweight("bold")
    ax.set_ylim(max(y) + 1.3, -0.7)
    ax.set_xscale("log")
    all_seconds = seconds + ([statistics.median([t for t in run.times if t is not None])] if shown_unranked else [])
    ax.set_xlim(min(all_seconds) / 2, max(all_seconds) * 1.5)
    ax.set_xlabel("seconds to 94% test accuracy (log scale)")
    ax.grid(axis="x", which="major", alpha=0.3)
    for mark, name in ((60, "1 min"), (3600, "1 h"), (86400, "1 day")):
        if ax.get_xlim()[0] < mark < ax.get_xlim()[1]:
            ax.axvline(mark, color="gray", linestyle=":", linewidth=0.8, alpha=0.6, zorder=0)
            ax.text(mark, max(y) + 0.8, name, fontsize=7, color="gray", ha="center", va="top")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in ("published", "DAWNBench")]
    names = ["published record (records.csv)", "DAWNBench entry"]
    if run is not None and run.ranked:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=colors["THIS RUN"], edgecolor="black"))
        names.append(run.label)
    ax.legend(handles, names, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(handles), fontsize=8, frameon=False)
    heading = title or "CIFAR-10, seconds to 94% test accuracy: published records and the DAWNBench leaderboard"
    ax.set_title(heading, fontsize=10, pad=22)
    if run is not None:
        footer = f"{summary_line(run, _entries_of(ranked))[:200]}\nrun time: {TIMINGS[timing]}"
        fig.text(0.01, 0.005, footer, fontsize=7, color="black" if run.ranked else "tab:red")
    fig.subplots_adjust(left=0.3, right=0.7, top=1 - 0.7 / fig.get_figheight(), bottom=1.0 / fig.get_figheight())
    save_figure(fig, path, compact=True)
    plt.close(fig)


def _entries_of(rows):
    return [Entry(r["entry"], r["hardware"], r["seconds_to_94"], r["framework/source"], r["board"])
            for r in rows if r["board"] != "THIS RUN"]
