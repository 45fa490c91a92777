"""Runs a command as N processes of one data-parallel run on this machine.

    python -m experiments.launch --processes 2 -- python -m experiments.davidnet --devices all ...

Thin over the engines' own mechanisms: each process gets the variables its
backend reads to find the others, and the command does the rest
(`davidnet.distribute.join_processes`):

- JAX: KERAS_DISTRIBUTION_JOB_ADDRESSES (127.0.0.1 and a free port, process 0
  the coordinator), KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID;
- TensorFlow: TF_CONFIG, a cluster of N workers on free local ports, this one's index.

Both are set, and each backend reads its own. Process 0's output is this
command's; the others' is kept and its last lines shown if one fails. When a
process fails (or is killed) the others are stopped (SIGTERM, then SIGKILL
after --grace seconds) and the exit code is the worst of them. Ctrl-C or
SIGTERM here is passed on to every process.

For several hosts, start the command on each host with those variables set
(or under SLURM's `srun`, which JAX reads itself): see the README, "Several
GPUs and hosts".
"""

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

POLL_S = 0.2
TAIL_LINES = 20  # of a failed process's output


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m experiments.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=_count, required=True, help="how many processes (2 to 64)")
    parser.add_argument("--port", type=int, default=0, help="the coordinator's port (JAX; TensorFlow's workers take this and the next ones) (default: a free port)")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds the processes get to stop (a signal waits for the end of the epoch) before SIGKILL (default: 60)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    return parser


def _count(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 2 to 64, got {text!r}")
    return value


def environments(processes, ports):
    """The variables of each process: JAX's (KERAS_DISTRIBUTION_*) and TensorFlow's (TF_CONFIG)."""
    workers = [f"127.0.0.1:{port}" for port in ports]
    return [
        {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": workers[0],
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        }
        for index in range(processes)
    ]


def free_ports(count, first=0):
    """`count` local TCP ports: from `first` on, or free ones the kernel picks."""
    if first:
        return list(range(first, first + count))
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- python -m experiments.davidnet --devices all")
    ports = free_ports(args.processes, args.port)
    children, logs = [], []
    stopping = {"begun": False, "deadline": None}  # SIGKILL for the ones still running at the deadline

    def forward(signum, frame):
        if not stopping["begun"]:
            stopping.update(begun=True, deadline=time.monotonic() + args.grace)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    for index, variables in enumerate(environments(args.processes, ports)):
        log = None if index == 0 else tempfile.TemporaryFile("w+b")
        logs.append(log)
        # Their own session: a Ctrl-C in the terminal reaches them once, through `forward`.
        children.append(subprocess.Popen(command, env={**os.environ, **variables}, stdout=log, stderr=log, start_new_session=True))
    try:
        codes = _wait(children, logs, args.grace, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for log in logs:
            if log is not None:
                log.close()
    return worst(codes)


def _wait(children, logs, grace, stopping):
    """Waits for every process; the first failure stops the others. Returns their exit codes."""
    reported = set()
    finished_at = None  # when the first process ended well: the others should follow within seconds
    while True:
        codes = [child.poll() for child in children]
        if finished_at is None and 0 in codes:
            finished_at = time.monotonic()
        if finished_at and not stopping["begun"] and time.monotonic() - finished_at > grace:
            for index, child in enumerate(children):
                if child.poll() is None:
                    print(f"launch: process {index} still runs {grace:.0f} s after another finished: stopping it", file=sys.stderr, flush=True)
                    child.terminate()
            stopping.update(begun=True, deadline=time.monotonic() + grace)
        for index, code in enumerate(codes):
            if code not in (None, 0) and index not in reported:
                reported.add(index)
                if not stopping["begun"]:
                    print(f"launch: process {index} {_ended(code)}; stopping the other processes", file=sys.stderr, flush=True)
                    _show_tail(index, logs[index])
                    stopping.update(begun=True, deadline=time.monotonic() + grace)
                    for child in children:
                        if child.poll() is None:
                            child.terminate()
        if all(code is not None for code in codes):
            return codes
        if stopping["deadline"] and time.monotonic() > stopping["deadline"]:
            for index, child in enumerate(children):
                if child.poll() is None:
                    print(f"launch: process {index} did not stop within the grace period: killing it", file=sys.stderr, flush=True)
                    child.kill()
            stopping["deadline"] = None
        time.sleep(POLL_S)


def _ended(code):
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _show_tail(index, log):
    if log is None:  # process 0's output is already on screen
        return
    log.seek(0)
    lines = collections.deque((line.decode(errors="replace").rstrip() for line in log), maxlen=TAIL_LINES)
    for line in lines:
        print(f"[process {index}] {line}", file=sys.stderr)


def worst(codes):
    """The worst exit code: a signal's as a shell reports it (128 + its number), else the highest."""
    return max((128 - code if code < 0 else code) for code in codes)


if __name__ == "__main__":
    sys.exit(main())
