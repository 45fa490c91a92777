"""Several processes of one data-parallel run, on this machine (issue #14).

They are started as users start them: by `python -m experiments.launch` (which
sets the variables each backend reads), or by hand with those variables, as
the README shows. Each process has one CPU device; JAX joins them with
`jax.distributed` (gloo collectives), TensorFlow with MultiWorkerMirroredStrategy.

`python -m pytest -m multiprocess` runs these alone. Each concerns one backend
(or none) and is skipped under the other.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest

from davidnet import distribute
from tests.datasets import make_pickle_dir
from tests.helpers import DATA_PARALLEL_TOLERANCE, ROOT, SAME_REPLICAS_TOLERANCE, launch_cli

BACKEND = keras.backend.backend()
pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(BACKEND not in ("jax", "tensorflow"), reason="several processes need JAX or TensorFlow"),
]
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="jax.distributed")

# Tiny runs, as comparable as runs can be: no crop/flip/cutout (their random draws depend on
# the batch's layout), lr 0.01 from lr 0 (see tests/helpers.py DATA_PARALLEL_TOLERANCE): the settings
# of the runs they are compared with (tests/helpers.py DATA_PARALLEL_SCRIPT).
RUN = (
    "--no-verify", "--width", "0.125", "--subset", "256", "--batch-size", "32", "--epochs", "2",
    "--lr", "0.01", "--lr-step-offset", "0", "--crop-padding", "0", "--no-flip", "--cutout", "0", "--verbose", "0",
)
WRITTEN = {"results.json", "history.csv", "dawnbench.tsv", "dawnbench.json", "accuracy_loss.png", "learning_rate.png"}
# A dead peer is noticed by the broken connection at once; the heartbeat bounds the rest.
QUICK = {"DAVIDNET_PEER_TIMEOUT_S": "10", "DAVIDNET_JOIN_TIMEOUT_S": "60", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """tiny_data's images (tests/helpers.py) as pickle batches: its 256 training images are
    these 260's first 256 (--subset 256), its 100 test images these."""
    return make_pickle_dir(tmp_path_factory.mktemp("cifar"), n_per_batch=52, n_test=100, seed=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One JAX compilation cache for the module: the runs share their compiled steps."""
    return os.environ.get("DAVIDNET_TEST_JAX_CACHE") or tmp_path_factory.mktemp("jax-cache")


@pytest.fixture(scope="module")
def runs(data_dir, cache, tmp_path_factory, two_device_runs):
    """Two processes started by hand with the variables the README shows, one of
    them killed in the second epoch, then the same run resumed by the launcher;
    and the one-process run of the same global batch on the same images, for
    comparison (tests/helpers.py DATA_PARALLEL_SCRIPT: on JAX its one-device run;
    on TensorFlow its two replicas of MirroredStrategy on two logical CPUs, for
    the two workers' ghost batch norms and tf.data pass). Process 1 is first
    given a results folder of its own, which must never appear: it writes
    nothing. (One scenario for all the checks: each launch costs the processes'
    start, join and compilation.)"""
    root = tmp_path_factory.mktemp("runs")
    args = [*RUN, "--devices", "all", "--data-dir", data_dir]
    two = start_processes([[*args, "--results-dir", root / "two"], [*args, "--results-dir", root / "process-1"]], cache)
    try:
        _wait_for_epochs(root / "two" / "results.json", 1, two)
        two[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, err = two[0].communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        for process in two:
            process.kill()
            process.communicate()
    stopped = {"returncode": two[0].returncode, "took": took, "stdout": out, "stderr": err}
    again = [*args, "--results-dir", root / "two", "--resume"]
    # JAX: as `srun --ntasks 2` starts it, jax.distributed.initialize reading the SLURM
    # variables itself; TensorFlow: by the launcher. (The by-hand variables started the run.)
    resumed = srun(again, cache) if BACKEND == "jax" else launch_cli(*again, cache=cache, env=QUICK)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    one = two_device_runs["1" if BACKEND == "jax" else "2"]
    results = {
        "one": {"history": [{"loss": loss, "accuracy": accuracy} for loss, accuracy in zip(one["loss"], one["accuracy"])]},
        "two": json.loads((root / "two" / "results.json").read_text()),
    }
    return root, stopped, resumed, results


def test_two_processes_train_as_one_run_and_process_0_alone_writes(runs):
    root, _, _, results = runs
    two = results["two"]
    assert two["status"] == "completed" and two["processes"] == 2 and two["devices"] == 2
    # Its files only: the other process wrote nothing, in its own folder or in this one (no
    # lock: taking it would have failed the run; no temporary files); the checkpoint is gone.
    assert not (root / "process-1").exists()
    assert set(os.listdir(root / "two")) == WRITTEN | {"model.keras"}
    # Epoch 1, before the kill: the one-process run's, within the data-parallel tolerance (the
    # bugs it catches, ghost batch norm or a wrong split, show in the first epoch already).
    tolerance = DATA_PARALLEL_TOLERANCE["jax"] if BACKEND == "jax" else SAME_REPLICAS_TOLERANCE
    one, two = results["one"]["history"], two["history"]
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], abs=tolerance)
    # Accuracy moves by whole images: 1/256 each.
    assert two[0]["accuracy"] == pytest.approx(one[0]["accuracy"], abs=2 / 256 + 1e-6)
    # Epoch 2, after the resume: weights and optimizer came back, the data order does not
    # (a resumed feed draws its permutations afresh): within 10%, as a one-process resume is
    # (tests/test_robustness.py).
    assert two[1]["loss"] == pytest.approx(one[1]["loss"], rel=0.1)
    assert two[1]["loss"] < two[0]["loss"], "the run should learn"


def test_a_killed_process_stops_the_others_in_one_line_and_the_same_launch_resumes(runs):
    """No launcher to end the others in the first launch: process 0 notices by itself."""
    _, stopped, resumed, results = runs
    assert stopped["returncode"] == 2, stopped["stdout"][-2000:] + stopped["stderr"][-3000:]
    assert stopped["took"] < 30, f"process 0 took {stopped['took']:.0f} s to notice"
    line = next(line for line in stopped["stderr"].splitlines() if line.startswith("error: "))
    assert line.startswith("error: another process of this run stopped (") and "run the same launch with --resume" in line
    assert resumed.stdout.count("results: ") == 1  # process 0's output only (srun's: each task's own)
    two = results["two"]
    assert two["status"] == "completed" and two["epochs_completed"] == 2
    assert two["resumed"] == [{"after_epoch": 1}]


@jax_only
def test_a_port_in_use_or_a_coordinator_out_of_reach_is_one_line(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _distribution_variables(monkeypatch, f"127.0.0.1:{port}", 0)
        with pytest.raises(ValueError, match=rf"port {port} of the coordinator address 127.0.0.1:{port} is in use on this host"):
            distribute.join_processes("all")
    _distribution_variables(monkeypatch, f"127.0.0.1:{port}", 1)  # closed now: nobody listens
    monkeypatch.setenv("DAVIDNET_JOIN_TIMEOUT_S", "1")
    with pytest.raises(ValueError, match=rf"could not reach the coordinator 127.0.0.1:{port} \(process 0\) within 1 s"):
        distribute.join_processes("all")
    _distribution_variables(monkeypatch, "no-such-host.invalid:1234", 1)
    with pytest.raises(ValueError, match="cannot resolve no-such-host.invalid"):
        distribute.join_processes("all")
    with pytest.raises(ValueError, match="give --devices all to train them as one run"):
        distribute.join_processes("1")


@jax_only
def test_a_process_whose_peers_never_come_stops_in_bounded_time():
    port = _free_ports(1)[0]
    env = {
        **os.environ, "DAVIDNET_JOIN_TIMEOUT_S": "2", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "0",
    }
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from davidnet import distribute; distribute.join_processes('all')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and time.monotonic() - start < 60
    assert f"error: the 2 processes did not all join within 2 s at 127.0.0.1:{port}" in done.stderr


@pytest.mark.one_backend("jax")
def test_the_launcher_stops_all_when_one_fails_and_exits_with_the_worst_code():
    """No backend: a command that fails in process 1 and would sleep in process 0."""
    command = (
        "import os, sys, time; i = os.environ['KERAS_DISTRIBUTION_PROCESS_ID']; "
        "print('process', i, os.environ['KERAS_DISTRIBUTION_NUM_PROCESSES'], os.environ['TF_CONFIG'], flush=True); "
        "sys.exit(3) if i == '1' else time.sleep(60)"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "experiments.launch", "--processes", "2", "--", sys.executable, "-c", command],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 128 + signal.SIGTERM  # process 0, stopped: the worst of 3 and 143
    assert time.monotonic() - start < 30
    assert done.stdout.startswith("process 0 2 {\"cluster\": {\"worker\": [\"127.0.0.1:")
    assert "launch: process 1 exited with code 3; stopping the other processes" in done.stderr
    assert "[process 1] process 1 2 " in done.stderr  # its last lines, shown as it failed


def start_processes(arguments, cache):
    """One process of the train CLI per list of `arguments`, with the variables each
    backend reads (KERAS_DISTRIBUTION_*, TF_CONFIG), as the README's by-hand commands."""
    ports = _free_ports(len(arguments))
    processes = []
    for index, args in enumerate(arguments):
        env = {
            **os.environ, **QUICK,
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(len(arguments)),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}),
        }
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.davidnet", "--compile-cache", str(cache), *map(str, args)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    return processes


def srun(args, cache):
    """The train CLI as the 2 tasks of a SLURM step on this host: the variables `srun
    --ntasks 2` sets, and none of ours. JAX takes its coordinator port from the job id
    (61440 + id % 4096), so the id is chosen to make that port a free one."""
    port = _free_slurm_port()
    env = {**os.environ, **QUICK, "SLURM_JOB_ID": str(port - 61440), "SLURM_STEP_NODELIST": "localhost",
           "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.davidnet", "--compile-cache", str(cache), *map(str, args)],
            cwd=ROOT, env={**env, "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for task in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    failed = next((i for i, p in enumerate(processes) if p.returncode), 0)
    return subprocess.CompletedProcess(processes[failed].args, processes[failed].returncode, *outputs[failed])


def _free_slurm_port():
    for port in range(61440 + os.getpid() % 4000, 65536):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 61440..65535 for a SLURM coordinator")


def _distribution_variables(monkeypatch, address, index):
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", address)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", str(index))


def _free_ports(count):
    from experiments.launch import free_ports

    return free_ports(count)


def _wait_for_epochs(results_json, epochs, processes, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            if json.loads(results_json.read_text())["epochs_completed"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)  # the kill must land in the next epoch, not after the run
    raise AssertionError(f"no epoch {epochs} within {timeout} s")
