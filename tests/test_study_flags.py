"""One command-line convention for every study (issue #12): --seeds is a comma
list, --subset N the first N training images, --smoke writes to
`<default results dir>-smoke`, help shows defaults one way, and the list
parser, the batch-size check, the data note and the target are davidnet.studies'.

Training is replaced by a fake that writes a results.json at once, so each
study's main runs end to end (parse, plan, table, plot) in seconds.
"""

import csv
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from davidnet import studies, study_runs
from davidnet.results import write_json_atomic
from davidnet.training import Config
from experiments import ablations, augmentations, dawnbench, fast_ablation, lr_schedules, resnet44

# The same on either backend (tests/conftest.py); no training happens here (a fake writes the
# results), so it costs the same on either: JAX, to leave the TensorFlow run the trainings.
pytestmark = pytest.mark.one_backend("tensorflow")

TRAINING_STUDIES = [ablations, resnet44, lr_schedules, fast_ablation]
IDS = [study.__name__.split(".")[-1] for study in TRAINING_STUDIES]
# Each study's --smoke, made small: the configurations trained per seed.
SMOKE = {
    ablations: (["--only", "norm", "--no-tensorboard"], ["baseline", "no-batchnorm"]),
    resnet44: ([], ["m0", "m2"]),
    lr_schedules: ([], ["piecewise-lr0.4", "onecycle-lr0.4"]),
    fast_ablation: ([], ["preset", "-muon", "-tta"]),
}


def parse(study, *argv):
    """(args, settings, recipe) as the study's main resolves them."""
    return studies.resolve_study(study.build_parser(), list(argv), study.Settings, study.SmokeSettings, study.RESULTS_DIR, study.RECIPE)


def planned_runs(study, parsed):
    _, settings, recipe = parsed
    return study.planned_runs(settings, recipe)


def read_table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fake_training(monkeypatch):
    """Replaces `davidnet.training.train` (what every study trains through) by a
    function that writes a finished results.json at once; returns its calls."""
    from pipelines.cifar10 import equivalent_target

    calls = []

    def train(config, data, run_dir, **kwargs):
        calls.append((Path(run_dir).name, config))
        accuracy = 0.5 + 0.1 * config.seed
        history = [
            {"epoch": e, "loss": 2.0 / e, "val_loss": 2.5 / e, "accuracy": accuracy * e / config.epochs,
             "val_accuracy": accuracy * e / config.epochs, "train_s_total": float(e), "eval_s": 0.1}
            for e in range(1, config.epochs + 1)
        ]
        results = {
            "status": "completed", "config": dataclasses.asdict(config), "history": history,
            "target": config.target if config.target is not None else equivalent_target(data.image_format),
            "final_accuracy": accuracy, "tta_accuracy": None, "tta_s": None, "train_s": 1.0,
            "seconds_to_target": None, "wall_to_target_s": None, "target_epoch": None,
        }
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(run_dir) / "results.json", results)
        return results

    monkeypatch.setattr("davidnet.training.train", train)
    return calls


# --- every study, end to end with the fake training ------------------------------------


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
def test_seeds_and_subset_reach_every_run_and_smoke_writes_to_the_default_dash_smoke(study, fake_training, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no --results-dir: the smoke folder is the study's default + "-smoke"
    flags, configurations = SMOKE[study]
    assert study.main(["--smoke", "--compile-cache", "", "--seeds", "0,1", "--subset", "200", *flags]) == 0

    expected = [f"{name}-seed{seed}-subset200" for name in configurations for seed in (0, 1)]
    assert [name for name, _ in fake_training] == expected
    assert [config.seed for _, config in fake_training] == [0, 1] * len(configurations)
    assert {config.subset for _, config in fake_training} == {200}

    default = study.build_parser().parse_args([]).results_dir
    assert default == study.RESULTS_DIR and default.startswith("runs/")
    smoke_dir = tmp_path / f"{default}-smoke"
    assert sorted(p.name for p in (smoke_dir / "runs").iterdir()) == sorted(expected)
    assert not (tmp_path / default).exists()
    out = capsys.readouterr().out
    assert "data: synthetic" in out and "; 200 train / " in out  # the subset, not the 256 or 512 loaded

    rows = read_table(smoke_dir / "table.csv")
    runs_per_row = {ablations: "n", resnet44: "runs", lr_schedules: "n_seeds", fast_ablation: "n"}[study]
    assert [row[runs_per_row] for row in rows] == ["2"] * len(configurations)


def test_ablations_table_and_plot_aggregate_the_seeds(fake_training, tmp_path, capsys):
    study = tmp_path / "ablations"
    argv = ["--smoke", "--compile-cache", "", "--only", "norm", "--no-tensorboard", "--seeds", "0,1,2", "--results-dir", str(study)]
    assert ablations.main(argv) == 0
    rows = {row["configuration"]: row for row in read_table(study / "table.csv")}
    assert list(rows) == ["baseline", "no-batchnorm"]
    for row in rows.values():  # the fake's accuracies are 0.5, 0.6, 0.7 for seeds 0, 1, 2
        assert row["n"] == "3" and row["status"] == "completed" and row["reached"] == "0/3"
        assert float(row["final_test_accuracy"]) == pytest.approx(0.6)
        assert float(row["final_test_accuracy_std"]) == pytest.approx(0.1)
        assert float(row["final_train_accuracy"]) == pytest.approx(0.6)
    assert (study / "comparison.png").stat().st_size > 10_000
    assert "target: test accuracy 0.94, this data's equivalent of DAWNBench's 94%" in capsys.readouterr().out


def test_ablations_mean_curve_leaves_out_a_diverged_seed_when_others_completed():
    done = {"status": "completed", "history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}
    other = {"status": "completed", "history": [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 1.5}]}
    diverged = {"status": "diverged", "history": [{"epoch": 1, "loss": "nan"}]}
    assert ablations.mean_history([done, other, diverged]) == [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]
    assert ablations.mean_history([diverged]) == [{"epoch": 1}]  # NaN is stored as text: no point to draw
    row = ablations.table_row("x", "optimizer", [done | {"final_accuracy": 0.8}, diverged | {"final_accuracy": "nan"}])
    assert (row["n"], row["final_test_accuracy"], row["status"]) == (2, 0.8, "completed,diverged")


def test_a_jpeg_copy_study_prints_the_note_once_and_the_resolved_target(fake_training, tmp_path, monkeypatch, capsys):
    import pipelines.cifar10

    synthetic = pipelines.cifar10.synthetic_cifar10
    monkeypatch.setattr(pipelines.cifar10, "synthetic_cifar10", lambda *a, **k: dataclasses.replace(synthetic(*a, **k), image_format="jpeg"))
    assert resnet44.main(["--smoke", "--compile-cache", "", "--m-values", "0", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("note: JPEG copy of CIFAR-10") == 1 and "(0.91 here ~ 0.94 there)" in out
    assert "target: test accuracy 0.91, this data's equivalent of DAWNBench's 94%" in out
    assert [config.target for _, config in fake_training] == [None]  # training resolves it, and records 0.91
    assert json.loads((tmp_path / "runs" / "m0-seed0" / "results.json").read_text())["target"] == 0.91


# --- parse level -----------------------------------------------------------------------------


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
def test_seeds_and_subset_parse_to_the_planned_runs(study):
    runs = planned_runs(study, parse(study, "--seeds", "3,1", "--subset", "5000"))
    assert runs and all(config.subset == 5000 for _, config in runs)
    assert [config.seed for _, config in runs] == [3, 1] * (len(runs) // 2)
    assert all(name.endswith(f"-seed{config.seed}-subset5000") for name, config in runs)
    assert all(config.subset is None and "subset" not in name for name, config in planned_runs(study, parse(study)))


def test_default_seeds_stay_what_they_were():
    assert parse(fast_ablation)[1].seeds == "0,1,2,3,4,5,6,7,8,9"  # was --seeds 10, a count
    assert studies.parse_seeds(parse(fast_ablation, "--smoke")[1].seeds) == [0]
    assert parse(ablations)[1].seeds == parse(resnet44)[1].seeds == "0"
    assert parse(lr_schedules)[1].seeds == "0,1,2"


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
@pytest.mark.parametrize("seeds", ["0,x", "0,0", "", "-1", "1.5", "0;1"])
def test_a_bad_seed_list_is_one_line_and_exit_2(study, seeds, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--smoke", "--seeds", seeds, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: --seeds: expected a comma list of distinct integers >= 0"), err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
def test_subset_must_be_positive_and_fraction_is_gone(study, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--smoke", "--subset", "0", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["error: --subset must be > 0 and <= 100000000. Got: 0"]  # Config's own check
    with pytest.raises(SystemExit) as exit_info:
        parse(study, "--fraction", "0.5")
    assert exit_info.value.code == 2 and "unrecognized arguments: --fraction" in capsys.readouterr().err


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
def test_a_batch_larger_than_the_subset_is_one_line_and_exit_2(study, fake_training, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--smoke", "--compile-cache", "", "--subset", "20", "--batch-size", "32", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["error: --batch-size 32 is larger than the 20 training images: give a smaller --batch-size or a larger --subset"]
    assert fake_training == []


@pytest.mark.parametrize("study", [*TRAINING_STUDIES, augmentations], ids=[*IDS, "augmentations"])
def test_smoke_results_go_to_the_default_dash_smoke_unless_given(study):
    if hasattr(study, "RECIPE"):
        resolve = lambda *argv: parse(study, *argv)[0]  # noqa: E731
    else:
        resolve = lambda *argv: studies.resolve_study_settings(study.build_parser(), list(argv), study.Settings, study.Settings, study.RESULTS_DIR)[0]  # noqa: E731
    assert resolve().results_dir == study.RESULTS_DIR
    assert resolve("--smoke").results_dir == study.RESULTS_DIR + "-smoke"
    assert resolve("--smoke", "--results-dir", "elsewhere").results_dir == "elsewhere"


def test_augmentations_and_dawnbench_smoke_write_to_their_dash_smoke_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Stop(Exception):
        pass

    def stop(path, settings):
        raise Stop(str(path))

    monkeypatch.setattr(augmentations, "prepare_study_dir", stop)
    with pytest.raises(Stop, match="^runs/augmentations-smoke$"):
        augmentations.main(["--smoke"])
    assert dawnbench.main(["--smoke", "--no-plot"]) == 0
    assert (tmp_path / "runs" / "dawnbench-smoke" / "dawnbench_comparison.csv").exists()


@pytest.mark.parametrize("study", [*TRAINING_STUDIES, augmentations, dawnbench], ids=[*IDS, "augmentations", "dawnbench"])
def test_help_shows_every_default_the_same_way(study):
    parser = study.build_parser()
    text = parser.format_help()
    assert "settings (defaults: the Settings dataclass; --config files and flags override)" in text  # studies.study_parser's
    assert "(default: None)" not in text and "(default " not in text
    fields = {f"--{f.name.replace('_', '-')}": f for f in dataclasses.fields(study.Settings)}
    for action in parser._actions:
        flag = next((s for s in action.option_strings if s in fields), None)
        if flag:
            assert "(default: " in action.help or "; default: " in action.help, (flag, action.help)
    if study in TRAINING_STUDIES:
        results_dir = next(a for a in parser._actions if "--results-dir" in a.option_strings)
        assert results_dir.help.endswith(f"(default: {study.RESULTS_DIR}; --smoke: {study.RESULTS_DIR}-smoke)")
        for flag, ending in (("--seeds", ")"), ("--subset", "(default: all)")):
            action = next(a for a in parser._actions if flag in a.option_strings)
            assert action.help.endswith(ending) and "(default: " in action.help


def test_help_names_the_smoke_default_where_it_differs():
    seeds = next(a for a in lr_schedules.build_parser()._actions if "--seeds" in a.option_strings)
    assert seeds.help.endswith("(default: 0,1,2; --smoke: 0,1)")
    epochs = next(a for a in fast_ablation.build_parser()._actions if "--epochs" in a.option_strings)
    assert epochs.help == "training epochs (default: 8; --smoke: 1)"  # the preset's 8, from the study's recipe
    assert "94%" in ablations.build_parser().format_help()  # a literal % in a help text is escaped for argparse


@pytest.mark.parametrize("study", TRAINING_STUDIES, ids=IDS)
def test_recipe_flags_take_their_help_and_checks_from_config(study, tmp_path, capsys):
    from davidnet import config

    recipe = study.RECIPE
    actions = {a.dest: a for a in study.build_parser()._actions}
    for name in recipe.flags:
        assert actions[name].help.startswith(config.help_text(name).replace("%", "%%") + " (default: "), name
        assert actions[name].choices == config.FIELDS[name].metadata["choices"], name
    # Defaults are the study's recipe (and --smoke's changes); a --config file's recipe settings win, flags win over it.
    _, _, plain = parse(study)
    assert plain == recipe.config
    _, _, smoke = parse(study, "--smoke")
    assert smoke == dataclasses.replace(recipe.config, **recipe.smoke)
    path = tmp_path / "study.toml"
    path.write_text("epochs = 3\nsubset = 3000\n")
    _, _, given = parse(study, "--config", str(path), "--subset", "4000")
    assert (given.epochs, given.subset) == (3, 4000)
    path.write_text("epochs = -3\n")
    with pytest.raises(SystemExit) as exit_info:
        parse(study, "--config", str(path))
    assert exit_info.value.code == 2 and capsys.readouterr().err == "error: --epochs must be > 0 and <= 10000. Got: -3\n"


# --- the shared helpers ----------------------------------------------------------------------


def test_parse_list():
    assert studies.parse_list(" 0, 2,4 ", int, "m_values", at_least=0) == [0, 2, 4]
    assert studies.parse_list("0.4,1e-3", float, "lrs", above=0) == [0.4, 0.001]
    assert studies.parse_list("", str, "only", allow_empty=True) == []
    assert studies.parse_list("tta,muon", str, "only", choices=("muon", "tta")) == ["tta", "muon"]
    assert studies.parse_seeds("2,0") == [2, 0]
    for args, options, message in [
        (("0,x", int, "m_values"), {}, "--m-values: expected a comma list of distinct integers (at least one), got '0,x'"),
        (("", int, "seeds"), {}, "--seeds: expected a comma list of distinct integers (at least one), got ''"),
        (("1,1", int, "seeds"), {}, "--seeds: expected a comma list of distinct integers (at least one), got '1,1'"),
        (("-1", int, "seeds"), {"at_least": 0}, "--seeds: expected a comma list of distinct integers >= 0 (at least one), got '-1'"),
        (("0.4,0", float, "lrs"), {"above": 0}, "--lrs: expected a comma list of distinct numbers > 0 (at least one), got '0.4,0'"),
        (("muon,colour", str, "only"), {"choices": ("muon", "tta")}, "--only: unknown 'colour', expected some of muon, tta"),
    ]:
        with pytest.raises(ValueError) as info:
            studies.parse_list(*args, **options)
        assert str(info.value) == message


def fake_data(train=100, test=10, image_format="pickle"):
    return SimpleNamespace(x_train=np.zeros((train, 1)), x_test=np.zeros((test, 1)), source="fake", image_format=image_format)


def test_batch_size_check_and_training_images():
    data = fake_data(100)
    assert studies.train_images(data) == 100 and studies.train_images(data, 40) == 40 and studies.train_images(data, 500) == 100
    studies.check_batch_size(100, data)
    studies.check_batch_size(40, data, subset=40)
    studies.check_batch_size(64, data, subset=500)  # a subset larger than the data is all of it
    with pytest.raises(ValueError, match=r"^--batch-size 101 is larger than the 100 training images: give a smaller --batch-size$"):
        studies.check_batch_size(101, data)
    with pytest.raises(ValueError, match=r"the 40 training images: give a smaller --batch-size or a larger --subset$"):
        studies.check_batch_size(64, data, subset=40)


def test_the_data_note_and_the_target(capsys):
    studies.print_data(fake_data(100, image_format="jpeg"), subset=30)
    assert capsys.readouterr().out.splitlines() == [
        "data: fake; 30 train / 10 test images",
        "note: JPEG copy of CIFAR-10: accuracies are about 3 points below real CIFAR-10 (0.91 here ~ 0.94 there)",
    ]
    studies.print_data(fake_data(100, image_format="pickle"))
    assert capsys.readouterr().out.splitlines() == ["data: fake; 100 train / 10 test images"]
    assert studies.resolved_target(None, fake_data(image_format="jpeg")) == 0.91
    assert studies.resolved_target(None, fake_data(image_format="pickle")) == 0.94
    assert studies.resolved_target(0.5, fake_data(image_format="jpeg")) == 0.5
    assert studies.target_line(0.5, fake_data()) == "target: test accuracy 0.5 (--target)"
    assert studies.target_line(None, fake_data(image_format="jpeg")).startswith("target: test accuracy 0.91, this data's equivalent")


def test_dataset_label_says_the_subset():
    data = fake_data(50000, image_format="jpeg")
    assert studies.dataset_label(data, 5000) == "CIFAR-10 JPEG copy (about 3 points harder than CIFAR-10), first 5000 training images"
    assert studies.dataset_label(fake_data(50000), None) == "CIFAR-10"
    assert studies.dataset_label(fake_data(50000), 50000) == "CIFAR-10"


def test_a_finished_run_is_reused_when_its_target_was_the_same_value(tmp_path):
    """Runs trained with an explicit 0.94 (before the target defaulted to None) are
    this study's runs on CIFAR-10, where None means 0.94, but not on the JPEG copy."""
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "results.json", {"status": "completed", "target": 0.94, "config": dataclasses.asdict(Config(target=0.94))})
    runs = [("a", Config(target=None))]
    study_runs.check_reusable(runs, tmp_path, fake_data(image_format="pickle"))
    study_runs.check_reusable(runs, tmp_path)  # without data: let through, checked again once data is loaded
    with pytest.raises(ValueError, match=r"target 0.94 there, 0.91 now"):
        study_runs.check_reusable(runs, tmp_path, fake_data(image_format="jpeg"))
    with pytest.raises(ValueError, match=r"target 0.94 there, 0.5 now"):
        study_runs.check_reusable([("a", Config(target=0.5))], tmp_path)
