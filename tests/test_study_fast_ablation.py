"""`experiments.fast_ablation`: the fast preset with each ingredient removed, tiny."""

import csv

import pytest

from experiments import fast_ablation

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


def read_table(study_dir):
    with open(study_dir / "table.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_study_tables_every_configuration_and_skips_finished_runs(tmp_path, capsys):
    flags = ["--smoke", "--results-dir", str(tmp_path), "--compile-cache", ""]
    assert fast_ablation.main(flags) == 0
    rows = read_table(tmp_path)
    assert [row["configuration"] for row in rows] == ["preset", "-muon", "-tta"]
    for row in rows:
        assert row["n"] == "1" and row["not_completed"] == "0"
        assert 0 <= float(row["mean_accuracy"]) <= 1 and float(row["median_time_s"]) > 0
    mtimes = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/results.json")}
    assert sorted(mtimes) == ["-muon-seed0", "-tta-seed0", "preset-seed0"]
    assert fast_ablation.main(flags) == 0
    assert "already completed, skipped" in capsys.readouterr().out
    assert {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/results.json")} == mtimes


def test_each_configuration_removes_one_ingredient_from_the_preset():
    configs = dict(fast_ablation.configurations(fast_ablation.Settings(seeds="0"), fast_ablation.RECIPE.config))
    base = configs.pop("preset")
    assert base.model == "airbench94" and base.optimizer == "muon" and base.tta == 2
    assert len(configs) == len(fast_ablation.INGREDIENTS)
    for name, config in configs.items():
        changed = {k for k in vars(base) if getattr(base, k) != getattr(config, k)}
        assert changed == set(fast_ablation.INGREDIENTS[name[1:]]), name


def test_accuracy_and_time_are_what_airbench_reports():
    with_tta = {"tta_accuracy": 0.91, "final_accuracy": 0.9, "train_s": 1.2, "tta_s": 0.1, "history": [{"eval_s": 0.05}]}
    assert fast_ablation.accuracy_and_time(with_tta) == (0.91, pytest.approx(1.3))
    plain = {"final_accuracy": 0.9, "train_s": 1.2, "history": [{"eval_s": 0.05}]}
    assert fast_ablation.accuracy_and_time(plain) == (0.9, pytest.approx(1.25))


def test_an_unknown_ingredient_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fast_ablation.main(["--smoke", "--only", "whitening,colour", "--results-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "--only: unknown 'colour', expected some of whitening, dirac" in capsys.readouterr().err


def test_only_nothing_is_the_preset_alone():
    assert [name for name, _ in fast_ablation.configurations(fast_ablation.Settings(only="", seeds="0"), fast_ablation.RECIPE.config)] == ["preset"]
