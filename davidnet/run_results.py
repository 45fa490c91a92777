"""Reads a finished run's results.json and checks every field the leaderboard reads.

`read_results(path)` returns the results dict of one run, or raises
`ResultsError` with one line naming the file and the field: a missing file, a
directory, a pipe, a file over 50 MB, invalid UTF-8, JSON nested too deeply, a
NaN, a negative or boolean time, an accuracy above 1, fields that contradict
each other. `davidnet.leaderboard` ranks what this module has read;
`experiments.predict` reads a model's run with `read_json_file`.
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path


class ResultsError(ValueError):
    """A results.json that cannot be read or is not a run's results; str(e) is one line."""


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
        if not is_finite_number(value) or value < low or (low_open and value == low) or value > high:
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


def is_finite_number(value):
    """A JSON number that is finite (not a boolean, not an integer too large for a float)."""
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
