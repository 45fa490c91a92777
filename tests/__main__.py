"""Runs the test suite once per Keras backend: `python -m tests [pytest args]`.

Keras picks its backend at import, so each backend gets its own pytest
process. The two run at the same time (much of each is single-threaded:
Python, XLA compilation). Their output is streamed as it comes, each line
prefixed with its backend (pytest's progress lines end in a percentage), so
a long run shows where it is. The last line sums both runs
("N passed, N failed"); the exit code is non-zero if either run failed.

Tests that do not depend on the backend (marked `one_backend(name)`: a
study's logic, the run folder, the data loaders) run in one of the two runs
only (DAVIDNET_TEST_SPLIT, read by tests/conftest.py); the marks spread them
over both. Plain `pytest` runs every test under the one backend it has.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading

BACKENDS = ("tensorflow", "jax")
SUMMARY = re.compile(r"^=*\s*\d+ (passed|failed|skipped|deselected|errors?)\b.* in [\d.]+s")


def main(argv):
    # One JAX compilation cache for the whole run: the CLI tests' subprocesses
    # then compile the same tiny models once, not once each.
    cache = tempfile.mkdtemp(prefix="davidnet-test-jax-cache-")
    width = max(len(b) for b in BACKENDS)
    lock = threading.Lock()
    outputs = {backend: [] for backend in BACKENDS}
    processes = {}
    readers = []
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "DAVIDNET_TEST_JAX_CACHE": cache, "DAVIDNET_TEST_SPLIT": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        processes[backend] = process
        reader = threading.Thread(target=_stream, args=(process.stdout, f"{backend:<{width}} | ", outputs[backend], lock))
        reader.start()
        readers.append(reader)
    for reader in readers:
        reader.join()

    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    worst = 0
    for backend, process in processes.items():
        returncode = process.wait()
        # pytest's summary line ("N passed, ... in Xs"); warnings may follow it.
        summaries = [line for line in outputs[backend] if SUMMARY.search(line)]
        last = summaries[-1] if summaries else ""
        counts = dict.fromkeys(totals, 0)
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last):
            counts["errors" if word.startswith("error") else word] += int(number)
        for key in totals:
            totals[key] += counts[key]
        print(f"{backend}: {last.strip() or f'no summary (exit code {returncode})'}")
        if returncode not in (0, 5) or not counts["passed"]:
            worst = returncode or 1
    failed = totals["failed"] + totals["errors"]
    print(f"total: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return worst


def _stream(pipe, prefix, kept, lock):
    """Prints each line of `pipe` with `prefix` as it arrives, and keeps it."""
    for line in pipe:
        kept.append(line)
        with lock:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
    pipe.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
