"""Issue #15: the studies that read files refuse bad ones in one line.

`python -m experiments.dawnbench` ranks results.json files and `python -m
experiments.predict` loads a model.keras: whatever is in those files (wrong
types, NaN, negative times, a run that never finished, a model of other
images), each refuses with one line, `error: ...` on stderr and exit code 2,
naming the file and the field; never a traceback, never a wrong ranking.
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from davidnet import leaderboard, run_results
from experiments import dawnbench, predict
from tests.conftest import host_kernel_init
from tests.test_study_dawnbench_previews_predict import CACHE, run_dawnbench, write_results

pytestmark = pytest.mark.one_backend("tensorflow")  # the same on either backend (tests/conftest.py)


def assert_one_line_error(code, err, *expected):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])


# --- dawnbench: every field it reads from a results.json --------------------------------


@pytest.mark.parametrize("field, value, expected", [
    ("seconds_to_target", -5.0, "a number > 0"),  # was ranked first of 38
    ("seconds_to_target", 0, "a number > 0"),
    ("seconds_to_target", "30", "got '30'"),
    ("seconds_to_target", [30], "got a JSON list"),
    ("seconds_to_target", {"s": 30}, "got a JSON object"),
    ("seconds_to_target", True, "got true"),
    ("seconds_to_target", float("nan"), "got NaN"),
    ("seconds_to_target", float("inf"), "got Infinity"),
    ("seconds_to_target", 10**400, "an integer of 401 digits"),  # too large for a float
    ("target", float("nan"), "a number > 0 and <= 1"),
    ("target", 0, "a number > 0 and <= 1"),
    ("target", 1.5, "a number > 0 and <= 1"),
    ("target", None, "got null"),
    ("final_accuracy", 1.2, "a number >= 0 and <= 1"),
    ("final_accuracy", "0.9", "a number >= 0 and <= 1"),
    ("wall_to_target_s", -1, "a number > 0"),
    ("compile_s", -1, "a number >= 0"),
    ("compile_s", float("-inf"), "got -Infinity"),
    ("target_epoch", 0, "a whole number >= 1"),
    ("target_epoch", 2.5, "a whole number >= 1"),
    ("target_epoch", None, "seconds_to_target is 30.0 but target_epoch is null"),
    ("epochs_completed", -1, "a whole number >= 0"),
    ("epochs_completed", 10, "target_epoch (24) is after epochs_completed (10)"),
    ("status", "done", "one of completed"),
    ("status", ["completed"], "got a JSON list"),
    ("data", [1], "an object with image_format"),
    ("data", {"image_format": "bmp"}, "one of pickle, png"),
    ("data", {"jpeg_copy": 1}, "true, false or null"),
    ("data", {"test_images": "10000"}, "a whole number >= 1"),
    ("device", ["H200"], "one line of text"),
    ("device", "H200\nrank 1", "one line of text"),
    ("device", "x" * 5000, "one line of text"),
    ("device_count", 0, "a whole number >= 1"),
    ("versions", ["3.15.1"], "an object of version strings"),
    ("versions", {"keras": 3}, "versions.keras"),
])
def test_a_bad_field_is_refused_in_one_line_naming_file_and_field(tmp_path, capsys, field, value, expected):
    path = write_results(tmp_path / "run" / "results.json")
    results = json.loads(path.read_text())
    results[field] = {**results["data"], **value} if field == "data" and isinstance(value, dict) else value
    path.write_text(json.dumps(results))
    code, out, _ = run_dawnbench(tmp_path, capsys, path)
    assert_one_line_error(code, out.err, str(path), expected, field.split(".")[0])
    assert not (tmp_path / "out" / "dawnbench_comparison.csv").exists()


@pytest.mark.parametrize("content, expected", [
    # json.loads accepts NaN and Infinity: the check of the field refuses them
    ('{"status": "completed", "target": 0.94, "seconds_to_target": NaN, "data": {"image_format": "pickle"}}', "got NaN"),
    ('{"status": "completed", "target": 0.94, "seconds_to_target": -Infinity, "data": {"image_format": "pickle"}}', "got -Infinity"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    (b'{"target": 0.94, "x": "\xff\xfe"}', "is not UTF-8 text"),
    (json.dumps({"a": 1}).encode("utf-16"), "is not UTF-8 text"),
    ("", "is not valid JSON"),
    ('"results"', "got a JSON string at the top level"),
    ("null", "got a JSON null at the top level"),
    ("{} trailing", "is not valid JSON"),
    ("9" * 5000, "is not valid JSON"),  # Python's 4300-digit limit
], ids=["NaN", "-Infinity", "deep-array", "deep-object", "not-utf8", "utf16", "empty", "string", "null", "trailing", "5000-digits"])
def test_a_file_that_is_not_a_results_object_is_refused_in_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "results.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, _ = run_dawnbench(tmp_path, capsys, path)
    assert_one_line_error(code, out.err, expected)


def test_missing_status_a_directory_a_pipe_a_huge_file_and_a_run_given_twice(tmp_path, capsys):
    results = json.loads(write_results(tmp_path / "ok.json").read_text())
    del results["status"]
    (tmp_path / "nostatus.json").write_text(json.dumps(results))
    os.mkfifo(tmp_path / "pipe.json")
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(run_results.MAX_RESULTS_BYTES + 1)  # sparse: no disk used
    cases = [
        ([tmp_path / "nostatus.json"], "it has no status"),
        ([tmp_path], "is a directory"),
        ([tmp_path / "pipe.json"], "is not a regular file"),  # would block on read
        ([tmp_path / "huge.json"], "is larger than 50 MB"),
        ([tmp_path / "ok.json", tmp_path / "ok.json"], "is given twice"),
        ([tmp_path / "ok.json" / "results.json"], "cannot read"),
    ]
    for paths, expected in cases:
        code, out, _ = run_dawnbench(tmp_path, capsys, *paths)
        assert_one_line_error(code, out.err, expected)


@pytest.mark.parametrize("status, reason", [
    ("interrupted", "the run was interrupted before its last epoch (reached in 30 s): not ranked"),
    ("running", "the run had not finished: status running"),
    ("diverged", "the run diverged (reached in 30 s): not ranked"),
])
def test_a_run_that_did_not_finish_is_shown_but_never_ranked(tmp_path, capsys, status, reason):
    code, out, rows = run_dawnbench(tmp_path, capsys, write_results(tmp_path / "results.json", status=status))
    assert code == 0 and reason in out.out and "NOT RANKED" in out.out
    assert not any(r["board"] == "THIS RUN" for r in rows)
    assert [int(r["rank"]) for r in rows if r["rank"]] == list(range(1, 38))


def test_a_run_evaluated_on_part_of_the_test_set_is_not_ranked(tmp_path, capsys):
    code, out, rows = run_dawnbench(tmp_path, capsys, write_results(tmp_path / "r.json", data={"test_images": 1000}))
    assert code == 0 and "its accuracy is on 1,000 test images, not CIFAR-10's 10,000" in out.out
    assert not any(r["board"] == "THIS RUN" for r in rows)


def test_wall_timing_needs_the_wall_time_and_devices_used_name_the_hardware(tmp_path, capsys):
    path = write_results(tmp_path / "r.json", wall_to_target_s=None)
    code, out, _ = run_dawnbench(tmp_path, capsys, path, extra=["--timing", "wall"])
    assert_one_line_error(code, out.err, "wall_to_target_s", "--timing wall")
    code, out, rows = run_dawnbench(tmp_path, capsys, write_results(tmp_path / "d.json", devices=2, device_count=8))
    assert [r["hardware"] for r in rows if r["board"] == "THIS RUN"] == ["2x NVIDIA H200 (gpu)"]


def test_labels_and_fields_with_dollars_are_drawn_as_text(tmp_path, capsys):
    # Matplotlib would read "$\frac{$" as mathtext and fail while saving the figure.
    path = write_results(tmp_path / "r.json", device="$\\frac{$")
    code, out, _ = run_dawnbench(tmp_path, capsys, path, extra=["--label", "$\\sqrt{$"], plot=True)
    assert code == 0 and (tmp_path / "out" / "dawnbench.png").stat().st_size > 10_000


@pytest.mark.parametrize("flags, expected", [(["--label", ""], "--label"), (["--label", "a\nb"], "--label"), (["--title", "x\ny"], "--title")])
def test_a_label_or_title_must_be_one_line(tmp_path, capsys, flags, expected):
    with pytest.raises(SystemExit) as e:
        dawnbench.main([str(write_results(tmp_path / "r.json")), "--no-plot", *flags])
    assert_one_line_error(e.value.code, capsys.readouterr().err, expected)


def test_the_ranking_never_ranks_a_nan_or_none_first():
    entries = leaderboard.leaderboard()
    for seconds in (float("nan"), None, -1.0, 0.0, float("inf")):
        with pytest.raises(ValueError, match="should be a number > 0"):
            leaderboard.rank_of(seconds, entries)
    broken = [*entries, leaderboard.Entry("broken", "?", float("nan"), "?", "DAWNBench")]
    with pytest.raises(ValueError, match="'broken'"):
        leaderboard.table_rows(broken)
    run = leaderboard.RunPlacement("x", "h", "f", 1, [float("nan")], float("nan"), 0.94, "ranked", "", ["r.json"])
    assert not run.ranked  # appended unranked, never inserted at rank 1
    assert leaderboard.table_rows(entries, run)[0]["entry"] != "=> x"


# --- predict: the model file, its shapes, the flags -------------------------------------


def _rezip(source, target, config=None):
    """A copy of the .keras zip `source`, with config.json edited by `config` (bytes -> bytes)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, config(data) if config and item.filename == "config.json" else data)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models (a pooling layer and a dense one), saved, and variants made by
    editing their files: built once, as each build and load costs time."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    with host_kernel_init():
        for name, shape, classes in (("good", (32, 32, 3), 10), ("gray", (32, 32, 1), 10), ("c100", (32, 32, 3), 100)):
            x = keras.Input(shape)
            model = keras.Model(x, keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling2D()(x)))
            paths[name] = folder / f"{name}.keras"
            model.save(paths[name])
        x = keras.Input((10,))
        keras.Model(x, keras.layers.Dense(10)(x)).save(folder / "vector.keras")
    paths["vector"] = folder / "vector.keras"
    good = paths["good"]
    with zipfile.ZipFile(paths["c100"]) as z:
        c100_config = z.read("config.json")
    edits = {
        "in64": lambda c: c.replace(b"[null, 32, 32, 3]", b"[null, 64, 64, 3]"),  # the pooling keeps the weights valid
        "softmax": lambda c: c.replace(b'"activation": "linear"', b'"activation": "softmax"'),
        "custom": lambda c: c.replace(b'"class_name": "Dense"', b'"class_name": "OurDense"').replace(b'"module": "keras.layers", "class_name": "OurDense"', b'"module": "ours", "class_name": "OurDense"'),
        "mismatch": lambda c: c100_config,  # another model's layers with these weights
    }
    for name, edit in edits.items():
        paths[name] = _rezip(good, folder / f"{name}.keras", edit)
    paths["truncated"] = folder / "truncated.keras"
    paths["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths["text"] = folder / "text.keras"
    paths["text"].write_text("not a zip")
    return paths


def run_predict(capsys, model, *flags, tmp_path):
    code = predict.main(["--model", str(model), "--smoke", "--results-dir", str(tmp_path), "--images", "0,1", *flags, *CACHE])
    return code, capsys.readouterr()


@pytest.mark.parametrize("name, expected", [
    ("in64", "takes inputs of shape (None, 64, 64, 3), the data's are images of shape (None, 32, 32, 3)"),
    ("gray", "takes inputs of shape (None, 32, 32, 1)"),
    ("vector", "takes inputs of shape (None, 10)"),
    ("c100", "predicts 100 classes, the data has 10"),
    ("custom", "a class Keras does not know, 'OurDense'"),
    ("mismatch", "cannot load"),
    ("truncated", "not a zip archive"),
    ("text", "not a zip archive"),
])
def test_a_model_of_other_data_or_not_a_model_is_refused_in_one_line(models, tmp_path, capsys, name, expected):
    code, out = run_predict(capsys, models[name], tmp_path=tmp_path)
    assert_one_line_error(code, out.err, expected, str(models[name]))
    assert not (tmp_path / "predict.png").exists()


def test_a_directory_a_pipe_and_a_model_with_nan_weights(models, tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.keras")
    for path, expected in ((tmp_path, "is a directory"), (tmp_path / "pipe.keras", "is not a regular file")):
        code, out = run_predict(capsys, path, tmp_path=tmp_path)
        assert_one_line_error(code, out.err, expected)
    model = keras.saving.load_model(models["good"])
    model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, "float32"))
    model.save(tmp_path / "nan.keras")
    code, out = run_predict(capsys, tmp_path / "nan.keras", tmp_path=tmp_path)
    assert_one_line_error(code, out.err, "gives NaN or infinite scores for 2 of 2 images")


def test_a_softmax_model_shows_its_own_probabilities(models, tmp_path, capsys):
    code, out = run_predict(capsys, models["softmax"], "--top", "10", tmp_path=tmp_path)
    assert code == 0
    line = next(line for line in out.out.splitlines() if line.startswith("test image 0:"))
    probabilities = [float(g.rsplit(" ", 1)[1]) for g in line.split("top-10: ")[1].rsplit(" (", 1)[0].split(", ")]
    from pipelines.cifar10 import synthetic_cifar10

    expected = keras.ops.convert_to_numpy(keras.saving.load_model(models["softmax"])(synthetic_cifar10(20, 100).x_test[:1].astype("float32")))[0]
    np.testing.assert_allclose(probabilities, sorted(expected, reverse=True), atol=1e-3)  # not softmax(softmax)


@pytest.mark.parametrize("flags, expected", [
    (["--top", "0"], "--top must be a whole number >= 1, got 0"),
    (["--top", "-3"], "--top must be a whole number >= 1"),
    (["--images", ""], "--images is empty"),
    (["--images", "1.5"], "expects comma-separated test-set indices"),
    (["--images", "1e3"], "expects comma-separated test-set indices"),
    (["--images", "\u0663"], "expects comma-separated test-set indices"),  # int() would read an Arabic-Indic 3
    (["--images", "9" * 30], "expects comma-separated test-set indices"),
    (["--images", ",".join(["0"] * 65)], "at most 64"),
    (["--images", "-1"], "out of range"),
    (["--images", "100"], "the test set has 100 images"),
])
def test_bad_flags_are_refused_in_one_line(models, tmp_path, capsys, flags, expected):
    code = predict.main(["--model", str(models["good"]), "--smoke", "--results-dir", str(tmp_path), *flags, *CACHE])
    assert_one_line_error(code, capsys.readouterr().err, expected)


def test_a_bad_results_json_beside_the_model_only_changes_the_caption(models, tmp_path, capsys):
    folder = tmp_path / "$\\frac{$"  # a "$" in the path: drawn as text, not mathtext
    folder.mkdir()
    (folder / "model.keras").write_bytes(models["good"].read_bytes())
    (folder / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    code, out = run_predict(capsys, folder / "model.keras", tmp_path=tmp_path)
    assert code == 0 and "(no readable results.json beside it)" in out.out and not out.err
    (folder / "results.json").write_text(json.dumps({"config": {"model": "$\\sqrt{$", "width": [1]}, "final_accuracy": float("nan"), "data": "x"}))
    code, out = run_predict(capsys, folder / "model.keras", tmp_path=tmp_path)
    assert code == 0 and "width ?, ? epochs on ? images (?); final test accuracy unknown" in out.out
