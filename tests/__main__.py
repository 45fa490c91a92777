"""Runs the test suite once per Keras backend: `python -m tests [pytest args]`.

Keras picks its backend at import, so each backend gets its own pytest
process. The two run at the same time (much of each is single-threaded:
Python, XLA compilation), and their outputs are printed one after the other.
The last line sums both runs ("N passed, N failed"); the exit code is non-zero
if either run failed.
"""

import os
import re
import subprocess
import sys
import tempfile

BACKENDS = ("tensorflow", "jax")


def main(argv):
    # One JAX compilation cache for the whole run: the CLI tests' subprocesses
    # then compile the same tiny models once, not once each.
    cache = tempfile.mkdtemp(prefix="davidnet-test-jax-cache-")
    runs = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "DAVIDNET_TEST_JAX_CACHE": cache}
        log = tempfile.TemporaryFile(mode="w+")
        runs[backend] = (subprocess.Popen([sys.executable, "-m", "pytest", *argv], env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log)

    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    worst = 0
    for backend, (process, log) in runs.items():
        returncode = process.wait()
        log.seek(0)
        output = log.read()
        print(f"==== KERAS_BACKEND={backend} ====\n{output}", end="", flush=True)
        last = output.strip().splitlines()[-1] if output.strip() else ""
        counts = dict.fromkeys(totals, 0)
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last):
            counts["errors" if word.startswith("error") else word] += int(number)
        for key in totals:
            totals[key] += counts[key]
        if returncode not in (0, 5) or not counts["passed"]:
            worst = returncode or 1
    failed = totals["failed"] + totals["errors"]
    print(f"total: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
