import json
import os

import pytest
from PIL import Image

from davidnet import results as results_module
from davidnet.results import check_writable, dawnbench_rows, write_json_atomic, write_results

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


def history(accuracies):
    return [
        {"epoch": i + 1, "train_s_total": 36.0 * (i + 1), "loss": 1.0 / (i + 1), "accuracy": 0.5, "wall_s": 40.0 * (i + 1),
         **({"val_accuracy": a, "val_loss": 1.0} if a is not None else {})}
        for i, a in enumerate(accuracies)
    ]


def test_dawnbench_rows_are_cumulative_hours_of_evaluated_epochs():
    rows = dawnbench_rows(history([0.5, None, 0.9412]), include_compile_s=3.6)
    assert [r["epoch"] for r in rows] == [1, 3]
    assert rows[0]["hours"] == pytest.approx((36.0 + 3.6) / 3600)
    assert rows[1]["hours"] == pytest.approx((108.0 + 3.6) / 3600)
    assert rows[1]["top1Accuracy"] == pytest.approx(94.12)


def test_write_results_files(tmp_path):
    run = {"status": "completed", "history": history([0.5, 0.7]), "compile_s": 0.0, "lr_history": [[0, 0.0], [1, 0.1], [2, 0.05]]}
    write_results(tmp_path, run)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
    lines = (tmp_path / "dawnbench.tsv").read_text().splitlines()
    assert lines[0] == "epoch\thours\ttop1Accuracy"
    assert lines[2].split("\t")[0] == "2" and float(lines[2].split("\t")[2]) == pytest.approx(70.0)
    assert json.loads((tmp_path / "dawnbench.json").read_text())[1]["epoch"] == 2
    for png in ("accuracy_loss.png", "learning_rate.png"):
        with Image.open(tmp_path / png) as image:
            assert image.size[0] > 100
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary files left behind"


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"epochs": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(results_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_json_atomic(target, {"epochs": 2})
    assert json.loads(target.read_text()) == {"epochs": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "r.json", {"loss": float("nan")})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_folder_is_reported(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(OSError, match="--results-dir"):
        check_writable(locked / "run")


def test_results_folder_that_is_a_file_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="not writable.*--results-dir"):
        check_writable(blocker / "run")
