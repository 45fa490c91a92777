"""Resumable runs: an atomic checkpoint after every epoch.

Keras's `BackupAndRestore` does the same job but writes its weights and its
epoch counter in place, one after the other: a SIGKILL in between leaves a
corrupt file or weights one epoch ahead of the counter. Here each epoch's
weights (with the optimizer's state) are serialized in memory and written to
a new file through a temporary name and a rename; then one small state file,
renamed into place the same way, names that file together with the epoch and
the run's results so far. Whatever instant a run is killed at, the state file
describes a complete checkpoint; a full disk is one OSError, and the previous
checkpoint stays whole.

    results_dir/checkpoint/state.json              {"epoch", "weights", "results"}
    results_dir/checkpoint/epoch-0007.weights.h5   model and optimizer variables

Reading a checkpoint back (and checking it) is `davidnet.run_folder.read_state`.
"""

import re
from pathlib import Path

from davidnet.results import write_bytes_atomic, write_json_atomic

CHECKPOINT_DIR = "checkpoint"
# Its own names, and the temporary files of a write that a kill interrupted.
_OURS = re.compile(r"\.?(state\.json|epoch-\d{4,}\.weights\.h5)(\.\w+\.tmp)?")


def save_checkpoint(model, results_dir, epoch, results, write=True):
    """Saves the model and optimizer after `epoch` (1-based) with `results`.

    `write=False` (the processes of a multi-process run but process 0):
    serializes the weights and writes nothing. Keras's serialization makes
    variables of its own (a reference optimizer), which under a multi-process
    distribution are collectives: every process must take part."""
    from pipelines import keras_private

    weights_bytes = keras_private.weights_bytes(model)
    if not write:
        return
    folder = Path(results_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"epoch-{epoch:04d}.weights.h5"
    write_bytes_atomic(weights, weights_bytes)
    write_json_atomic(folder / "state.json", {"epoch": epoch, "weights": weights.name, "results": results})
    for old in folder.glob("epoch-*.weights.h5"):
        if old != weights and _OURS.fullmatch(old.name):
            old.unlink(missing_ok=True)


def checkpoint_files(folder):
    """The files in a checkpoint folder that a run wrote (its own names only)."""
    try:
        return [path for path in Path(folder).iterdir() if _OURS.fullmatch(path.name)]
    except OSError:
        return []
