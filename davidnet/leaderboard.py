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
first (`check_results`): a wrong type, a NaN, a negative time or a missing key
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
import json
import math
import os
import stat
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


# --- reading runs -------------------------------------------------------------------

# A results.json holds a run's history (one row per epoch) and its learning rates
# (one per step): a few MB for the longest runs. More is not a run's results.
MAX_RESULTS_BYTES = 50 * 2**20
# A run's status (davidnet.training): only a finished run's time is a time to 94%.
STATUSES = {
    "completed": "",
    "example": "",  # --smoke's made-up run
    "diverged": "the run diverged",
    "interrupted": "the run was interrupted before its last epoch",
    "running": "the run had not finished: status running, still going or killed",
}
# data.image_format as the pipelines write it (pipelines.targets).
IMAGE_FORMATS = ("pickle", "png", "jpeg", "tfds", "synthetic")
CIFAR10_TEST_IMAGES = 10_000
_EXPECTED_FILE = "expected a results.json written by experiments.davidnet"


def read_json_file(path, max_bytes=MAX_RESULTS_BYTES):
    """The JSON value in `path`: a regular file of at most `max_bytes` of UTF-8.

    Raises:
        ResultsError: one line naming the file: missing, a directory, unreadable,
            too large, not UTF-8, not JSON, or nested too deeply to parse.
    """
    path = Path(path)
    name = path_text(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ResultsError(f"{name} does not exist: pass the results.json of a run (RUN_DIR/results.json)") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ResultsError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ResultsError(f"{name} is a directory: pass the results.json inside it ({name}/results.json)")
    if not stat.S_ISREG(info.st_mode):
        raise ResultsError(f"{name} is not a regular file (a pipe or device?): pass a run's results.json")
    too_large = f"{name} is larger than {max_bytes / 2**20:g} MB: not a run's results.json"
    if info.st_size > max_bytes:
        raise ResultsError(too_large)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # bounded, whatever st_size said
    except OSError as e:
        raise ResultsError(f"cannot read {name}: {e.strerror or e}") from None
    if len(raw) > max_bytes:
        raise ResultsError(too_large)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{name} is not UTF-8 text (bad byte at offset {e.start}): {_EXPECTED_FILE}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ResultsError(f"{name} is JSON nested too deeply to read: {_EXPECTED_FILE}") from None
    except ValueError as e:  # also an integer of more than 4300 digits
        why = str(e).splitlines()[0]
        why = why if len(why) <= 80 else why[:77] + "..."
        raise ResultsError(f"{name} is not valid JSON ({why}): {_EXPECTED_FILE}") from None


def read_results(path, timing="train"):
    """Reads a run's results.json and checks every field placing reads (see `check_results`).

    Raises:
        ResultsError: missing, unreadable, not JSON, or not a run's results.
    """
    results = read_json_file(path)
    check_results(results, path, timing)
    return results


def check_results(results, path, timing="train"):
    """Checks the fields of a results dict that placing reads: their types,
    that numbers are finite and in range, and that they agree with each other.

    Raises:
        ResultsError: one line naming `path`, the field and what was expected.
    """
    name = path_text(Path(path))
    if not isinstance(results, dict):
        raise ResultsError(f"{name}: {_EXPECTED_FILE}, got a JSON {_json_type(results)} at the top level")
    missing = [k for k in ("target", "seconds_to_target", "data") if k not in results]
    if missing:
        raise ResultsError(f"{name}: {_EXPECTED_FILE}; it has no {', '.join(missing)}")

    def bad(field, expected, value):
        raise ResultsError(f"{name}: {field} should be {expected}, got {_shown_value(value)}")

    def number(field, value, low, high=math.inf, low_open=False, optional=True):
        if value is None and optional:
            return
        if not _is_number(value) or value < low or (low_open and value == low) or value > high:
            low_text = f"> {low:g}" if low_open else f">= {low:g}"
            expected = f"a number {low_text}" + (f" and <= {high:g}" if high < math.inf else "")
            bad(field, expected + (" or null" if optional else ""), value)

    def whole(field, value, low):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            bad(field, f"a whole number >= {low} or null", value)

    def text(field, value):
        if value is not None and not _is_line(value):
            bad(field, "one line of text (at most 200 characters) or null", value)

    number("target", results["target"], 0, 1, low_open=True, optional=False)
    if "status" not in results:
        raise ResultsError(f"{name}: {_EXPECTED_FILE}; it has no status (one of {', '.join(STATUSES)})")
    status = results["status"]
    if not isinstance(status, str) or status not in STATUSES:
        bad("status", f"one of {', '.join(STATUSES)}", status)
    data = results["data"]
    if not isinstance(data, dict):
        bad("data", "an object with image_format (" + ", ".join(IMAGE_FORMATS) + ")", data)
    if data.get("image_format") not in IMAGE_FORMATS:
        bad("data.image_format", "one of " + ", ".join(IMAGE_FORMATS), data.get("image_format"))
    if not any(data.get("jpeg_copy") is v for v in (None, True, False)):
        bad("data.jpeg_copy", "true, false or null", data.get("jpeg_copy"))
    whole("data.test_images", data.get("test_images"), 1)
    whole("data.train_images", data.get("train_images"), 1)
    # Durations: a time to the target is > 0 (no run reaches it before training);
    # compilation may take no time (a warm cache).
    number("seconds_to_target", results["seconds_to_target"], 0, low_open=True)
    number("wall_to_target_s", results.get("wall_to_target_s"), 0, low_open=True)
    number("compile_s", results.get("compile_s"), 0)
    number("final_accuracy", results.get("final_accuracy"), 0, 1)
    whole("target_epoch", results.get("target_epoch"), 1)
    whole("epochs_completed", results.get("epochs_completed"), 0)
    whole("device_count", results.get("device_count"), 1)
    whole("devices", results.get("devices"), 1)
    for field in ("device", "platform", "backend"):
        text(field, results.get(field))
    versions = results.get("versions")
    if versions is not None and not isinstance(versions, dict):
        bad("versions", "an object of version strings or null", versions)
    for key in ("keras", results.get("backend")):
        if key is not None:
            text(f"versions.{key}", (versions or {}).get(key))

    # A time to rank needs the epoch that reached the target (a null seconds_to_target
    # is "not reached", whatever else the file says: nothing is ranked).
    seconds, epoch = results["seconds_to_target"], results.get("target_epoch")
    if seconds is not None and "target_epoch" in results and epoch is None:
        raise ResultsError(f"{name}: seconds_to_target is {_shown_value(seconds)} but target_epoch is null "
                           "(not reached): the file contradicts itself")
    wall = results.get("wall_to_target_s")
    if seconds is not None and timing == "wall" and wall is None:
        bad("wall_to_target_s", "a number > 0 when the target was reached (--timing wall compares it)", wall)
    completed = results.get("epochs_completed")
    if epoch is not None and completed is not None and epoch > completed:
        raise ResultsError(f"{name}: target_epoch ({epoch}) is after epochs_completed ({completed})")


def _is_number(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_line(value):
    return isinstance(value, str) and len(value) <= 200 and value.isprintable()


def _json_type(value):
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _shown_value(value):
    """A JSON value in a message: its repr, cut short, on one line."""
    if isinstance(value, (dict, list)):
        return f"a JSON {_json_type(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return "an integer of %d digits" % len(str(abs(value)))
    shown = ascii(value) if isinstance(value, str) else json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def path_text(path):
    """A path in a message: as given, or escaped when it would break the line."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def run_hardware(results):
    """'1x NVIDIA H200 (gpu)' from a results dict's device fields: the devices
    the run used ("devices") where it says, else all it saw ("device_count")."""
    device = results.get("device") or "unknown device"
    count = results.get("devices") or results.get("device_count") or 1
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
    return _is_number(value) and value > 0


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
