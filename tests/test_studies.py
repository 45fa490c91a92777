import argparse
import csv
import dataclasses
import json

import pytest

from davidnet.config_files import ConfigError, checked_values, load_config, read_config_file
from davidnet.results import write_json_atomic
from davidnet.studies import resolve_settings
from davidnet.study_runs import format_table, mean_std, run_study, write_table
from davidnet.training import Config

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


def fake_train(statuses):
    calls = []

    def train(config, data, run_dir, resume=False, overwrite=False):
        calls.append(run_dir.name)
        assert (resume, overwrite) == (False, True)  # no checkpoints here: unfinished runs start again
        run_dir.mkdir(parents=True, exist_ok=True)
        results = {"status": statuses.get(run_dir.name, "completed"), "final_accuracy": config.lr, "config": dataclasses.asdict(config)}
        write_json_atomic(run_dir / "results.json", results)
        return results

    train.calls = calls
    return train


def test_a_rerun_study_skips_finished_runs_and_retrains_unfinished_ones(tmp_path, capsys):
    runs = [(f"lr{lr}", Config(lr=lr)) for lr in (0.1, 0.2, 0.3)]
    first = fake_train({"lr0.2": "diverged"})
    results = run_study(runs, None, tmp_path, train_fn=first)
    assert first.calls == ["lr0.1", "lr0.2", "lr0.3"]
    assert [r["status"] for r in results] == ["completed", "diverged", "completed"]
    # lr0.3 was interrupted mid-run: its results say "running".
    write_json_atomic(tmp_path / "runs" / "lr0.3" / "results.json", {"status": "running"})
    second = fake_train({})
    results = run_study(runs, None, tmp_path, train_fn=second)
    assert second.calls == ["lr0.3"]
    assert [r["name"] for r in results] == ["lr0.1", "lr0.2", "lr0.3"]
    assert "already diverged, skipped" in capsys.readouterr().out


def test_tables_are_written_as_csv_and_text(tmp_path):
    rows = [{"run": "a", "acc": 0.91234, "time": None}, {"run": "bb", "acc": 0.5, "time": 3.0}]
    text = write_table(rows, ["run", "acc", "time"], tmp_path / "t.csv")
    assert text.splitlines()[0].split() == ["run", "acc", "time"]
    assert "0.9123" in text and "-" in text.splitlines()[2]
    with open(tmp_path / "t.csv") as f:
        assert list(csv.DictReader(f))[1] == {"run": "bb", "acc": "0.5", "time": "3.0"}
    assert format_table([], ["x"]).splitlines()[0] == "x"


def test_mean_std_ignores_missing_values():
    assert mean_std([0.9, None, 0.92]) == pytest.approx((0.91, 0.0141421356))
    assert mean_std([None]) == (None, None)
    assert mean_std([0.5]) == (0.5, 0.0)


@dataclasses.dataclass
class Settings:
    epochs: int = 3
    lr: float = 0.1
    schedule: str = "piecewise"
    clip: float | None = None
    flip: bool = True


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'epochs = 5\nlr = 1\nflip = false\n'),
    (".json", '{"epochs": 5, "lr": 1, "flip": false}'),
    (".yaml", "epochs: 5\nlr: 1\nflip: false\n"),
])
def test_config_files_in_each_format(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert load_config(path, Settings) == {"epochs": 5, "lr": 1.0, "flip": False}


@pytest.mark.parametrize("values, message", [
    ({"epoch": 5}, "unknown setting 'epoch'"),
    ({"epochs": "5"}, "epochs: expected int, got str"),
    ({"epochs": 5.5}, "epochs: expected int, got float"),
    ({"flip": 1}, "flip: expected bool, got int"),
    ({"clip": "x"}, "clip: expected float or null"),
])
def test_unknown_keys_and_wrong_types_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        checked_values(values, Settings)


def test_config_files_are_data_not_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "ran"
    evil.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(evil)
    assert not marker.exists()
    for name, text, message in [("a.toml", "epochs = [", "not valid TOML"), ("a.json", "[1, 2]", "expected a table"),
                                ("a.ini", "x=1", "expected a .toml")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_config_file(tmp_path / name)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.toml")


def test_flags_win_over_the_config_file(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 7, "lr": 0.5}))
    _, settings = resolve_settings(parser, ["--config", str(path), "--lr", "0.2"], Settings)
    assert (settings.epochs, settings.lr, settings.schedule) == (7, 0.2, "piecewise")
    path.write_text(json.dumps({"epochz": 7}))
    with pytest.raises(SystemExit) as exit_info:
        resolve_settings(parser, ["--config", str(path)], Settings)
    assert exit_info.value.code == 2


def test_a_finished_run_with_other_settings_is_refused_and_ctrl_c_stops_the_study(tmp_path):
    run_study([("a", Config(lr=0.1))], None, tmp_path, train_fn=fake_train({}))
    with pytest.raises(ValueError, match=r"runs/a was trained with other settings \(lr 0.1 there, 0.2 now\)"):
        run_study([("a", Config(lr=0.2))], None, tmp_path, train_fn=fake_train({}))
    interrupted = fake_train({"b": "interrupted"})
    with pytest.raises(KeyboardInterrupt):
        run_study([("b", Config()), ("c", Config())], None, tmp_path, train_fn=interrupted)
    assert interrupted.calls == ["b"]


@pytest.mark.parametrize("content", [b"[" * 100000, b"[1, 2]", b"\xff\xfe garbage", b'{"status": "completed"'])
def test_a_damaged_results_json_in_a_study_is_trained_again(tmp_path, content):
    from davidnet.study_runs import finished_results

    (tmp_path / "results.json").write_bytes(content)
    assert finished_results(tmp_path) is None
    (tmp_path / "results.json").write_text('{"status": "completed"}')
    assert finished_results(tmp_path) == {"status": "completed"}
