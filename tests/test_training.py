"""The training engine, and the CLI end to end, in-process."""

import contextlib
import io
import json
import re

import keras
import pytest

from davidnet.builders import build_optimizer, build_schedule
from davidnet.config import Config
from davidnet.results import summary_line
from davidnet.training import train
from tests.datasets import make_image_dir
from tests.helpers import ROOT, TINY, run_main, tiny_data

def test_sgd_and_adam_are_pytorchs_with_the_coupled_weight_decay():
    from davidnet.torch_optimizers import TorchAdam, TorchSGD

    optimizer = build_optimizer(Config())
    assert isinstance(optimizer, TorchSGD) and optimizer.nesterov and optimizer.momentum == 0.9
    assert optimizer.weight_decay == pytest.approx(5e-4) and optimizer.lr_in_buffer  # cifar10-fast's nesterov_update
    adam = build_optimizer(Config(optimizer="adam", weight_decay=1e-4, clipnorm=0.1))
    assert isinstance(adam, TorchAdam) and adam.weight_decay == pytest.approx(1e-4) and adam.clipnorm == pytest.approx(0.1)
    assert adam.epsilon == pytest.approx(1e-8)


def test_default_schedule_is_davidnets_and_scales_with_the_epochs():
    schedule = build_schedule(Config(), steps_per_epoch=97)
    assert schedule.lr_at(5 * 97) == pytest.approx(0.4)
    assert schedule.lr_at(0) == 0.0 and schedule.lr_at(24 * 97) == pytest.approx(0.0)
    short = build_schedule(Config(epochs=12), steps_per_epoch=10)
    assert short.lr_at(25) == pytest.approx(0.4)  # peak at 5/24 of 12 epochs = 2.5
    for name in ("triangular", "triangular2", "exp_range", "onecycle"):
        assert max(build_schedule(Config(schedule=name), 10).lr_values(range(240))) == pytest.approx(0.4, rel=2e-3)  # exp_range: 0.4 * gamma**20


def test_training_learns_and_writes_a_complete_results_folder(tmp_path):
    # 6 epochs: 4 left the final accuracy between 0.4 and 0.9 across seeds and backends.
    config = Config(epochs=6, target=0.5, lr=0.2, **TINY)
    results = train(config, tiny_data(), tmp_path)
    assert results["status"] == "completed"
    assert results["backend"] == keras.backend.backend()
    assert len(results["history"]) == 6
    assert results["final_accuracy"] > 0.5, "a tiny DavidNet should learn colour-coded classes"
    assert results["target_epoch"] is not None
    reached = next(r for r in results["history"] if r["val_accuracy"] >= 0.5)
    assert results["target_epoch"] == reached["epoch"]
    assert results["seconds_to_target"] == pytest.approx(reached["train_s_total"])
    assert len(results["lr_history"]) == 6 * (256 // 32)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["final_accuracy"] == results["final_accuracy"]
    for name in ("dawnbench.tsv", "dawnbench.json", "accuracy_loss.png", "learning_rate.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.one_backend("tensorflow")  # the callbacks' logic, the same on either backend
def test_eval_every_k_still_evaluates_the_last_epoch(tmp_path):
    results = train(Config(epochs=3, eval_every=2, subset=128, **TINY), tiny_data(), tmp_path)
    evaluated = [r["epoch"] for r in results["history"] if "val_accuracy" in r]
    assert evaluated == [2, 3]
    assert results["data"]["train_images"] == 128
    assert results["final_accuracy"] == results["history"][-1]["val_accuracy"]


@pytest.mark.one_backend("tensorflow")  # the callbacks' logic, the same on either backend
def test_a_diverging_run_stops_and_says_so(tmp_path, capsys):
    results = train(Config(epochs=3, lr=1e12, optimizer="sgd", warmup_epochs=0, **TINY), tiny_data(), tmp_path)
    assert results["status"] == "diverged"
    assert results["diverged"]["epoch"] == 1
    assert len(results["history"]) == 1
    assert "diverged" in capsys.readouterr().out
    assert summary_line(results).startswith("diverged at epoch 1")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return make_image_dir(tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=5)


@pytest.mark.one_backend("tensorflow")  # the command line and the data, the same on either backend
def test_cli_end_to_end_summary_agrees_with_results_json(tmp_path, capsys):
    # In-process (run_main): what is checked here is what the command line prints
    # and writes, not the interpreter around it, whose start-up would cost more than
    # the run. A fresh `python -m experiments.davidnet` runs in tests/test_robustness.py
    # (killed) and tests/test_multiprocess.py (to its exit code 0).
    # The sizes and settings of tests/test_run_folder.py's runs (256 of 260 training
    # images, 100 test images, 3 epochs): JAX compiles their programs once.
    image_dir = make_image_dir(tmp_path / "cifar", n_train_per_class=26, n_test_per_class=10)
    out = tmp_path / "run"
    code, stdout, err = run_main(capsys, "--epochs", "3", "--subset", "256", "--width", "0.125", "--batch-size", "32",
                                 "--target", "0.3", "--data-dir", str(image_dir), "--results-dir", str(out))
    assert code == 0, err[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == keras.backend.backend()
    assert results["config"]["epochs"] == 3 and len(results["history"]) == 3
    assert results["data"]["train_images"] == 256
    summary = stdout.strip().splitlines()[-2]
    assert f"final test accuracy {results['final_accuracy']:.4f}" in summary
    assert f"train {results['train_s']:.2f}s" in summary and f"wall {results['wall_s']:.2f}s" in summary
    if results["target_epoch"] is not None:
        assert f"reached at epoch {results['target_epoch']} in {results['seconds_to_target']:.2f}s" in summary
    else:
        assert "not reached" in summary
    epoch_lines = [line for line in stdout.splitlines() if re.match(r"epoch +\d+/3 ", line)]
    assert len(epoch_lines) == 3
    for name in ("dawnbench.tsv", "dawnbench.json", "accuracy_loss.png", "learning_rate.png", "model.keras"):
        assert (out / name).exists(), name


@pytest.mark.one_backend("tensorflow")  # the command line and the data, the same on either backend
@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "must be > 0"),
        (["--schedule", "cosine"], "must be one of piecewise, step"),
        (["--batch-size", "abc"], "expected int"),
        (["--batch-size", "5000"], "larger than the 200 training images"),
    ],
)
def test_cli_rejects_bad_arguments_with_one_clear_line(image_dir, tmp_path, capsys, args, message):
    code, _, err = run_main(capsys, "--data-dir", str(image_dir), "--results-dir", str(tmp_path / "r"), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # a failed start leaves no empty run folder


@pytest.mark.one_backend("tensorflow")  # the command line and the data, the same on either backend
def test_cli_reports_a_missing_data_folder_without_a_traceback(tmp_path, capsys):
    code, _, err = run_main(capsys, "--data-dir", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "r"))
    assert code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.one_backend("tensorflow")  # the command line and the data, the same on either backend
def test_a_dataset_of_three_classes_trains_a_model_of_three_outputs(tmp_path):
    import dataclasses

    data = tiny_data()
    keep_train, keep_test = data.y_train < 3, data.y_test < 3
    three = dataclasses.replace(
        data, x_train=data.x_train[keep_train], y_train=data.y_train[keep_train],
        x_test=data.x_test[keep_test], y_test=data.y_test[keep_test], class_names=("cat", "dog", "frog"),
    )
    results = train(Config(epochs=1, **{**TINY, "save_model": True}), three, tmp_path)
    assert results["status"] == "completed" and results["data"]["test_images"] == keep_test.sum()
    from davidnet import load_model

    assert load_model(tmp_path / "model.keras").output_shape == (None, 3)


@pytest.fixture(scope="module")
def tfdata_run_with_precompile(tmp_path_factory):
    """One tiny run on the tf.data feed with a host augment hook and --precompile
    (only a note off JAX): (results, what it printed, the shape of each batch the
    hook saw). One run for the two TensorFlow tests below, not one each: every
    train() costs TensorFlow a trace of its steps, seconds more than its epoch."""
    seen = []

    def invert(batch):  # a NumPy callable, as an imgaug or albumentations pipeline would be
        seen.append(batch.shape)
        return 255 - batch

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = train(Config(epochs=1, pipeline="tfdata", precompile=True, checkpoint=False, **TINY), tiny_data(),
                        tmp_path_factory.mktemp("tfdata"), host_augment=invert)
    return results, printed.getvalue(), seen


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data feed is the TensorFlow path")
def test_host_augment_hook_runs_on_every_training_batch(tfdata_run_with_precompile):
    _, _, seen = tfdata_run_with_precompile
    assert seen.count((32, 32, 32, 3)) == 256 // 32


def test_step_schedule_divides_at_each_milestone():
    schedule = build_schedule(Config(schedule="step", lr=0.1, epochs=10, milestones="4,8", decay=0.1), steps_per_epoch=10)
    assert [schedule.lr_at(s) for s in (0, 39, 40, 79, 80, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    for bad in ("8,4", "0,5", "4,x", "12"):
        with pytest.raises(ValueError, match="milestones"):
            build_schedule(Config(schedule="step", epochs=10, milestones=bad), steps_per_epoch=10)


def test_the_adam_one_cycle_recipe_file_builds_its_optimizer_and_schedule():
    from davidnet.config_files import load_config

    from davidnet.torch_optimizers import TorchAdam
    from davidnet.builders import momentum_schedule

    config = Config(**load_config(ROOT / "experiments" / "recipes" / "resnet9_adam_onecycle.toml", Config))
    schedule = build_schedule(config, steps_per_epoch=125)
    optimizer = build_optimizer(config, schedule.in_graph(1000), momentum=momentum_schedule(config, schedule, 1000))
    assert isinstance(optimizer, TorchAdam) and optimizer.beta_2 == pytest.approx(0.999)
    assert optimizer.clipvalue == pytest.approx(0.1) and optimizer.weight_decay == pytest.approx(1e-4)
    # OneCycleLR(optimizer, 0.01, epochs=8, steps_per_epoch=125): peak at step 0.3 * 1000 - 1.
    assert float(optimizer.learning_rate) == pytest.approx(0.01 / 25)
    assert [float(optimizer._learning_rate(s)) for s in (299, 999)] == pytest.approx([0.01, 0.01 / 25 / 1e4], rel=1e-5)
    assert [float(optimizer.beta_1(s)) for s in (0, 299, 999)] == pytest.approx([0.95, 0.85, 0.95])
    assert (config.model, config.dropout, config.cutout, config.lr_step_offset) == ("resnet9", 0.2, 0, 0)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="--precompile and --loop scan are JAX's")
def test_a_precompiled_run_trains_exactly_like_a_plain_one_and_reports_the_warm_up(tmp_path):
    data = tiny_data(128, 100)
    base = dict(epochs=2, lr=0.2, checkpoint=False, alternating_flip=True, lr_start=0.5, lr_step_offset=0, **TINY)
    plain = train(Config(**base), data, tmp_path / "plain")
    warm = train(Config(precompile=True, **base), data, tmp_path / "warm")
    for key in ("loss", "val_loss", "val_accuracy"):
        assert [r[key] for r in warm["history"]] == pytest.approx([r[key] for r in plain["history"]], rel=1e-5)
    assert warm["compile_s"] > 0 and warm["lr_history"][0] == [0, pytest.approx(0.1)]
    # A second run in the same process finds everything compiled: its epoch 1 is no slower than its epoch 2 by much.
    assert warm["history"][0]["train_s"] < 5 * warm["history"][1]["train_s"] + 1.0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="--loop scan is JAX's")
def test_a_scanned_run_writes_the_same_results_as_fit(tmp_path):
    results = train(Config(epochs=1, loop="scan", checkpoint=False, **TINY), tiny_data(64, 100), tmp_path)
    assert results["status"] == "completed" and results["config"]["loop"] == "scan"
    assert [step for step, _ in results["lr_history"]] == [0, 1]  # 64 images, batch 32: 2 steps in 1 call
    assert results["final_accuracy"] is not None and results["compile_s"] > 0


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the note is for the other backends")
def test_precompile_elsewhere_is_a_note_and_scan_says_it_needs_jax(tfdata_run_with_precompile, tmp_path):
    results, out, _ = tfdata_run_with_precompile
    assert results["status"] == "completed" and "--precompile compiles JAX steps" in out
    with pytest.raises(ValueError, match="needs the JAX backend"):
        train(Config(epochs=1, loop="scan", pipeline="device", **TINY), tiny_data(64, 100), tmp_path / "b")


def test_optimizer_choices_of_the_fast_preset():
    from davidnet import optimizers
    from davidnet.schedules import TabulatedSchedule
    from davidnet.builders import build_model

    config = Config(model="fastnet", width=0.125, optimizer="muon", lr=1.5, muon_lr=0.3, momentum=0.85,
                    weight_decay=1.5e-3, bias_lr_scale=64, lookahead=5)
    schedule = TabulatedSchedule([1.5, 0.75, 0.0])
    optimizer = build_optimizer(config, schedule, build_model(config))
    assert isinstance(optimizer, optimizers.Lookahead) and optimizer.sync_period == 5
    parts = {type(o).__name__: o for o in optimizer.inner_optimizer.optimizers}
    assert parts["Muon"]._learning_rate.values == pytest.approx([0.3, 0.15, 0.0])
    sgds = [o for o in optimizer.inner_optimizer.optimizers if isinstance(o, keras.optimizers.SGD)]
    rates = sorted(o._learning_rate.values[0] for o in sgds)
    assert rates == pytest.approx([1.5, 96.0])  # the rest, and the biases at 64x
    decays = {o._learning_rate.values[0]: o.weight_decay for o in sgds}
    assert decays[1.5] == pytest.approx(1.5e-3) and decays[96.0] == pytest.approx(1.5e-3 / 64)  # coupled, lr x wd kept
    plain = build_optimizer(Config(bias_lr_scale=4.0), TabulatedSchedule([0.4]))
    assert isinstance(plain, keras.optimizers.MultiOptimizer)


@pytest.mark.parametrize("settings, message", [
    (dict(whiten=True), r"settings of the airbench94 \(fastnet\) model"),
    (dict(model="fastnet", dropout=0.1), r"airbench94 \(fastnet\) has batch norm"),
    (dict(optimizer="muon", clipnorm=1.0), "gradient clipping"),
    (dict(optimizer="adam", bias_lr_scale=2.0), "bias-lr-scale"),
    (dict(lr_end=1.5), "lr_end must be >= 0 and <= 1"),
])
def test_fast_preset_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        Config(**settings)


def test_the_fast_preset_is_a_recipe_that_flags_override():
    from experiments.davidnet import PRESETS, build_parser
    from davidnet.studies import resolve_settings

    _, config = resolve_settings(build_parser(), ["--preset", "fast", "--epochs", "3"], Config, PRESETS)
    assert (config.model, config.optimizer, config.batch_size, config.tta) == ("airbench94", "muon", 2000, 2)
    assert config.alternating_flip and not config.flip and config.whiten and config.epochs == 3
    assert Config().model == "davidnet"  # the classic recipe stays the default


def test_a_tiny_fast_preset_run_reports_its_tta_accuracy(tmp_path):
    config = Config(
        model="fastnet", activation="gelu", whiten=True, dirac=True, frozen_bn_scale=True, optimizer="muon",
        lr=0.5, bias_lr_scale=4, lookahead=2, label_smoothing=0.2, warmup_epochs=0, lr_start=1.0,
        crop_padding=2, flip=False, alternating_flip=True, cutout=0, tta=2, eval_every=0, epochs=2,
        pipeline="device", checkpoint=False, width=0.125, batch_size=32, verbose=0, save_model=True,
    )
    results = train(config, tiny_data(128, 100), tmp_path)
    assert results["status"] == "completed" and results["loop"] == "fit"
    assert "val_accuracy" not in results["history"][0] and results["final_accuracy"] is not None
    assert 0 <= results["tta_accuracy"] <= 1 and results["tta_s"] > 0 and results["tta_level"] == 2
    assert "with TTA level 2" in summary_line(results)
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("whiten").kernel.trainable is False


def test_the_progress_bar_keeps_dispatch_asynchronous_and_shows_steps_in_order(capsys):
    from davidnet.timing import TimeToAccuracy
    from davidnet.callbacks import ProgressBar

    bar = ProgressBar()
    if keras.backend.backend() == "jax":  # where Keras dispatches batch ends on worker threads
        assert keras.callbacks.CallbackList([bar, TimeToAccuracy()])._async_train
    bar.set_params({"epochs": 1, "steps": 4, "verbose": 1})
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(2, {"loss": 1.0})
    bar.on_train_batch_end(1, {"loss": 9.0})  # an earlier step's update arriving late is dropped
    assert bar.progbar._seen_so_far == 3
    assert "9.0" not in capsys.readouterr().out
