"""Tests for pipelines.cifar10 and its sources (pipelines.pickle_batches, image_folders, tfds_source):
both layouts, the restricted unpickler, the decode cache, fallbacks, errors."""

import hashlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from pipelines import decoded_cache, pickle_batches, tfds_source
from pipelines.cifar10 import CLASS_NAMES, DataError, load_cifar10
from tests.datasets import batch_dict, make_image_dir, make_pickle_dir, synthetic_arrays, write_batch

pytestmark = pytest.mark.one_backend("jax")  # the same on either backend (tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may see this machine's CIFAR10_DIR, Keras cache or ~/.cache."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    return home


@pytest.fixture
def host_reachable(monkeypatch):
    """The download host answers (tests with a fake tensorflow-datasets; no real download)."""
    monkeypatch.setattr(tfds_source, "_unreachable", lambda url, timeout=None: None)


def load(path, **kwargs):
    kwargs.setdefault("verify", False)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("download", False)
    return load_cifar10(path, **kwargs)


# --- pickle layout -----------------------------------------------------------------


def test_pickle_round_trip_puts_pixels_at_nhwc_positions(tmp_path):
    make_pickle_dir(tmp_path, n_per_batch=20, n_test=10)
    batch_dir = tmp_path / "cifar-10-batches-py"
    # A hand-made first row: value at flat index c*1024 + y*32 + x must land at (y, x, c).
    row = np.zeros(3072, np.uint8)
    row[0 * 1024 + 0 * 32 + 1] = 11  # R at y=0, x=1
    row[1 * 1024 + 5 * 32 + 7] = 22  # G at y=5, x=7
    row[2 * 1024 + 31 * 32 + 30] = 33  # B at y=31, x=30
    x3, y3 = synthetic_arrays(20, seed=7)
    batch = batch_dict(x3, y3)
    batch[b"data"][0] = row
    write_batch(batch_dir / "data_batch_3", batch)

    data = load(tmp_path)

    assert data.image_format == "pickle"
    assert data.class_names == CLASS_NAMES
    assert data.x_train.shape == (100, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10, 32, 32, 3) and data.x_test.dtype == np.uint8
    assert data.y_train.dtype == np.int32 and data.y_test.dtype == np.int32
    first = data.x_train[40]  # first image of data_batch_3
    assert (first[0, 1, 0], first[5, 7, 1], first[31, 30, 2]) == (11, 22, 33)
    assert int(first.sum()) == 11 + 22 + 33
    x, y = synthetic_arrays(100, seed=0)
    np.testing.assert_array_equal(data.x_train[:40], x[:40])
    np.testing.assert_array_equal(data.x_train[41:60], x3[1:])
    np.testing.assert_array_equal(data.x_train[60:], x[60:])
    np.testing.assert_array_equal(data.y_train[:40], y[:40])
    np.testing.assert_array_equal(data.y_train[40:60], y3)
    xt, yt = synthetic_arrays(10, seed=1)
    np.testing.assert_array_equal(data.x_test, xt)
    np.testing.assert_array_equal(data.y_test, yt)
    assert "cifar-10-batches-py" in data.source


def test_pickle_layout_accepts_parent_and_batch_folder(tmp_path):
    make_pickle_dir(tmp_path)
    a = load(tmp_path)
    b = load(tmp_path / "cifar-10-batches-py")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.x_train) == 100 and len(a.x_test) == 20


def test_verify_rejects_unofficial_batch_and_no_verify_loads_it(tmp_path):
    make_pickle_dir(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_1.*md5.*--no-verify") as e:
        load(tmp_path, verify=True)
    assert "\n" not in str(e.value)
    assert len(load(tmp_path, verify=False).x_train) == 100


def test_verify_accepts_a_batch_whose_md5_is_official(tmp_path, monkeypatch):
    make_pickle_dir(tmp_path)
    batch_dir = tmp_path / "cifar-10-batches-py"
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in batch_dir.iterdir()}
    monkeypatch.setattr(pickle_batches, "_BATCH_MD5", sums)
    assert "md5 verified" in load(tmp_path, verify=True).source


def test_python3_protocol2_batch_is_accepted(tmp_path):
    """Copies re-saved by Python 3 rebuild bytes through _codecs.encode; that must still load."""
    make_pickle_dir(tmp_path)
    x, y = synthetic_arrays(20, seed=3)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(batch_dict(x, y), protocol=2))
    np.testing.assert_array_equal(load(tmp_path).x_train[20:40], x)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_code_and_does_not_run_it(tmp_path):
    make_pickle_dir(tmp_path)
    target = tmp_path / "pwned"
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    evil.write_bytes(pickle.dumps({b"data": _Exploit(target), b"labels": []}, protocol=2))
    # Sanity: an unrestricted load of this file would create the target.
    assert b"system" in evil.read_bytes()

    with pytest.raises(DataError, match=r"data_batch_4.*(posix|os)\.system"):
        load(tmp_path)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_other_globals(tmp_path, protocol):
    make_pickle_dir(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}, protocol=protocol))
    with pytest.raises(DataError, match=r"test_batch.*pathlib"):
        load(tmp_path)


def test_truncated_batch(tmp_path):
    make_pickle_dir(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_5 is truncated"):
        load(tmp_path)


def test_wrong_shape_data(tmp_path):
    make_pickle_dir(tmp_path)
    batch = batch_dict(*synthetic_arrays(10))
    batch[b"data"] = batch[b"data"][:, :3000]
    write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2", batch)
    with pytest.raises(DataError, match=r"data_batch_2.*\(10, 3000\).*\(N, 3072\)"):
        load(tmp_path)


def test_wrong_dtype_data(tmp_path):
    make_pickle_dir(tmp_path)
    batch = batch_dict(*synthetic_arrays(10))
    batch[b"data"] = batch[b"data"].astype(np.float32)
    write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2", batch)
    with pytest.raises(DataError, match=r"data_batch_2.*float32"):
        load(tmp_path)


def test_missing_labels_key(tmp_path):
    make_pickle_dir(tmp_path)
    batch = batch_dict(*synthetic_arrays(10))
    del batch[b"labels"]
    write_batch(tmp_path / "cifar-10-batches-py" / "test_batch", batch)
    with pytest.raises(DataError, match=r"test_batch has no 'labels'"):
        load(tmp_path)


def test_labels_out_of_range(tmp_path):
    make_pickle_dir(tmp_path)
    x, y = synthetic_arrays(10)
    y[3] = 10
    write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1", batch_dict(x, y))
    with pytest.raises(DataError, match=r"data_batch_1: labels must be 0\.\.9, found 10"):
        load(tmp_path)


def test_missing_batch_file(tmp_path):
    make_pickle_dir(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_3"):
        load(tmp_path)


# --- folder errors -------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*--data-dir"):
        load(tmp_path / "nowhere")


def test_file_instead_of_directory(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz .*is an archive.*extract"):
        load(archive)


def test_neither_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"stuff.*neither.*data_batch_1\.\.5.*train/<class>") as e:
        load(tmp_path / "stuff")
    assert "\n" not in str(e.value)


# --- image-folder layout -------------------------------------------------------------


def test_png_folder_round_trip_in_cifar_order(tmp_path):
    from PIL import Image

    # Folders created in reverse order: "truck" is created first and gets colour 0.
    root = make_image_dir(tmp_path / "imgs", n_train_per_class=4, n_test_per_class=2, classes=CLASS_NAMES[::-1])
    known = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3).astype(np.uint8)
    Image.fromarray(known).save(root / "train" / "cat" / "0001.png")
    # A grey image must come back as RGB.
    Image.fromarray(np.full((32, 32), 77, np.uint8), mode="L").save(root / "test" / "ship" / "0000.png")

    data = load(root)

    assert data.image_format == "png"
    assert data.class_names == CLASS_NAMES
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_test.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(np.sort(data.y_train), np.repeat(np.arange(10), 4))
    np.testing.assert_array_equal(np.sort(data.y_test), np.repeat(np.arange(10), 2))
    # Both splits are in a fixed shuffled order; each image keeps its own label.
    assert data.y_train[index_of(data.x_train, known)] == 3  # cat
    assert data.y_test[index_of(data.x_test, np.full((32, 32, 3), 77, np.uint8))] == 8  # ship
    with Image.open(root / "train" / "truck" / "0002.png") as im:
        assert data.y_train[index_of(data.x_train, np.asarray(im))] == 9
    # truck was given colour 0 (red) although its label is 9.
    assert data.x_train[data.y_train == 9][..., 0].mean() > 150
    assert data.x_train[data.y_train == 9][..., 1].mean() < 90


def index_of(images, image):
    """The one index at which `images` holds `image`."""
    (matches,) = np.nonzero((images == image).all(axis=(1, 2, 3)))
    assert len(matches) == 1, f"found {len(matches)} copies"
    return matches[0]


def test_image_folder_order_is_class_mixed_and_fixed_in_both_splits(tmp_path):
    # --subset N takes the first N training images, predict --images 0,5,17
    # the first test images: like the official batches, they must not all be
    # airplanes, and the order must be the same at every load.
    root = make_image_dir(tmp_path / "imgs", n_train_per_class=20, n_test_per_class=10)
    first = load(root)
    assert len(set(first.y_train[:30].tolist())) >= 6
    assert len(set(first.y_test[:30].tolist())) >= 6
    assert not np.array_equal(first.y_test, np.sort(first.y_test))
    again = load(root)  # from the decoded cache
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    for cache in root.glob(".cifar10-cache-*.npz"):
        cache.unlink()
    decoded_again = load(root)
    np.testing.assert_array_equal(first.y_train, decoded_again.y_train)
    np.testing.assert_array_equal(first.y_test, decoded_again.y_test)
    np.testing.assert_array_equal(first.x_test, decoded_again.x_test)


def test_other_class_names_get_sorted_labels(tmp_path):
    root = make_image_dir(tmp_path / "pets", n_train_per_class=3, n_test_per_class=1, classes=("dogs", "cats", "birds"))
    data = load(root)
    assert data.class_names == ("birds", "cats", "dogs")
    np.testing.assert_array_equal(np.sort(data.y_train), [0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_too_many_classes(tmp_path):
    root = make_image_dir(tmp_path / "many", 1, 1, classes=[f"c{i:02d}" for i in range(11)])
    with pytest.raises(DataError, match=r"11 class folders.*2 to 10"):
        load(root)


def test_jpeg_folder(tmp_path):
    root = make_image_dir(tmp_path / "jpg", n_train_per_class=2, n_test_per_class=1, fmt="jpeg")
    data = load(root)
    assert data.image_format == "jpeg"
    assert "JPEG" in data.source
    assert data.x_train.shape == (20, 32, 32, 3)
    # Lossy, but each class keeps its colour: truck (colour 9) is purple-ish, frog (6) near white.
    assert data.x_train[data.y_train == 6].mean() > 200
    assert abs(float(data.x_train[data.y_train == 9][..., 2].mean()) - 160) < 15


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    import PIL.Image

    root = make_image_dir(tmp_path / "imgs", 2, 1)
    first = load(root)
    caches = list(root.glob(".cifar10-cache-*.npz"))
    assert len(caches) == 1
    assert str(caches[0]) in first.source
    assert not list(root.glob("*.tmp")) and not list(root.glob(".*.tmp"))

    def broken_open(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(PIL.Image, "open", broken_open)
    second = load(root)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert second.class_names == first.class_names and second.image_format == "png"


def test_changed_folder_invalidates_cache(tmp_path, monkeypatch):
    import PIL.Image

    root = make_image_dir(tmp_path / "imgs", 2, 1)
    load(root)
    (root / "train" / "dog" / "0002.png").write_bytes((root / "train" / "dog" / "0000.png").read_bytes())
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))

    data = load(root)

    assert len(opened) == 31
    assert len(data.x_train) == 21 and (data.y_train == 5).sum() == 3
    assert len(list(root.glob(".cifar10-cache-*.npz"))) == 1  # the new cache replaced the old one


def test_corrupt_cache_is_decoded_again(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    first = load(root)
    (cache,) = root.glob(".cifar10-cache-*.npz")
    cache.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load(root)
    np.testing.assert_array_equal(first.x_train, again.x_train)


def test_resize_flag_gets_its_own_cache(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    load(root)
    load(root, resize=True)
    assert len(list(root.glob(".cifar10-cache-*.npz"))) == 2


def test_read_only_data_dir_falls_back_to_cache_dir(tmp_path, monkeypatch):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    cache_dir = tmp_path / "cache"
    # chmod alone does not stop root, so refuse temp files in the data folder as a read-only mount would.
    real_mkstemp = decoded_cache.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if Path(dir) == root:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(decoded_cache.tempfile, "mkstemp", mkstemp)
    root.chmod(0o555)
    try:
        first = load(root, cache_dir=cache_dir)
        second = load(root, cache_dir=cache_dir)
    finally:
        root.chmod(0o755)
    assert not list(root.glob(".cifar10-cache-*"))
    assert len(list(cache_dir.glob("cifar10-cache-*.npz"))) == 1
    assert str(cache_dir) in second.source
    np.testing.assert_array_equal(first.x_test, second.x_test)


def test_uncachable_folder_still_loads_with_a_warning(tmp_path, monkeypatch):
    root = make_image_dir(tmp_path / "imgs", 2, 1)

    def mkstemp(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(decoded_cache.tempfile, "mkstemp", mkstemp)
    with pytest.warns(UserWarning, match="could not cache"):
        data = load(root, cache_dir=tmp_path / "cache")
    assert "not cached" in data.source and len(data.x_train) == 20


def test_progress_bar_counts_every_image(tmp_path, monkeypatch, capsys):
    updates = []

    class FakeProgbar:
        def __init__(self, target, **kwargs):
            updates.append(("target", target))

        def update(self, current):
            updates.append(("update", current))

    fake_utils = types.ModuleType("keras.utils")
    fake_utils.Progbar = FakeProgbar
    fake_keras = types.ModuleType("keras")
    fake_keras.utils = fake_utils
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    monkeypatch.setitem(sys.modules, "keras.utils", fake_utils)
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    load(root, progress=True)
    assert updates[0] == ("target", 30) and updates[-1] == ("update", 30)
    assert "Decoding 30 images" in capsys.readouterr().out


def test_empty_class_folder(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    for f in (root / "train" / "bird").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train/bird is empty"):
        load(root)


def test_non_image_file(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    (root / "train" / "deer" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"deer/notes.txt is not an image"):
        load(root)


def test_corrupt_image_file(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    (root / "test" / "horse" / "0000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"horse/0000.png is not a readable image"):
        load(root)


def test_hidden_files_are_ignored(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    (root / "train" / "deer" / ".DS_Store").write_bytes(b"x")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    assert len(load(root).x_train) == 20


def test_wrong_size_image_and_resize(tmp_path):
    from PIL import Image

    root = make_image_dir(tmp_path / "imgs", 2, 1)
    Image.fromarray(np.full((32, 33, 3), 90, np.uint8)).save(root / "train" / "frog" / "0001.png")
    with pytest.raises(DataError, match=r"frog/0001.png is 33x32, expected 32x32: pass --resize"):
        load(root)
    data = load(root, resize=True)
    assert data.x_train.shape == (20, 32, 32, 3)
    assert data.y_train[index_of(data.x_train, np.full((32, 32, 3), 90, np.uint8))] == 6  # frog


def test_no_test_split(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in (root / "test").iterdir():
        d.rmdir()
    (root / "test").rmdir()
    with pytest.raises(DataError, match=r"imgs has no test/ split"):
        load(root)


def test_train_and_test_classes_differ(tmp_path):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    (root / "test" / "ship").rename(root / "test" / "boat")
    with pytest.raises(DataError, match=r"different class folders.*only in train: ship; only in test: boat"):
        load(root)


# --- resolution order ------------------------------------------------------------------


def test_env_var_used_when_data_dir_is_none(tmp_path, monkeypatch):
    root = make_image_dir(tmp_path / "imgs", 2, 1)
    monkeypatch.setenv("CIFAR10_DIR", str(root))
    data = load_cifar10(verify=False, download=False, progress=False)
    assert "CIFAR10_DIR" in data.source and len(data.x_train) == 20


def test_env_var_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"gone \(from CIFAR10_DIR\) does not exist"):
        load_cifar10(download=False, progress=False)


def test_keras_cache_used_when_nothing_named(isolated_env):
    make_pickle_dir(isolated_env / ".keras" / "datasets", n_per_batch=10, n_test=10)
    data = load_cifar10(verify=False, download=False, progress=False)
    assert data.image_format == "pickle" and len(data.x_train) == 50
    assert "Keras cache" in data.source and ".keras" in data.source


def test_nothing_found_without_download():
    with pytest.raises(DataError, match=r"no CIFAR-10 found.*--data-dir.*CIFAR10_DIR"):
        load_cifar10(download=False, progress=False)


def test_failed_download_is_a_data_error(monkeypatch, host_reachable):
    fake_tfds = types.ModuleType("tensorflow_datasets")

    def fail(*args, **kwargs):
        raise ConnectionError("no route to host\nsecond line")

    fake_tfds.load = fail
    fake_tfds.as_numpy = lambda splits: splits
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds)
    with pytest.raises(DataError) as e:
        load_cifar10(progress=False)
    message = str(e.value)
    assert "--data-dir" in message and "CIFAR10_DIR" in message
    assert "tensorflow-datasets failed: ConnectionError: no route to host" in message
    assert "\n" not in message


def test_missing_tfds_is_a_data_error(monkeypatch, host_reachable):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(DataError, match=r"no CIFAR-10 found: pass --data-dir.*failed: ModuleNotFoundError"):
        load_cifar10(progress=False)


def test_tfds_source_is_converted(monkeypatch, host_reachable):
    fake_tfds = types.ModuleType("tensorflow_datasets")
    x, y = synthetic_arrays(30)
    fake_tfds.load = lambda *a, **k: [(x, y.astype(np.int64)), (x[:10], y[:10].astype(np.int64))]
    fake_tfds.as_numpy = lambda splits: splits
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds)
    data = load_cifar10(progress=False)
    assert data.image_format == "tfds" and data.y_train.dtype == np.int32
    np.testing.assert_array_equal(data.x_test, x[:10])


def test_unreachable_download_host_fails_in_seconds_without_starting_tensorflow_datasets(monkeypatch):
    # No data here, and the download host refuses (a closed port on this machine):
    # one line naming --data-dir, CIFAR10_DIR and the layouts, before tfds is touched.
    monkeypatch.setattr(tfds_source, "_TFDS_URL", "https://127.0.0.1:9/cifar-10-binary.tar.gz")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # importing it would fail the test differently
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        load_cifar10(progress=False)
    assert time.monotonic() - start < 6
    message = str(e.value)
    assert "download host 127.0.0.1:9 cannot be reached (ConnectionRefusedError" in message and "\n" not in message
    assert "--data-dir" in message and "CIFAR10_DIR" in message and "train/<class>/*.png|jpg" in message


def test_a_silent_download_host_is_given_up_on_after_the_timeout(monkeypatch):
    released = threading.Event()

    def never_answers(*args, **kwargs):  # until the test is over, then as a dead host would
        released.wait(30)
        raise OSError("no answer")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    start = time.monotonic()
    try:
        assert tfds_source._unreachable("https://example.invalid/x", timeout=0.5) == "no answer in 0.5s"
        assert time.monotonic() - start < 2
    finally:
        released.set()


def test_a_prepared_tensorflow_datasets_copy_is_used_without_asking_the_network(isolated_env, monkeypatch):
    prepared = isolated_env / "tfds" / "cifar10" / "3.0.2"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    monkeypatch.setenv("TFDS_DATA_DIR", str(isolated_env / "tfds"))
    monkeypatch.setattr(tfds_source, "_unreachable", lambda *a, **k: pytest.fail("the network was asked"))
    fake_tfds = types.ModuleType("tensorflow_datasets")
    x, y = synthetic_arrays(30)
    fake_tfds.load = lambda *a, **k: [(x, y), (x[:10], y[:10])]
    fake_tfds.as_numpy = lambda splits: splits
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds)
    assert load_cifar10(progress=False).image_format == "tfds"


# Each module is imported first in a fresh interpreter, so an import cycle between them fails here too.
@pytest.mark.parametrize(
    "module",
    ["pipelines.cifar10", "pipelines.dataset", "pipelines.pickle_batches", "pipelines.image_folders",
     "pipelines.tfds_source", "pipelines.synthetic", "pipelines.targets"],
)
def test_import_does_not_pull_in_tensorflow(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'PIL', 'keras') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
