"""Resumable runs: an atomic checkpoint after every epoch.

Keras's `BackupAndRestore` does the same job but writes its weights and its
epoch counter in place, one after the other: a SIGKILL in between leaves a
corrupt file or weights one epoch ahead of the counter. Here each epoch's
weights (with the optimizer's state, which `save_weights` includes) go to a new
file, and then one small state file, renamed into place, names that file
together with the epoch and the run's results so far. Whatever instant a run is
killed at, the state file describes a complete checkpoint.

    results_dir/checkpoint/state.json              {"epoch", "weights", "results"}
    results_dir/checkpoint/epoch-0007.weights.h5   model and optimizer variables
"""

import json
import os
import shutil
from pathlib import Path

from davidnet.results import write_json_atomic

CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(model, results_dir, epoch, results):
    """Saves the model and optimizer after `epoch` (1-based) with `results`."""
    folder = Path(results_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"epoch-{epoch:04d}.weights.h5"
    partial = folder / f".partial-epoch-{epoch:04d}.weights.h5"  # Keras wants the suffix
    model.save_weights(partial, overwrite=True)
    os.replace(partial, weights)
    write_json_atomic(folder / "state.json", {"epoch": epoch, "weights": weights.name, "results": results})
    for old in folder.glob("epoch-*.weights.h5"):
        if old != weights:
            old.unlink()


def load_checkpoint(results_dir):
    """The last complete checkpoint's state dict, or None if there is none."""
    folder = Path(results_dir) / CHECKPOINT_DIR
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / state.get("weights", "")).is_file():
        return None
    state["weights_path"] = str(folder / state["weights"])
    return state


def remove_checkpoint(results_dir):
    """Deletes the checkpoint of a finished run (model.keras holds the result)."""
    shutil.rmtree(Path(results_dir) / CHECKPOINT_DIR, ignore_errors=True)
