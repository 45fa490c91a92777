"""Nothing lost, clear errors: kills, resume, atomic results, reproducibility, config files."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from davidnet.training import Config, ResumeError, train
from tests.datasets import make_image_dir
from tests.helpers import ROOT, TINY, run_main, tiny_data

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return make_image_dir(tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=5)


def start_cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.davidnet", "--compile-cache", os.environ.get("DAVIDNET_TEST_JAX_CACHE", ""), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epochs(results_json, epochs, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            if json.loads(results_json.read_text())["epochs_completed"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet; a half-written file would fail json.loads below, at the end
        time.sleep(0.05)
    raise AssertionError(f"{results_json} did not reach {epochs} epochs in {timeout}s")


# In the JAX run (the rest of this file is in the TensorFlow run), to even out the two runs'
# times: a fresh process starts in half the time on JAX (3.8 s against 7.3 s to import Keras).
@pytest.mark.one_backend("jax")
def test_sigkill_mid_run_then_resume_finishes_with_the_complete_history(image_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--epochs", "6", "--width", "0.125", "--batch-size", "20", "--target", "0.3", "--verbose", "0",
            "--data-dir", str(image_dir), "--results-dir", str(out)]
    process = start_cli(*args)
    wait_for_epochs(out / "results.json", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    killed = json.loads((out / "results.json").read_text())  # whole JSON, whatever the moment of the kill
    assert killed["status"] == "running" and killed["epochs_completed"] >= 2
    kept = killed["history"]

    # The kill is a real one, from outside; the resume needs no fresh interpreter
    # (its start-up would cost more than the epochs): the CLI in-process.
    code, stdout, err = run_main(capsys, "--resume", "--data-dir", str(image_dir), "--results-dir", str(out))
    assert code == 0, stdout[-2000:] + err[-2000:]
    assert "resuming" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed"
    assert [r["epoch"] for r in results["history"]] == [1, 2, 3, 4, 5, 6]
    resumed_after = results["resumed"][0]["after_epoch"]
    assert resumed_after >= 2
    # The epochs before the kill are the ones the killed run recorded, timings included.
    assert results["history"][:resumed_after] == kept[:resumed_after]
    # The schedule went on from the checkpoint's step: one LR per step, steps 0..N-1 once each.
    steps = [step for step, _ in results["lr_history"]]
    assert steps == list(range(6 * results["steps_per_epoch"]))
    # Time actually spent training, summed over both sessions.
    assert results["train_s"] == pytest.approx(results["history"][-1]["train_s_total"])
    assert results["train_s"] == pytest.approx(sum(r["train_s"] for r in results["history"]))
    assert not (out / "checkpoint").exists()  # finished: model.keras holds the result
    assert (out / "model.keras").exists()


def test_resume_errors_are_one_line(image_dir, tmp_path, capsys):
    with pytest.raises(ResumeError, match="nothing to resume"):
        train(Config(epochs=1, **TINY), tiny_data(), tmp_path / "empty", resume=True)
    code, _, err = run_main(capsys, "--resume", "--data-dir", str(image_dir), "--results-dir", str(tmp_path / "none"))
    assert code == 2 and "nothing to resume" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "--resume", "--epochs", "3")
    assert code == 2 and "--resume needs --results-dir" in err


WRITER = """
import sys
sys.path.insert(0, {root!r})
from davidnet.results import write_results
history = [{{"epoch": i, "train_s_total": float(i), "val_accuracy": i / 1000, "loss": 1.0, "wall_s": float(i)}} for i in range(1, 3000)]
i = 0
while True:
    i += 1
    if i == 2:
        print("ready", flush=True)  # one complete set written: now kill at any instant
    write_results({out!r}, {{"status": "running", "n": i, "compile_s": 0.0, "history": history, "lr_history": []}}, plots=False)
"""


def test_killing_a_writer_mid_write_never_leaves_a_half_written_file(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), out=str(tmp_path)))
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31):
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        results = json.loads((tmp_path / "results.json").read_text())
        assert len(results["history"]) == 2999
        tsv = (tmp_path / "dawnbench.tsv").read_text()
        assert tsv.endswith("\n") and len(tsv.splitlines()) == 3000
        assert len(json.loads((tmp_path / "dawnbench.json").read_text())) == 2999


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """Four tiny runs of 3 epochs, mixup on (its draws are seeded too), for the
    resume and the reproducibility tests: "full", uninterrupted, seed 3;
    "interrupted", the same run stopped by Ctrl-C right after epoch 2's
    checkpoint; "resumed", that run resumed; "other", the same settings with
    seed 4. One scenario for both tests: each train() costs a trace or a compile
    of its steps, more than its epochs."""
    from davidnet import callbacks

    root = tmp_path_factory.mktemp("seeded")
    data = tiny_data()
    config = Config(epochs=3, seed=3, mixup=0.2, **TINY)
    runs = {"full": train(config, data, root / "full")}
    original = callbacks.EpochReport.on_epoch_end

    def interrupt_after_two(self, epoch, logs=None):  # Ctrl-C right after epoch 2's checkpoint
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callbacks.EpochReport, "on_epoch_end", interrupt_after_two)
        runs["interrupted"] = train(config, data, root / "split")
    runs["checkpointed"] = (root / "split" / "checkpoint" / "state.json").exists()
    runs["resumed"] = train(config, data, root / "split", resume=True)
    runs["other"] = train(dataclasses.replace(config, seed=4), data, root / "other")
    return runs


def test_resume_in_process_restores_model_optimizer_and_schedule(seeded_runs):
    full, interrupted, resumed = seeded_runs["full"], seeded_runs["interrupted"], seeded_runs["resumed"]
    assert interrupted["status"] == "interrupted" and interrupted["epochs_completed"] == 2
    assert seeded_runs["checkpointed"]
    assert resumed["status"] == "completed"
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == interrupted["history"]
    assert resumed["lr_history"] == full["lr_history"]
    assert resumed["resumed"] == [{"after_epoch": 2}]
    # Weights and optimizer came back: epoch 3's loss is the uninterrupted run's
    # (up to the data order and the mixup draws after a resume), far below the
    # ~2.0 of a fresh model.
    assert resumed["history"][2]["loss"] == pytest.approx(full["history"][2]["loss"], rel=0.1)


def test_same_seed_gives_the_same_history(seeded_runs):
    # Two runs of seed 3: the uninterrupted one, and the one stopped after epoch 2.
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    first, second = ([{k: r[k] for k in keys} for r in seeded_runs[name]["history"][:2]] for name in ("full", "interrupted"))
    assert len(first) == 2 and first == second
    other = seeded_runs["other"]
    assert [r["loss"] for r in other["history"]] != [r["loss"] for r in seeded_runs["full"]["history"]]


def test_cli_config_file_and_its_errors(image_dir, tmp_path, capsys):
    good = tmp_path / "recipe.toml"
    good.write_text('epochs = 1\nwidth = 0.125\nbatch_size = 25\nschedule = "onecycle"\nsave_model = false\n')
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "--config", str(good), "--lr", "0.05", "--data-dir", str(image_dir), "--results-dir", str(out), "--verbose", "0")
    assert code == 0, err[-2000:]
    config = json.loads((out / "results.json").read_text())["config"]
    assert (config["epochs"], config["schedule"], config["batch_size"], config["lr"]) == (1, "onecycle", 25, 0.05)
    for text, message in [('epochz = 1\n', "unknown setting 'epochz'"), ('epochs = "1"\n', "expected int, got str"),
                          ('epochs = 0\n', "epochs must be > 0"), ('schedule = "cosine"\n', "schedule must be one of")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        code, _, err = run_main(capsys, "--config", str(bad), "--data-dir", str(image_dir), "--results-dir", str(tmp_path / "r"))
        assert code == 2 and message in err, err[-1000:]
        assert "Traceback" not in err


def test_a_training_set_too_big_for_the_device_falls_back_or_stops_with_the_sizes(capsys):
    from pipelines.feeds import DeviceFeed, make_feed

    x, y = tiny_data().x_train, tiny_data().y_train  # 256 images: 786 KiB
    feed = make_feed("auto", x, y, 32, free_bytes=1 << 20)
    if keras.backend.backend() == "tensorflow":
        assert not isinstance(feed, DeviceFeed)  # tf.data is the default there anyway
    else:
        assert not isinstance(feed, DeviceFeed)
        assert "streaming it with tf.data" in capsys.readouterr().out
    with pytest.raises(MemoryError, match=r"needs 1 MiB and the accelerator has 1 MiB free: use --pipeline tfdata"):
        make_feed("device", x, y, 32, free_bytes=1 << 20)
    assert isinstance(make_feed("device", x, y, 32, free_bytes=1 << 30), DeviceFeed)


def test_out_of_memory_names_the_batch_size_and_keeps_the_results(tmp_path, monkeypatch, image_dir, capsys):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 34359738368 bytes.")

    monkeypatch.setattr(keras.Model, "fit", out_of_memory)
    with pytest.raises(MemoryError, match=r"at batch size 32 x 4 copies = 128 images per step: lower --batch-size"):
        train(Config(epochs=1, copies=4, **TINY), tiny_data(), tmp_path / "oom")
    assert json.loads((tmp_path / "oom" / "results.json").read_text())["status"] == "out_of_memory"
    code, _, err = run_main(capsys, "--epochs", "1", "--width", "0.125", "--batch-size", "32",
                            "--data-dir", str(image_dir), "--results-dir", str(tmp_path / "cli"))
    assert code == 2 and "error: out of memory on the accelerator at batch size 32" in err
    assert "Traceback" not in err
