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
data, all 10,000 test images), a target of 0.94, reached by every run, and
every run finished (not diverged, interrupted or still running). Otherwise it
says why and the run stays out of the ranking. Every field it reads is checked
first (`davidnet.run_results.check_results`): a wrong type, a NaN, a negative time or a missing key
is refused with one line naming the file and the field.

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
import math
import os
import statistics
from pathlib import Path

from davidnet.run_results import (
    CIFAR10_TEST_IMAGES,
    STATUSES,
    ResultsError,
    is_finite_number,
    path_text,
    read_results,
    run_framework,
    run_hardware,
)

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
            "diverged", "unfinished" (interrupted or running), "other_test_set",
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
        return self.kind == "ranked" and _is_duration(self.seconds)


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
    """Records and DAWNBench entries together, fastest first.

    Raises:
        ValueError: an entry whose seconds are not a number > 0 (a broken table).
    """
    return sorted(checked_entries([*record_entries(), *dawnbench_entries()]), key=lambda e: e.seconds)


def run_seconds(results, timing="train"):
    """The run's seconds to its target under `timing` (see TIMINGS), or None if not reached."""
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {', '.join(TIMINGS)}. Got: {timing!r}")
    train = results.get("seconds_to_target")
    if train is None:
        return None
    if timing == "wall":
        return results.get("wall_to_target_s")
    if timing == "train+compile":
        return train + (results.get("compile_s") or 0.0)
    return train


def verdict(results, timing="train"):
    """(kind, reason) for one run: may it be ranked as a CIFAR-10 result, and if not, why.

    Only a finished run is ranked: a diverged, interrupted or still running one
    is shown apart with its status, even when it had reached the target."""
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
    unfinished = STATUSES.get(results.get("status"), "")
    if unfinished:
        kind = "diverged" if results["status"] == "diverged" else "unfinished"
        return kind, f"{unfinished} ({reached}): not ranked, only a finished run is"
    test_images = data.get("test_images")
    if image_format != "synthetic" and test_images is not None and test_images != CIFAR10_TEST_IMAGES:
        return "other_test_set", f"its accuracy is on {test_images:,} test images, not CIFAR-10's {CIFAR10_TEST_IMAGES:,} ({reached}): not ranked"
    if seconds is None:
        final = results.get("final_accuracy")
        final = f"final test accuracy {final:.4f}" if is_finite_number(final) else "no final accuracy"
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
    all_results = [read_results(p, timing) for p in paths]
    seen = set()
    for path in paths:  # the same run twice would count as two seeds
        key = os.path.realpath(path)
        if key in seen:
            raise ResultsError(f"{path_text(path)} is given twice: pass each run's results.json once")
        seen.add(key)
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
    """1 + how many entries are strictly faster than `seconds`.

    Raises:
        ValueError: `seconds` or an entry's is not a number > 0 (a NaN or None
            compares false with everything, and would rank first).
    """
    if not _is_duration(seconds):
        raise ValueError(f"a time to rank should be a number > 0, got {seconds!r}")
    return 1 + sum(e.seconds < seconds for e in checked_entries(entries))


def checked_entries(entries):
    """`entries` as a list, each checked to have seconds > 0 (finite), else ValueError."""
    entries = list(entries)
    for e in entries:
        if not _is_duration(e.seconds):
            raise ValueError(f"leaderboard entry {e.entry!r} ({e.board}): seconds_to_94 should be a number > 0, got {e.seconds!r}")
    return entries


def _is_duration(value):
    return is_finite_number(value) and value > 0


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
    entries = sorted(checked_entries(entries), key=lambda e: e.seconds)
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
    from davidnet.results import pyplot

    plt = pyplot()
    # Labels, hardware and reasons come from results files and flags: a "$" in
    # them is a dollar, never the start of mathtext (which can fail to parse).
    with plt.rc_context({"text.parse_math": False}):
        _draw_leaderboard(plt, rows, run, path, title, timing)


def _draw_leaderboard(plt, rows, run, path, title, timing):
    """Draws and saves `plot_leaderboard`'s figure."""
    from davidnet.results import save_figure

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
