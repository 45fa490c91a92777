"""Runs the test suite once per Keras backend: `python -m tests [pytest args]`.

Keras picks its backend at import, so each backend gets its own pytest
process. The last line sums both runs ("N passed, N failed"); the exit code
is non-zero if either run failed.
"""

import os
import re
import subprocess
import sys
import tempfile

BACKENDS = ("tensorflow", "jax")


def main(argv):
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    worst = 0
    # One JAX compilation cache for the whole run: the CLI tests' subprocesses
    # then compile the same tiny models once, not once each.
    cache = tempfile.mkdtemp(prefix="davidnet-test-jax-cache-")
    for backend in BACKENDS:
        print(f"==== KERAS_BACKEND={backend} ====", flush=True)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "DAVIDNET_TEST_JAX_CACHE": cache}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *argv], env=env, stdout=subprocess.PIPE, text=True
        )
        print(proc.stdout, end="", flush=True)
        counts = dict.fromkeys(totals, 0)
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", proc.stdout.splitlines()[-1] if proc.stdout else ""):
            counts["errors" if word.startswith("error") else word] += int(number)
        for key in totals:
            totals[key] += counts[key]
        if proc.returncode not in (0, 5) or not counts["passed"]:
            worst = proc.returncode or 1
    failed = totals["failed"] + totals["errors"]
    print(f"total: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
