"""The two studies end to end, tiny: `experiments.resnet44` and `experiments.ablations` with --smoke.

Each study runs in-process on synthetic data; the tests read what it leaves in
its folder (table.csv, plots, config.json, run folders), rerun it to see the
finished runs skipped, and feed it a config file.

ResNet-44's 44 layers cost 20-30 s to compile per run on a loaded 2-core CPU
(the smoke trains two, M = 0 and M = 2: about 75 s of the TensorFlow run), and
the study's plumbing is the same at any depth: the study trains ResNet-8 (He
et al.'s family with one block per stage, the same layers) under the
"resnet44" name, and the test checks apart, by building it, that the settings
the smoke recorded make the real ResNet-44.
"""

import contextlib
import csv
import dataclasses
import functools
import importlib.util
import json

import pytest
from PIL import Image

from davidnet import models
from davidnet.builders import build_model
from davidnet.config import Config
from experiments import ablations, resnet44
from tests.conftest import host_kernel_init

# The same on either backend (tests/conftest.py). TensorFlow: these models' shapes are compiled
# nowhere else in the suite, and on JAX compiling them cold cost 2.5x TensorFlow's tracing.
pytestmark = pytest.mark.one_backend("tensorflow")

RESNET_CIFAR = models.resnet_cifar  # the real one, whatever a test swaps in


@contextlib.contextmanager
def shallow_resnet():
    """ResNet-8 wherever the "resnet44" model is built (davidnet.builders calls
    `models.resnet_cifar`, ResNet-44 by default)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "resnet_cifar", functools.partial(RESNET_CIFAR, depth=8))
        yield


def params(build):
    """build().count_params(), its kernels drawn with NumPy (no XLA compile per kernel shape on JAX)."""
    with host_kernel_init():
        return build().count_params()


def smoke(study_dir, *flags):
    return ["--smoke", "--results-dir", str(study_dir), "--compile-cache", "", *flags]


def read_table(study_dir):
    with open(study_dir / "table.csv") as f:
        return list(csv.DictReader(f))


def run_mtimes(study_dir):
    return {p.parent.name: p.stat().st_mtime_ns for p in study_dir.glob("runs/*/results.json")}


def assert_png(path):
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


def exit_code(main, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_resnet44_study_compares_each_m_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    # The real --smoke (its M values, epochs and width), on the ResNet-8 stand-in.
    study = tmp_path / "resnet44"
    with shallow_resnet():
        assert resnet44.main(smoke(study)) == 0

    rows = read_table(study)
    assert [row["M"] for row in rows] == ["0", "2"]
    for row in rows:
        assert row["status"] == "completed" and row["reached"] in ("0/1", "1/1")
        assert 0.0 <= float(row["final_error"]) <= 1.0 and float(row["train_s"]) > 0
    assert_png(study / "validation_error.png")
    assert json.loads((study / "config.json").read_text())["m_values"] == "0,2"
    runs = [json.loads((study / "runs" / name / "results.json").read_text()) for name in ("m0-seed0", "m2-seed0")]
    plain, copies = (run["config"] for run in runs)
    # The run built the "resnet44" model at the smoke's width (here the stand-in); the settings it
    # recorded build, without the stand-in, ResNet-44 at width 0.125.
    resnet44_params = params(lambda: RESNET_CIFAR(44, width=0.125))
    assert plain["model"] == "resnet44"
    assert runs[0]["model_params"] == params(lambda: RESNET_CIFAR(8, width=0.125)) != resnet44_params
    assert params(lambda: build_model(Config(**plain))) == resnet44_params
    assert (plain["copies"], plain["cutout"], copies["copies"], copies["cutout"]) == (1, 0, 2, 16)
    # Hoffer et al.'s regime, 81 and 122 of 164 epochs, scaled to the smoke's 2.
    assert copies["schedule"] == "step" and copies["milestones"] == f"{2 * 81 / 164:g},{2 * 122 / 164:g}"
    assert copies["crop_mode"] == "constant" and copies["cutout_mode"] == "centre" and not copies["nesterov"]

    before = run_mtimes(study)
    capsys.readouterr()
    assert resnet44.main(smoke(study)) == 0
    out = capsys.readouterr().out
    assert "m0-seed0: already completed, skipped" in out and "m2-seed0: already completed, skipped" in out
    assert run_mtimes(study) == before

    # A config file's settings win over --smoke's defaults: M = 2 only, already trained.
    config = tmp_path / "study.toml"
    config.write_text('m_values = "2"\n')
    assert resnet44.main(smoke(study, "--config", str(config))) == 0
    assert [row["M"] for row in read_table(study)] == ["2"]
    assert "[1/1] m2-seed0: already completed, skipped" in capsys.readouterr().out
    assert run_mtimes(study) == before

    # Another recipe in the same folder would be skipped as "finished": refused instead,
    # before config.json is overwritten.
    assert resnet44.main(smoke(study, "--epochs", "3")) == 2
    assert "was trained with other settings (epochs 2 there, 3 now" in capsys.readouterr().err
    assert json.loads((study / "config.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("flags, message", [
    (["--m-values", "0,x"], "--m-values: expected a comma list of distinct integers >= 0"),
    (["--m-values", "2,2"], "distinct integers"),
    (["--milestones", "5"], "milestones must increase and lie between 0 and the 2 epochs"),
    (["--seeds", ""], "--seeds: expected a comma list of distinct integers >= 0 (at least one)"),
])
def test_resnet44_refuses_bad_settings_with_exit_2(tmp_path, capsys, flags, message):
    assert exit_code(resnet44.main, smoke(tmp_path, *flags)) == 2
    assert message in capsys.readouterr().err


def test_unknown_config_keys_exit_2(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text('m_list = "0,2"\n')
    assert exit_code(resnet44.main, smoke(tmp_path, "--config", str(config))) == 2
    assert "unknown setting 'm_list'" in capsys.readouterr().err
    config.write_text("lrs = 0.1\n")
    assert exit_code(ablations.main, smoke(tmp_path, "--config", str(config))) == 2
    assert "unknown setting 'lrs'" in capsys.readouterr().err


def test_ablations_configurations_change_one_thing_each():
    configs = ablations.configurations(ablations.Settings(), ablations.RECIPE.config)
    names = [name for name, _, _ in configs]
    assert names == [
        "baseline", "no-batchnorm", "no-augmentation", "l1-1e-05", "l2-0.00025", "dropout-0.2",
        "sgd-lr0.1", "sgd-lr1.6", "adam-lr0.0003", "adam-lr0.001", "adam-lr0.003",
    ]  # SGD at the baseline's 0.4 is the baseline: trained once
    base = configs[0][2]
    changed = {name: {k for k, v in vars(config).items() if getattr(base, k) != v} for name, _, config in configs}
    assert changed["no-batchnorm"] == {"batch_norm"}
    assert changed["no-augmentation"] == {"crop_padding", "flip", "cutout"}
    assert changed["adam-lr0.001"] == {"optimizer", "lr"}
    half = ablations.planned_runs(ablations.Settings(only="norm"), dataclasses.replace(ablations.RECIPE.config, subset=25000))
    assert [(name, config.subset) for name, config in half] == [("baseline-seed0-subset25000", 25000), ("no-batchnorm-seed0-subset25000", 25000)]


def test_ablations_refuse_unknown_comparisons(tmp_path, capsys):
    assert exit_code(ablations.main, smoke(tmp_path, "--only", "norm,dropout")) == 2
    assert "--only: unknown 'dropout', expected some of norm, augment, regularisation, optimizer" in capsys.readouterr().err


def test_ablations_study_marks_a_diverged_configuration_and_completes_the_others(tmp_path, capsys):
    study = tmp_path / "ablations"
    argv = smoke(study, "--only", "optimizer", "--adam-lrs", "1e12")
    assert ablations.main(argv) == 0

    rows = {row["configuration"]: row for row in read_table(study)}
    assert list(rows) == ["baseline", "adam-lr1e+12"]  # SGD at the baseline's learning rate is the baseline
    assert rows["baseline"]["status"] == "completed" and rows["adam-lr1e+12"]["status"] == "diverged"
    for key in ("final_test_accuracy", "final_train_accuracy"):
        assert 0.0 <= float(rows["baseline"][key]) <= 1.0
    assert float(rows["baseline"]["final_test_loss"]) > 0
    assert_png(study / "comparison.png")
    assert json.loads((study / "config.json").read_text())["adam_lrs"] == "1e12"
    if importlib.util.find_spec("tensorflow"):
        # keras.callbacks.TensorBoard's own tags, per epoch, for training and validation.
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tensorboard_tags(study / "runs" / "baseline-seed0" / "tensorboard" / "train")
        assert {"epoch_loss", "epoch_accuracy"} <= tensorboard_tags(study / "runs" / "baseline-seed0" / "tensorboard" / "validation")

    before = run_mtimes(study)
    capsys.readouterr()
    (study / "comparison.png").unlink()
    assert ablations.main([*argv, "--log-log"]) == 0
    out = capsys.readouterr().out
    assert "baseline-seed0: already completed, skipped" in out and "adam-lr1e+12-seed0: already diverged, skipped" in out
    assert run_mtimes(study) == before
    assert_png(study / "comparison.png")


def tensorboard_tags(log_dir):
    """The scalar tags in the event files of `log_dir` (two per epoch here)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = set()
    for path in log_dir.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value if value.metadata.plugin_data.plugin_name == "scalars"}
    return tags
