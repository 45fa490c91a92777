"""The run's folder: one run per folder, a lock while it lives, resume only as the
same run, SIGTERM as Ctrl-C, a full disk or a damaged checkpoint as one line."""

import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import keras
import pytest

from davidnet import interrupts, run_folder
from davidnet.results import WriteError
from davidnet.run_folder import ResumeError, RunFolderError
from davidnet.training import Config, train
from tests.datasets import make_image_dir
from tests.helpers import ROOT, TINY, run_main, tiny_data

# The same on either backend (tests/conftest.py). In the JAX run: this file costs about as
# much on either (33 s of CPU on JAX, 32 s on TensorFlow, 2-core CPU), and since the study,
# CLI and resume tests moved to the TensorFlow run, that run is the longer one.
pytestmark = pytest.mark.one_backend("jax")

DATA = tiny_data()
# The runs that train share these settings (epochs included: the learning rate
# schedule is a table in the compiled step), so that under JAX (plain pytest) their
# programs compile once and the others find them in the compilation cache.
CONFIG = Config(epochs=3, **TINY)


class AtEpochEnd(keras.callbacks.Callback):
    def __init__(self, epoch, action):
        super().__init__()
        self.epoch, self.action = epoch, action

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.action()


def snapshot(folder):
    """Every file under `folder` with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run of CONFIG's 3 epochs stopped by SIGTERM while it wrote epoch 1's checkpoint: (folder, config)."""
    from davidnet import checkpoint

    folder = tmp_path_factory.mktemp("interrupted") / "run"
    config = CONFIG
    write = checkpoint.write_bytes_atomic

    def signalled_write(path, data):  # a scheduler's SIGTERM lands mid-write
        os.kill(os.getpid(), signal.SIGTERM)
        write(path, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "write_bytes_atomic", signalled_write)
        results = train(config, DATA, folder)
    assert (results["status"], results["signal"], results["epochs_completed"]) == ("interrupted", "SIGTERM", 1)
    assert interrupts.exit_code() == 128 + signal.SIGTERM
    return folder, config


def test_sigterm_stops_a_run_like_ctrl_c_after_its_writes_with_its_checkpoint(interrupted):
    folder, _ = interrupted
    saved = json.loads((folder / "results.json").read_text())
    assert saved["status"] == "interrupted" and saved["signal"] == "SIGTERM" and saved["epochs_completed"] == 1
    state = run_folder.read_state(folder)  # checked: whole, and names its weights
    assert state["epoch"] == 1 and state["results"]["history"] == saved["history"]
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not (folder / ".lock").exists()  # released
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with it


def test_a_folder_holding_another_run_is_refused_and_overwrite_replaces_only_its_files(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoint").mkdir(parents=True)
    old = {"status": "completed", "epochs_completed": 4, "history": []}
    (folder / "results.json").write_text(json.dumps(old))
    (folder / "notes.txt").write_text("mine")
    (folder / "checkpoint" / "notes.txt").write_text("mine too")
    (folder / "checkpoint" / "epoch-0004.weights.h5").write_bytes(b"an older run's")
    before = snapshot(folder)
    with pytest.raises(RunFolderError, match=r"holds a completed run \(4 epochs\): choose another --results-dir, or pass --overwrite"):
        train(CONFIG, DATA, folder)
    assert snapshot(folder) == before  # refused: nothing touched
    results = train(CONFIG, DATA, folder, overwrite=True)
    assert results["status"] == "completed"
    assert json.loads((folder / "results.json").read_text())["epochs_completed"] == CONFIG.epochs
    # The run's own checkpoint files are gone; what it did not write stays.
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_run_holds_its_folder_and_a_dead_holders_lock_is_free(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom davidnet import run_folder\nwith run_folder.holding(sys.argv[1]):\n"
         "    print('held', flush=True)\n    time.sleep(120)", str(folder)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        in_use = rf"results folder {re.escape(str(folder))} is in use by another run \(pid {holder.pid} on .+\): wait"
        with pytest.raises(RunFolderError, match=in_use):
            run_folder.check_fresh(folder)  # what the command line asks before loading data
        with pytest.raises(RunFolderError, match=in_use):
            train(CONFIG, DATA, folder)
    finally:
        holder.kill()  # SIGKILL: its lock file stays, its lock does not
        holder.wait()
    assert (folder / ".lock").exists()
    run_folder.check_fresh(folder)
    with run_folder.holding(folder):
        pass
    assert not (folder / ".lock").exists()


def test_ctrl_c_before_the_first_epoch_ends_leaves_a_folder_the_same_command_reuses(tmp_path, capsys):
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # The signal noted while a C extension runs, surfacing as another error.
            with interrupts.deferred(raise_after=False):
                os.kill(os.getpid(), signal.SIGINT)
            raise SystemError("error return without exception set")

    folder = tmp_path / "run"
    results = train(CONFIG, DATA, folder, callbacks=[Interrupt()])
    assert (results["status"], results["epochs_completed"]) == ("interrupted", 0)
    assert "interrupted before the first epoch ended: nothing to resume; run the same command again" in capsys.readouterr().out
    with pytest.raises(ResumeError, match="stopped before its first epoch ended; run the same command without --resume"):
        run_folder.read_state(folder)
    run_folder.check_fresh(folder)  # not refused: nothing there to keep


def test_a_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="devices"):
        train(Config(epochs=1, devices="64", **TINY), DATA, tmp_path / "new" / "run")
    assert not (tmp_path / "new" / "run").exists()


@pytest.fixture
def file_size_limit():
    """set(n): writes beyond n bytes fail (EFBIG), as on a full disk; undone after the test."""
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill the process
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, previous_limit[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
    signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_full_disk_is_one_line_and_keeps_the_run_resumable(tmp_path, file_size_limit):
    folder = tmp_path / "run"
    config = dataclasses.replace(CONFIG, save_model=True)
    with pytest.raises(WriteError) as error:  # mid-run: epoch 2's checkpoint
        train(config, DATA, folder, callbacks=[AtEpochEnd(1, lambda: file_size_limit(1000))])
    file_size_limit(resource.RLIM_INFINITY)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"could not write {folder}/checkpoint/epoch-0002.weights.h5: File too large")
    assert message.endswith(f"the results up to epoch 1 are whole in {folder}: free some space, then continue with --resume --results-dir {folder}")
    assert json.loads((folder / "results.json").read_text())["epochs_completed"] == 1
    assert run_folder.read_state(folder)["epoch"] == 1
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]

    class FullAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            file_size_limit(1000)

    with pytest.raises(WriteError, match=rf"could not write {re.escape(str(folder))}/model.keras: File too large; free some space, then finish it with --resume"):
        train(config, DATA, folder, resume=True, callbacks=[FullAtTheEnd()])  # the final save
    file_size_limit(resource.RLIM_INFINITY)
    assert not (folder / "model.keras").exists()
    assert json.loads((folder / "results.json").read_text())["status"] == "running"
    results = train(config, DATA, folder, resume=True)  # nothing left to train: it saves and finishes
    assert results["status"] == "completed" and [r["epoch"] for r in results["history"]] == [1, 2, 3]
    assert (folder / "model.keras").stat().st_size > 1000 and not (folder / "checkpoint").exists()


DAMAGE = {
    "state.json not JSON": (lambda f: (f / "checkpoint/state.json").write_bytes(b"\x00\xff{garbage"), "state.json cannot be read"),
    "state.json a list": (lambda f: (f / "checkpoint/state.json").write_text("[1, 2]"), "state.json holds list, expected an object"),
    "state.json epoch text": (lambda f: _edit_state(f, epoch="one"), "has epoch 'one', expected a whole number >= 1"),
    "weights path outside": (lambda f: _edit_state(f, weights="../../x.weights.h5"), "names weights '../../x.weights.h5'"),
    "weights missing": (lambda f: (f / "checkpoint/epoch-0001.weights.h5").unlink(), "epoch-0001.weights.h5, named by state.json, is missing"),
    "unknown setting": (lambda f: _edit_config(f, frobnicate=3), "settings this version does not know (frobnicate)"),
    "refused value": (lambda f: _edit_config(f, lr=-1.0), "settings this version refuses: lr"),
    "other backend": (lambda f: _edit_results(f, backend="torch"), "trained on the torch backend"),
    "other data": (lambda f: _edit_results(f, data={"location": "/elsewhere"}), "trained on the data in /elsewhere"),
    "weights truncated": (lambda f: _truncate(f / "checkpoint/epoch-0001.weights.h5"), "epoch-0001.weights.h5 does not load into this run's model"),
    "weights garbage": (lambda f: (f / "checkpoint/epoch-0001.weights.h5").write_bytes(os.urandom(5000)), "epoch-0001.weights.h5 does not load"),
}


def _edit_state(folder, **changes):
    path = folder / "checkpoint/state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edit_results(folder, **changes):
    path = folder / "checkpoint/state.json"
    state = json.loads(path.read_text())
    state["results"].update(changes)
    path.write_text(json.dumps(state))


def _edit_config(folder, **changes):
    path = folder / "checkpoint/state.json"
    state = json.loads(path.read_text())
    state["results"]["config"].update(changes)
    path.write_text(json.dumps(state))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_one_line_and_nothing_is_deleted(interrupted, tmp_path, damage):
    source, config = interrupted
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    spoil, expected = DAMAGE[damage]
    spoil(folder)
    before = snapshot(folder)
    data = DATA if damage != "other data" else _located(DATA, "/here")
    with pytest.raises(ResumeError) as error:
        train(config, data, folder, resume=True)
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert snapshot(folder) == before


def _located(data, where):
    return dataclasses.replace(data, location=where)


def test_the_same_command_with_resume_added_continues_and_other_flags_are_named(tmp_path, capsys, monkeypatch):
    from davidnet.callbacks import EpochReport

    # CONFIG's run on the command line: 256 training images and 100 test images, as
    # DATA, so that JAX finds its programs compiled.
    image_dir = make_image_dir(tmp_path / "cifar", n_train_per_class=26, n_test_per_class=10)
    folder = tmp_path / "run"
    command = ["--results-dir", str(folder), "--epochs", "3", "--subset", "256", "--width", "0.125", "--batch-size", "32",
               "--verbose", "0", "--no-save-model"]
    report = EpochReport.on_epoch_end

    def stopped_after_one(self, epoch, logs=None):  # a scheduler's SIGTERM after epoch 1
        report(self, epoch, logs)
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(EpochReport, "on_epoch_end", stopped_after_one)
        code, out, _ = run_main(capsys, *command, "--data-dir", str(image_dir))
    assert code == 143 and f"interrupted after epoch 1; continue with --resume --results-dir {folder}" in out
    code, _, err = run_main(capsys, *command, "--data-dir", str(image_dir))  # the same command again, without --resume
    assert code == 2 and err == (
        f"error: results folder {folder} holds a resumable run (checkpoint after epoch 1): continue it with --resume, "
        "choose another --results-dir, or pass --overwrite to replace it\n"
    )
    code, _, err = run_main(capsys, *command, "--lr", "0.3", "--cutout", "0", "--resume")
    assert code == 2 and err == (
        f"error: cannot resume {folder} with other settings: --lr 0.3 was 0.4 in the run being resumed; "
        "--cutout 0 was 8 in the run being resumed "
        "(resume with the run's own settings, or start a new run in another --results-dir)\n"
    )
    code, _, err = run_main(capsys, *command, "--data-dir", str(tmp_path), "--resume")
    assert code == 2 and f"the run being resumed trained on {image_dir.resolve()}; drop --data-dir to resume on it" in err
    # The same command with --resume added, --data-dir left out: the run's own data.
    code, out, err = run_main(capsys, *command, "--verbose", "2", "--resume")  # verbose may change
    assert code == 0, err
    results = json.loads((folder / "results.json").read_text())
    assert results["resumed"] == [{"after_epoch": 1}] and results["epochs_completed"] == 3
    assert results["data"]["location"] == str(image_dir.resolve())
    code, _, err = run_main(capsys, *command, "--resume")
    assert code == 2 and err == f"error: nothing to resume in {folder}: it already completed\n"


@pytest.mark.parametrize("content, held", [
    ({"status": "interrupted", "epochs_completed": 2}, "an interrupted run (2 epochs)"),
    ({"status": "out_of_memory", "epochs_completed": 1}, "an out_of_memory run (1 epoch)"),
    ({"status": "interrupted", "epochs_completed": 0}, None),  # stopped before its first epoch: reused
    ([1, 2], "a results.json that is not a run's"),
    ("{not json", "a results.json that cannot be read"),
])
def test_what_a_folder_holds_is_said_in_its_refusal(tmp_path, content, held):
    (tmp_path / "results.json").write_text(content if isinstance(content, str) else json.dumps(content))
    assert run_folder.describe_run(tmp_path) == held
    if held:
        with pytest.raises(RunFolderError, match=re.escape(f"holds {held}: choose another --results-dir")):
            run_folder.check_fresh(tmp_path)
    else:
        run_folder.check_fresh(tmp_path)
