"""A user's first run: the device line, the target the data calls for, the
learning rate in Keras's logs, history.csv and the plot, loading the saved
model in one's own code, and a machine with no data and no network."""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
import tomllib

import keras
import numpy as np
import pytest

from davidnet import hardware
from davidnet.schedules import PiecewiseLinear
from davidnet.training import Config, resolve_target, train
from pipelines import tfds_source
from pipelines.cifar10 import CLASS_NAMES, Cifar10
from tests.helpers import ROOT, TINY, run_python, tiny_data

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


@pytest.fixture(scope="module")
def jpeg_run(tmp_path_factory):
    """One tiny run on data that says it is the JPEG copy, default target, its
    model saved, a History attached: (results, what it printed, folder, History)."""
    data = tiny_data(n_train=128, n_test=50)
    jpeg = Cifar10(data.x_train, data.y_train, data.x_test, data.y_test, "a JPEG folder", "jpeg", CLASS_NAMES)
    folder = tmp_path_factory.mktemp("jpeg-run")
    history = keras.callbacks.History()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = train(Config(epochs=3, **{**TINY, "save_model": True}), jpeg, folder, callbacks=[history])
    return results, printed.getvalue(), folder, history


def test_every_run_says_backend_devices_and_precision_before_it_trains(jpeg_run):
    _, out, _, _ = jpeg_run
    line = next(line for line in out.splitlines() if line.startswith("backend: "))
    assert keras.backend.backend() in line and "precision: float32" in line and "using 1" in line
    assert "devices: 1 cpu" in line or "devices: 2 cpu" in line  # the suite's CPU devices
    assert out.index("backend: ") < out.index("target: ") < out.index("epoch   1/3")


def test_a_gpu_the_backend_cannot_see_is_one_warning_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    monkeypatch.setattr(hardware, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "no-driver"),))
    assert hardware.unseen_gpu_warning() is None  # no GPU here: nothing to say
    (tmp_path / "driver").mkdir()  # what /proc/driver/nvidia is on a machine with the driver
    monkeypatch.setattr(hardware, "NVIDIA_DRIVER_PATHS", (str(tmp_path / "driver"),))
    warning = hardware.unseen_gpu_warning()
    backend = keras.backend.backend()
    assert warning.startswith(f"warning: this machine has an NVIDIA GPU but {backend} sees only cpu")
    assert f"requirements-{backend}-cuda.txt" in warning and "\n" not in warning
    assert (ROOT / f"requirements-{backend}-cuda.txt").is_file()


def test_the_target_defaults_to_the_datas_equivalent_of_94_percent_and_says_so(jpeg_run):
    results, out, folder, _ = jpeg_run
    assert results["target"] == 0.91 and "JPEG copy's equivalent" in results["target_note"]
    assert "target: test accuracy 0.91, the JPEG copy's equivalent of DAWNBench's 0.94" in out
    saved = json.loads((folder / "results.json").read_text())
    assert saved["target"] == 0.91 and saved["config"]["target"] is None
    png = tiny_data(16, 16)
    assert resolve_target(Config(), png) == (0.94, "target: test accuracy 0.94, DAWNBench's bar (--target to change)")
    assert resolve_target(Config(target=0.5), png) == (0.5, "target: test accuracy 0.5 (--target)")
    with pytest.raises(ValueError, match="target must be > 0 and <= 1"):
        Config(target=94)


def test_the_learning_rate_is_in_keras_logs_history_and_history_csv(jpeg_run):
    results, _, folder, history = jpeg_run
    steps = 128 // TINY["batch_size"]
    last_of_each_epoch = [lr for step, lr in results["lr_history"] if (step + 1) % steps == 0]
    assert len(last_of_each_epoch) == 3 and max(last_of_each_epoch) > 0  # not a column of zeros
    assert history.history["learning_rate"] == pytest.approx(last_of_each_epoch)
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx(last_of_each_epoch)
    assert [float(row["val_accuracy"]) for row in rows] == pytest.approx([r["val_accuracy"] for r in results["history"]])


def test_our_schedules_put_the_learning_rate_in_the_logs_of_a_users_own_fit():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    schedule = PiecewiseLinear([0, 1, 2], [0.0, 0.1, 0.0])
    history = model.fit(np.ones((32, 4)), np.zeros((32, 1)), batch_size=8, epochs=2, verbose=0, callbacks=[schedule])
    # Each epoch's last learning rate, as Keras's own LearningRateScheduler logs it.
    assert history.history["learning_rate"] == pytest.approx([0.075, 0.025])


def test_the_plot_has_whole_epochs_a_title_the_target_and_accuracy_against_seconds(tmp_path):
    from davidnet import results as results_module

    drawn = {}
    real = results_module.save_figure

    def keep(fig, path, compact=False):
        drawn["axes"] = fig.axes
        drawn["title"] = fig._suptitle.get_text()
        real(fig, path, compact)

    history = [
        {"epoch": e, "loss": 2.0 / e, "accuracy": 0.2 * e, "val_loss": 2.1 / e, "val_accuracy": 0.25 * e, "train_s_total": 1.5 * e}
        for e in (1, 2, 3)
    ]
    results_module.save_figure = keep
    try:
        results_module.plot_history(history, tmp_path / "a.png", title="run-1: CPU (x86_64), jax, CIFAR-10", target=0.6)
    finally:
        results_module.save_figure = real
    accuracy, loss, seconds = drawn["axes"]
    assert drawn["title"] == "run-1: CPU (x86_64), jax, CIFAR-10"
    for ax in (accuracy, loss):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert any(list(line.get_ydata()) == [0.6, 0.6] for line in accuracy.lines)  # the target line
    test_curve = seconds.lines[0]
    assert list(test_curve.get_xdata()) == [1.5, 3.0, 4.5] and list(test_curve.get_ydata()) == [0.25, 0.5, 0.75]
    assert (tmp_path / "a.png").stat().st_size > 0


def test_a_saved_model_loads_in_ones_own_code_with_davidnet_load_model(jpeg_run, tmp_path):
    folder = jpeg_run[2]
    x = tiny_data().x_test[:8]
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, davidnet\n"
        "model = davidnet.load_model(sys.argv[1])\n"
        "np.save(sys.argv[2], model.predict(np.load(sys.argv[3]), verbose=0))\n"
        "assert model.optimizer is not None and type(model.optimizer).__name__ == 'TorchSGD'\n"
    )
    proc = run_python(code, folder / "model.keras", tmp_path / "p.npy", tmp_path / "x.npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from davidnet import load_model

    expected = load_model(folder / "model.keras", compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-5, atol=1e-5)


def test_no_data_and_no_network_fails_in_seconds_with_one_line_and_no_folder(tmp_path):
    if tfds_source._unreachable(tfds_source._TFDS_URL, timeout=3) is None:
        pytest.skip("the dataset host answers here: this test never downloads")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TFDS_DATA_DIR": str(tmp_path / "tfds"), "PYTHONPATH": str(ROOT)}
    env.pop("CIFAR10_DIR", None)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.davidnet", "--epochs", "20", "--results-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and elapsed < 15, (elapsed, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no CIFAR-10 on this machine"), proc.stderr
    assert "--data-dir" in lines[0] and "CIFAR10_DIR" in lines[0] and "train/<class>" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "tfds").exists()  # no partial download


def test_config_loads_without_keras_and_agrees_with_the_augmentation():
    code = "import sys, davidnet.config; sys.exit([m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules] or 0)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from davidnet.config import CUTOUT_MODES
    from pipelines import augment

    assert CUTOUT_MODES == augment.CUTOUT_MODES


def test_the_package_installs_what_requirements_txt_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = [line for line in pinned if line and not line.startswith("pytest")]
    assert sorted(project["dependencies"]) == sorted(pinned)
    extras = project["optional-dependencies"]
    for extra, backend in (("jax-cuda", "jax"), ("tensorflow-cuda", "tensorflow")):
        lines = (ROOT / f"requirements-{backend}-cuda.txt").read_text().splitlines()
        assert extras[extra] == [line for line in lines if line and not line.startswith(("#", "-r"))]
        version = next(p for p in pinned if p.startswith(f"{backend}=="))
        assert extras[extra][0].endswith(version.removeprefix(backend))  # the GPU build at the pinned version
    for script in project["scripts"].values():
        module, function = script.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))


@pytest.mark.parametrize("study", ["ablations", "resnet44", "lr_schedules", "fast_ablation", "augmentations"])
def test_a_study_without_its_data_fails_with_one_line_and_makes_no_folder(study, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"experiments.{study}").main
    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "study")])
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "nowhere" in errors[0]
    assert not (tmp_path / "study").exists()


def test_predict_without_its_data_makes_no_folder(tmp_path, capsys):
    from experiments.predict import main

    model = tmp_path / "model.keras"
    model.write_bytes(b"not read before the data")
    with pytest.raises(SystemExit) as e:
        main(["--model", str(model), "--data-dir", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "out")])
    assert e.value.code == 2 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_distribution_ships_every_package_and_data_file(tmp_path):
    # What `pip install .` would install: every package with its subpackages, the recipes and the tables.
    setuptools = pytest.importorskip("setuptools")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(ROOT), include=project["packages"]["find"]["include"]))
    on_disk = {
        str(p.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("davidnet", "pipelines", "experiments") for p in (ROOT / top).glob("**/__init__.py")
    }
    assert found == on_disk
    for package, patterns in project["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} matches nothing"
    assert "davidnet.schedules" in found and "davidnet" in project["package-data"]
