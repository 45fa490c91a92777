"""A run's folder: who holds it, what it holds, and how a resume must match it.

One run at a time. A run holds an exclusive `flock` on `<folder>/.lock` while it
lives; the kernel drops the lock when the process dies, however it dies, so a
stale lock file from a dead run is free to take (the file's pid and host are
only for the message). On a network file system `flock` is as good as the
server's locking.

One run per folder. A fresh run refuses a folder that holds another run (a
checkpoint, or results of at least one epoch) unless told to overwrite it;
then it removes that run's files, and only those (`RUN_FILES`). A folder left by
a run that was stopped before its first epoch ended holds nothing worth
keeping and is reused.

A resume continues a run with its own settings: `changed_settings` names each
setting given now that differs from the saved one.

Importing this module costs no Keras: the command line checks a folder before
the backend loads, and before any data does.
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import socket
from pathlib import Path

from davidnet.checkpoint import CHECKPOINT_DIR, checkpoint_files
from davidnet.results import check_writable
from pipelines.dataset import first_line

LOCK_NAME = ".lock"
# What a run writes at the top of its folder (checkpoint/ has its own list).
RUN_FILES = (
    "results.json", "history.csv", "dawnbench.tsv", "dawnbench.json",
    "accuracy_loss.png", "learning_rate.png", "model.keras",
)
# Settings that change what a run prints, keeps or precompiles, never what it
# computes: a resume may change them.
MAY_CHANGE_ON_RESUME = ("verbose", "save_model", "checkpoint", "precompile")


class RunFolderError(ValueError):
    """A folder that this run may not use (held, or holding another run); one line."""


class ResumeError(ValueError):
    """Nothing to resume, or a run that cannot be resumed as asked; one line."""


def describe_run(results_dir):
    """What `results_dir` holds: None if no run worth keeping, else a short
    description ("an interrupted run after epoch 3 of 20")."""
    folder = Path(results_dir)
    state_file = folder / CHECKPOINT_DIR / "state.json"
    results = _read_json(folder / "results.json")
    if state_file.exists():
        state = _read_json(state_file)
        epoch = state.get("epoch") if isinstance(state, dict) else None
        return f"a resumable run (checkpoint after epoch {epoch})" if isinstance(epoch, int) else "a checkpoint"
    if results is None:
        return "a results.json that cannot be read" if (folder / "results.json").exists() else None
    if not isinstance(results, dict):
        return "a results.json that is not a run's"
    done = results.get("epochs_completed")
    if done == 0 and results.get("status") in ("interrupted", "running", "out_of_memory"):
        return None  # stopped before its first epoch ended: nothing to keep
    status = str(results.get("status", "unknown"))
    epochs = f"{done} epoch{'' if done == 1 else 's'}" if isinstance(done, int) else "epochs unknown"
    return f"{'an' if status[:1] in tuple('aeiou') else 'a'} {status} run ({epochs})"


def check_fresh(results_dir, overwrite=False, held=False):
    """Refuses (RunFolderError) a folder that another run holds (unless `held`:
    this process holds it) or that holds another run (unless `overwrite`)."""
    holder = None if held else _holder(Path(results_dir) / LOCK_NAME)
    if holder:
        raise RunFolderError(_in_use(results_dir, holder))
    there = describe_run(results_dir)
    if there and not overwrite:
        resume = "continue it with --resume, " if "resumable" in there else ""
        raise RunFolderError(
            f"results folder {results_dir} holds {there}: {resume}choose another --results-dir, "
            "or pass --overwrite to replace it"
        )


def clear_run(results_dir):
    """Removes the files a run writes (and only those) from `results_dir`."""
    folder = Path(results_dir)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    remove_checkpoint(folder)


def remove_checkpoint(results_dir):
    """Deletes the checkpoint's own files; the folder too if nothing else is left in it."""
    folder = Path(results_dir) / CHECKPOINT_DIR
    for path in checkpoint_files(folder):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: files that are not ours stay
        folder.rmdir()


@contextlib.contextmanager
def holding(results_dir):
    """Creates `results_dir` if needed and holds its lock for the block.

    Raises RunFolderError if another living process holds it, OSError (one
    line) if it cannot be written. A folder this call created is removed again
    if the block leaves nothing in it (a run that failed at its start)."""
    folder = Path(results_dir)
    created = not folder.exists()
    check_writable(folder)
    lock = _acquire(folder / LOCK_NAME)
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            (folder / LOCK_NAME).unlink()  # unlinked while held: see _acquire
        os.close(lock)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _acquire(path):
    """An fd holding an exclusive flock on `path` (the current file at that path)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise RunFolderError(_in_use(path.parent, holder)) from None
        # A holder unlinks the file before releasing it; if that happened
        # between our open and our lock, ours is a dead file: take the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)


def _in_use(folder, holder):
    return f"results folder {folder} is in use by another run ({holder}): wait for it to end, or choose another --results-dir"


def _holder(path):
    """Who holds the lock file `path` ("pid N on HOST"), or None if nobody living does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # closing drops our own shared lock, if we got it
    return None


def read_state(results_dir):
    """The checkpoint of the run in `results_dir`, checked: its state dict with
    "weights_path". Raises ResumeError (one line) if there is none or it is damaged."""
    folder = Path(results_dir)
    state_file = folder / CHECKPOINT_DIR / "state.json"
    if not state_file.exists():
        results = _read_json(folder / "results.json")
        status = results.get("status") if isinstance(results, dict) else None
        if status in ("completed", "diverged"):
            why = f"it already {status}"
        elif status in ("interrupted", "running") and results.get("epochs_completed") == 0:
            why = "it was stopped before its first epoch ended; run the same command without --resume"
        else:
            why = "it holds no checkpoint (runs save one after each epoch unless --no-checkpoint)"
        raise ResumeError(f"nothing to resume in {results_dir}: {why}")
    damaged = f"the checkpoint in {folder / CHECKPOINT_DIR} is damaged"
    advice = "; start the run again (--overwrite) or resume from a copy you trust"
    try:
        state = json.loads(state_file.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise ResumeError(f"{damaged}: state.json cannot be read ({first_line(e, 300)}){advice}") from None
    problem = _state_problem(state)
    if problem:
        raise ResumeError(f"{damaged}: state.json {problem}{advice}")
    weights = folder / CHECKPOINT_DIR / state["weights"]
    if not weights.is_file():
        raise ResumeError(f"{damaged}: {weights.name}, named by state.json, is missing{advice}")
    state["weights_path"] = str(weights)
    return state


def _state_problem(state):
    if not isinstance(state, dict):
        return f"holds {type(state).__name__}, expected an object"
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return f"has epoch {epoch!r}, expected a whole number >= 1"
    weights = state.get("weights")
    if not isinstance(weights, str) or Path(weights).name != weights or not weights.endswith(".weights.h5"):
        return f"names weights {weights!r}, expected a file name like epoch-0003.weights.h5"
    results = state.get("results")
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        return "has no results with the run's settings"
    history, lrs = results.get("history"), results.get("lr_history")
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(r, dict) for r in history):
        return f"has a history that is not {epoch} epoch records"
    if not isinstance(lrs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_finite_number(v) for v in p) for p in lrs
    ):
        return "has a learning-rate history that is not [step, rate] pairs"
    return None


def saved_config(state, config_class):
    """The resumed run's settings as a `config_class`; ResumeError (one line) if
    they do not make one (a setting this version does not know, a bad value)."""
    values = state["results"]["config"]
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ResumeError(
            f"the run being resumed has settings this version does not know ({', '.join(unknown)}): "
            "resume it with the version that started it"
        )
    try:
        return config_class(**values)
    except (TypeError, ValueError) as e:
        raise ResumeError(f"the run being resumed has settings this version refuses: {first_line(e, 300)}") from None


def changed_settings(saved, given, names=None):
    """Lines like "--lr 0.4 was 0.2 in the run being resumed", one per setting
    in `names` (default: all) whose `given` value differs from the `saved` one."""
    lines = []
    for field in dataclasses.fields(saved):
        name = field.name
        if (names is not None and name not in names) or name in MAY_CHANGE_ON_RESUME:
            continue
        old, new = getattr(saved, name), getattr(given, name)
        if old != new:
            lines.append(f"--{name.replace('_', '-')} {_shown(new)} was {_shown(old)} in the run being resumed")
    return lines


def _shown(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path):
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
