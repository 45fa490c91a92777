"""Ctrl-C and SIGTERM stop a run the same way, and never in the middle of a write.

Schedulers (SLURM, Kubernetes, a notebook's "interrupt") send SIGTERM before
they kill; Python's default for it is to die on the spot, leaving results.json
at "running". Inside `stoppable()`, SIGTERM is raised as KeyboardInterrupt,
like Ctrl-C, so the run ends as interrupted with its last checkpoint. Inside
`deferred()` (a checkpoint or the results being written) either signal waits
until the block ends: an exception raised halfway through an HDF5 or JSON
write would leave half a file behind.

`received()` says which signal stopped the run: an interrupt that lands in a C
extension (a step being dispatched) can surface as another exception (a
SystemError), and the run still knows it was told to stop.
"""

import contextlib
import signal
import threading

_STATE = {"received": None, "deferring": 0, "pending": None}


def received():
    """The name of the signal ("SIGINT", "SIGTERM") that stopped the run, or None."""
    return _STATE["received"]


def exit_code():
    """The exit code of a stopped run: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    name = _STATE["received"] or "SIGINT"
    return 128 + getattr(signal, name)


def _handler(signum, frame):
    name = signal.Signals(signum).name
    _STATE["received"] = _STATE["received"] or name
    if _STATE["deferring"]:
        _STATE["pending"] = name
        return
    raise KeyboardInterrupt(name)


@contextlib.contextmanager
def stoppable():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the block (main thread only;
    elsewhere the block runs with the process's handlers as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STATE.update(received=None, deferring=0, pending=None)
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred(raise_after=True):
    """A signal that arrives in the block waits for its end; then it is raised
    as KeyboardInterrupt (`raise_after`), or only recorded (`received`)."""
    _STATE["deferring"] += 1
    try:
        yield
    finally:
        _STATE["deferring"] -= 1
        if not _STATE["deferring"]:
            pending, _STATE["pending"] = _STATE["pending"], None
            if pending and raise_after:
                raise KeyboardInterrupt(pending)
