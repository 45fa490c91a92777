"""Hostile image folders for pipelines.image_folders: odd file types, names that are not UTF-8,
every Pillow image mode, class folders, the decoded cache, damaged and oversized images.

Every problem must be a DataError of one line naming the file, in seconds (a loader that
opens a FIFO hangs: the `no_hang` fixture fails such a test after 20 s instead).
"""

import io
import json
import os
import signal
import socket
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import decoded_cache, image_folders
from pipelines.cifar10 import CLASS_NAMES, DataError, load_cifar10
from tests.datasets import make_image_dir

pytestmark = pytest.mark.one_backend("jax")  # the same on either backend (tests/conftest.py)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may see this machine's CIFAR10_DIR or ~/.cache."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIFAR10_DIR", raising=False)


@pytest.fixture(autouse=True)
def no_hang():
    def hung(signum, frame):
        raise TimeoutError("the image-folder loader hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def load(root, **kwargs):
    return load_cifar10(root, verify=False, progress=False, download=False, **kwargs)


def error(root, **kwargs):
    """The DataError's message, checked to be one printable, JSON-able line."""
    with pytest.raises(DataError) as e:
        load(root, **kwargs)
    message = str(e.value)
    assert "\n" not in message and "\r" not in message, message
    message.encode("utf-8")  # no lone surrogates
    json.dumps(message, ensure_ascii=False).encode("utf-8")
    return message


def encoded(image, fmt="PNG", **params):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def raw_png(width, height, bit_depth, colour_type, rows=(), idat=True):
    """A PNG written by hand: 16-bit RGB / grey+alpha that Pillow cannot write, or a bare header."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows))) if idat else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IEND", b"")


@pytest.fixture
def root(tmp_path):
    """CIFAR-10's ten classes, 2 train and 1 test image each."""
    return make_image_dir(tmp_path / "imgs", 2, 1)


def two_classes(tmp_path, content, name="x.png"):
    """Classes a and b, one image each per split; train/a/<name> holds ``content``."""
    root = make_image_dir(tmp_path / "two", 1, 1, classes=("a", "b"))
    (root / "train" / "a" / "0000.png").unlink()
    (root / "train" / "a" / name).write_bytes(content)
    return root


# --- 1. entries that are not regular files: refused by name, never opened ----------------------


def fifo(path):
    os.mkfifo(path)


def unix_socket(path):
    cwd = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are limited to ~100 bytes: bind a short relative name
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(path.name)
        s.close()
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("x.png", fifo, "train/cat/x.png is a named pipe (FIFO), not an image file: remove it"),
        ("pipe", fifo, "train/cat/pipe is a named pipe (FIFO), not an image file"),
        ("s.png", unix_socket, "train/cat/s.png is a socket, not an image file"),
        ("null.png", lambda p: os.symlink("/dev/null", p), "train/cat/null.png is a character device"),
        ("gone.png", lambda p: os.symlink(p.parent / "missing.png", p), "train/cat/gone.png is a broken symbolic link (to "),
        ("loop.png", lambda p: os.symlink(p, p), "train/cat/loop.png is a symbolic link that cannot be followed"),
        ("d.png", lambda p: p.mkdir(), "unexpected folder"),
    ],
    ids=["fifo", "fifo-no-suffix", "socket", "device", "broken-link", "link-loop", "folder"],
)
def test_non_regular_entries_in_a_class_folder_are_refused_by_name_unopened(root, monkeypatch, name, make, expected):
    path = root / "train" / "cat" / name
    make(path)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    message = error(root)
    assert expected in message and str(path) in message
    assert str(path) not in opened


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda split: fifo(split / "zz"), "train/zz is a named pipe (FIFO), not a class folder"),
        (lambda split: (split / "notes.txt").write_text("x"), "train/notes.txt is a file, not a class folder"),
        (lambda split: os.symlink(split / "nowhere", split / "zz"), "train/zz is a broken symbolic link"),
    ],
    ids=["fifo", "file", "broken-link"],
)
def test_non_folders_in_a_split_are_refused_by_name(root, make, expected):
    make(root / "train")
    assert expected in error(root)


def test_a_symlink_to_an_image_loads_and_a_fifo_that_appears_later_does_not_hang(root, tmp_path):
    elsewhere = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((32, 32, 3), 123, np.uint8)).save(elsewhere)
    os.symlink(elsewhere, root / "train" / "cat" / "link.png")
    data = load(root)
    assert len(data.x_train) == 21
    (index,) = np.nonzero((data.x_train == 123).all(axis=(1, 2, 3)))
    assert data.y_train[index].tolist() == [3]
    # A file replaced by a FIFO between listing and decoding: opened without blocking, then refused.
    fifo(tmp_path / "late.png")
    with pytest.raises(DataError, match=r"late.png became a named pipe \(FIFO\) while the folder was read"):
        image_folders._decode_one(Image, str(tmp_path / "late.png"), False)


# --- 2. names that are not valid UTF-8 --------------------------------------------------------


def test_names_that_are_not_utf8(tmp_path):
    # An image folder whose own name, and one image's name, are Latin-1 bytes.
    root = make_image_dir(tmp_path / os.fsdecode(b"caf\xe9"), 1, 1)
    cat = os.fsencode(root / "train" / "cat")
    with open(os.path.join(cat, b"\xff-odd.png"), "wb") as f:
        f.write(encoded(Image.fromarray(np.full((32, 32, 3), 201, np.uint8))))
    data = load(root)
    assert len(data.x_train) == 11 and data.y_train[(data.x_train == 201).all(axis=(1, 2, 3))].tolist() == [3]
    assert "caf\\xe9" in data.source
    json.dumps(data.source, ensure_ascii=False).encode("utf-8")
    again = load(root)
    assert "decoded cache" in again.source
    np.testing.assert_array_equal(again.x_train, data.x_train)

    # A broken one is named, escaped, on one line.
    with open(os.path.join(cat, b"bad\xfe\n.png"), "wb") as f:
        f.write(b"not an image")
    assert "caf\\xe9/train/cat/bad\\xfe\\x0a.png is not a readable image" in error(root)
    os.unlink(os.path.join(cat, b"bad\xfe\n.png"))

    # A class folder name is a class name, printed and saved: refused.
    for split in (b"train", b"test"):
        bad_class = os.path.join(os.fsencode(root), split, b"d\xf6g")
        os.mkdir(bad_class)
        with open(os.path.join(bad_class, b"0.png"), "wb") as f:
            f.write(encoded(Image.new("RGB", (32, 32))))
    assert "class folder " in (message := error(root)) and "train/d\\xf6g has a name that is not valid UTF-8" in message


# --- 3. every image mode to 8-bit RGB -----------------------------------------------------------


PALETTE = [10, 20, 30, 200, 100, 50] + [0] * 762


def paletted(mode, value):
    im = Image.new(mode, (1, 1), value)
    im.putpalette(PALETTE)
    return im


# (mode, the pixel, the RGB expected, tolerance)
MODE_CASES = [
    ("1", 1, (255, 255, 255), 0),
    ("L", 77, (77, 77, 77), 0),
    ("LA", (77, 0), (77, 77, 77), 0),  # alpha dropped, colour kept
    ("La", (100, 128), (199, 199, 199), 1),  # premultiplied: un-premultiplied first
    ("P", 1, (200, 100, 50), 0),
    ("PA", (1, 0), (200, 100, 50), 0),
    ("RGB", (1, 2, 3), (1, 2, 3), 0),
    ("RGBA", (10, 20, 30, 0), (10, 20, 30), 0),
    ("RGBa", (100, 50, 0, 128), (199, 99, 0), 1),
    ("RGBX", (10, 20, 30, 0), (10, 20, 30), 0),
    ("CMYK", (0, 0, 0, 128), (127, 127, 127), 1),
    ("CMYK", (255, 0, 0, 0), (0, 255, 255), 0),
    ("YCbCr", (128, 128, 128), (128, 128, 128), 1),
    ("LAB", (0, 128, 128), (0, 0, 0), 2),
    ("LAB", (255, 128, 128), (255, 255, 255), 2),
    ("HSV", (0, 255, 255), (255, 0, 0), 0),
    ("I;16", 32767, (127, 127, 127), 0),  # 65535 // 2: mid grey, not white
    ("I;16", 65535, (255, 255, 255), 0),
    ("I;16L", 256, (1, 1, 1), 0),
    ("I;16B", 32767, (127, 127, 127), 0),
    ("I;16N", 51400, (200, 200, 200), 0),
    ("I", 32767, (127, 127, 127), 0),  # taken as 16-bit
    ("I", 70000, (255, 255, 255), 0),
    ("I", -5, (0, 0, 0), 0),
    ("F", 127.6, (127, 127, 127), 0),  # Pillow's F -> L: 0..255 scale, truncated
    ("F", 300.0, (255, 255, 255), 0),
]


def test_every_pillow_mode_becomes_8_bit_rgb():
    assert set(Image.MODES) <= {mode for mode, *_ in MODE_CASES}, "a new Pillow mode: decide how it decodes"
    for mode, value, expected, tolerance in MODE_CASES:
        im = paletted(mode, value) if mode in ("P", "PA") else Image.new(mode, (1, 1), value)
        rgb = image_folders._rgb_array(im, "x.png")
        assert rgb.dtype == np.uint8 and rgb.shape == (1, 1, 3), mode
        assert np.abs(rgb[0, 0].astype(int) - expected).max() <= tolerance, (mode, value, rgb[0, 0])

    class Unconvertible:
        mode, info = "XYZ", {}

        def convert(self, mode):
            raise ValueError("conversion from XYZ to RGB not supported")

    with pytest.raises(DataError, match=r"x.png has image mode XYZ, which Pillow cannot convert to RGB"):
        image_folders._rgb_array(Unconvertible(), "x.png")


def grey16(value):
    return encoded(Image.fromarray(np.full((32, 32), value, np.uint16)))


def p_with_alpha_bytes():
    im = Image.new("P", (32, 32), 1)
    im.putpalette(PALETTE)
    return encoded(im, transparency=b"\x00\x80")  # tRNS with one alpha per palette entry


@pytest.mark.parametrize(
    "content, name, expected, tolerance, image_format",
    [
        (grey16(32767), "x.png", (127, 127, 127), 0, "png"),
        (grey16(65535), "x.png", (255, 255, 255), 0, "png"),
        (raw_png(32, 32, 16, 2, [struct.pack(">HHH", 65535, 32767, 256) * 32] * 32), "x.png", (255, 127, 1), 0, "png"),
        (raw_png(32, 32, 16, 4, [struct.pack(">HH", 32767, 0) * 32] * 32), "x.png", (127, 127, 127), 0, "png"),
        (raw_png(32, 32, 4, 0, [b"\x77" * 16] * 32), "x.png", (119, 119, 119), 0, "png"),
        (encoded(Image.new("1", (32, 32), 1)), "x.png", (255, 255, 255), 0, "png"),
        (encoded(Image.new("LA", (32, 32), (90, 0))), "x.png", (90, 90, 90), 0, "png"),
        (p_with_alpha_bytes(), "x.png", (200, 100, 50), 0, "png"),
        (encoded(Image.new("RGBA", (32, 32), (10, 20, 30, 0))), "x.png", (10, 20, 30), 0, "png"),
        (encoded(Image.new("CMYK", (32, 32), (0, 0, 0, 128)), "JPEG"), "x.jpg", (127, 127, 127), 3, "jpeg"),
        (encoded(Image.new("L", (32, 32), 77), "JPEG"), "x.jpeg", (77, 77, 77), 2, "jpeg"),
        # A JPEG named .png is decoded, and counted, as the JPEG it is.
        (encoded(Image.new("RGB", (32, 32), (200, 40, 40)), "JPEG"), "x.png", (200, 40, 40), 4, "jpeg"),
    ],
    ids=["grey16-half", "grey16-full", "rgb16", "grey16-alpha", "grey4", "1-bit", "LA", "P-tRNS-bytes", "RGBA",
         "CMYK-jpeg", "L-jpeg", "jpeg-named-png"],
)
def test_image_files_of_each_mode_decode_to_their_pixel(tmp_path, content, name, expected, tolerance, image_format):
    root = two_classes(tmp_path, content, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning either (P with transparency bytes)
        data = load(root)
    (pixel,) = {tuple(p) for p in data.x_train[data.y_train == 0].reshape(-1, 3).tolist()}
    assert np.abs(np.array(pixel) - expected).max() <= tolerance, pixel
    assert data.image_format == image_format


# --- 4. class folders -----------------------------------------------------------------------


def test_class_folders_must_agree_and_number_2_to_10(tmp_path):
    nine = make_image_dir(tmp_path / "nine", 1, 1, classes=CLASS_NAMES[:9])
    assert "has 9 of CIFAR-10's 10 class folders (missing: truck; not CIFAR-10's: none): add or rename" in error(nine)
    typo = make_image_dir(tmp_path / "typo", 1, 1, classes=(*CLASS_NAMES[:3], "Cat", *CLASS_NAMES[4:]))
    assert "has 9 of CIFAR-10's 10 class folders (missing: cat; not CIFAR-10's: Cat)" in error(typo)
    eleven = make_image_dir(tmp_path / "eleven", 1, 1, classes=(*CLASS_NAMES, "zebra"))
    message = error(eleven)
    assert "has 11 class folders in train/ and test/ (airplane, automobile," in message and "zebra), expected 2 to 10" in message
    one = make_image_dir(tmp_path / "one", 1, 1, classes=("only",))
    assert "has 1 class folders in train/ and test/ (only), expected 2 to 10" in error(one)
    mixed = make_image_dir(tmp_path / "mixed", 1, 1)
    for f in (mixed / "test" / "truck").iterdir():
        f.unlink()
    (mixed / "test" / "truck").rmdir()
    assert "different class folders (only in train: truck; only in test: none)" in error(mixed)
    hidden_only = make_image_dir(tmp_path / "hidden", 1, 1)
    for f in (hidden_only / "test" / "cat").iterdir():
        f.rename(f.with_name("." + f.name))
    assert "class folder " in (message := error(hidden_only)) and "test/cat is empty" in message
    assert load(make_image_dir(tmp_path / "pets", 1, 1, classes=("dogs", "cats", "birds"))).class_names == (
        "birds", "cats", "dogs",
    )


def test_empty_or_missing_splits(tmp_path):
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    (root / "test").write_text("not a folder")
    assert "has no test/ split (test/ is not a folder)" in error(root)
    (root / "test").unlink()
    (root / "test").mkdir()
    assert "imgs/train has no class folders" in error(root)


# --- 5. the decoded cache ---------------------------------------------------------------------


def caches(folder, pattern=".cifar10-cache-*"):
    return sorted(p.name for p in folder.glob(pattern))


def test_cache_sees_a_rewrite_with_the_same_size_and_mtime(root):
    path = root / "train" / "cat" / "0000.png"
    # Uncompressed PNGs: the same size whatever the pixels.
    path.write_bytes(encoded(Image.fromarray(np.full((32, 32, 3), 11, np.uint8)), compress_level=0))
    first = load(root)
    (old,) = caches(root)
    before = path.stat()
    path.write_bytes(encoded(Image.fromarray(np.full((32, 32, 3), 222, np.uint8)), compress_level=0))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)

    second = load(root)

    assert (first.x_train == 11).all(axis=(1, 2, 3)).sum() == 1
    assert (second.x_train == 222).all(axis=(1, 2, 3)).sum() == 1 and not (second.x_train == 11).all(axis=(1, 2, 3)).any()
    (new,) = caches(root)  # the old cache was replaced, not left beside the new one
    assert new != old and "decoded cache" in load(root).source


def test_a_new_cache_removes_only_the_caches_it_replaces(root, tmp_path, monkeypatch):
    load(root, resize=True)  # another slot: kept
    stale_temp, fresh_temp = root / ".cifar10-cache-r0-tmp-killed.tmp", root / ".cifar10-cache-r0-tmp-writing.tmp"
    legacy, foreign = root / ".cifar10-cache-0123456789abcdef.npz", root / "my-cifar10-cache-r0-0123456789abcdef.npz"
    for f in (stale_temp, fresh_temp, legacy, foreign):
        f.write_bytes(b"x")
    os.utime(stale_temp, (time.time() - 7200,) * 2)
    load(root)
    assert caches(root, ".cifar10-cache-r0-*.npz") and caches(root, ".cifar10-cache-r1-*.npz")
    assert not stale_temp.exists() and not legacy.exists() and fresh_temp.exists() and foreign.exists()

    # The shared fallback folder: only this image folder's caches are replaced.
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    other_folder = cache_dir / "cifar10-cache-aaaaaaaaaaaa-r0-0123456789abcdef.npz"
    other_folder.write_bytes(b"x")
    real_mkstemp = decoded_cache.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # the data folder is read-only
        if os.path.samefile(dir, root):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(decoded_cache.tempfile, "mkstemp", mkstemp)
    for f in root.glob(".cifar10-cache-r0-*.npz"):
        f.unlink()
    load(root, cache_dir=cache_dir)
    (first,) = set(caches(cache_dir, "cifar10-cache-*.npz")) - {other_folder.name}
    Image.new("RGB", (32, 32)).save(root / "train" / "cat" / "new.png")
    load(root, cache_dir=cache_dir)
    now = caches(cache_dir, "cifar10-cache-*.npz")
    assert other_folder.name in now and first not in now and len(now) == 2


def test_an_interrupted_cache_write_leaves_no_file(root, monkeypatch):
    def interrupted(f, **arrays):
        f.write(b"PK half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(decoded_cache.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(root)
    assert caches(root) == []

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler here")

    def terminated(f, **arrays):
        f.write(b"PK half a zip")
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # else the kill below ends pytest
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    monkeypatch.setattr(decoded_cache.np, "savez", terminated)
    with pytest.raises(SystemExit) as e:
        load(root)
    assert e.value.code == 128 + signal.SIGTERM
    assert caches(root) == [] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_damaged_cache_is_decoded_again(root):
    first = load(root)
    (cache,) = root.glob(".cifar10-cache-*.npz")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # truncated
    with pytest.warns(UserWarning, match=r"ignoring unreadable cache .*decoding again"):
        again = load(root)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    with np.load(cache) as z:  # rewritten whole
        assert z["x_train"].shape == (20, 32, 32, 3)
    with open(cache, "wb") as f:  # readable, but not this folder's arrays
        np.savez(f, x_train=np.zeros((3, 2)), y_train=np.zeros(3), x_test=np.zeros(1), y_test=np.zeros(1),
                 class_names=np.array(["a"]), formats=np.array(["png"]))
    np.testing.assert_array_equal(load(root).x_test, first.x_test)


# --- 6. damaged, odd and oversized images -----------------------------------------------------


def jpeg_bytes():
    return encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize(
    "content, name, expected, kwargs",
    [
        (b"", "x.png", "train/a/x.png is empty (0 bytes): replace it", {}),
        (jpeg_bytes()[:300], "x.jpg", "train/a/x.jpg is not a readable image (OSError:", {}),
        (encoded(Image.new("RGB", (32, 32)))[:-20], "x.png", "train/a/x.png is not a readable image", {}),
        (b"hello", "x.jpg", "train/a/x.jpg is not a readable image (UnidentifiedImageError", {}),
        (encoded(Image.new("RGB", (32, 32)), "GIF"), "x.png", "train/a/x.png holds a GIF image, expected PNG or JPEG", {}),
        (encoded(Image.new("RGB", (40, 30))), "x.png", "train/a/x.png is 40x30, expected 32x32: pass --resize", {}),
        (raw_png(20000, 20000, 8, 0, idat=False), "x.png", "train/a/x.png is too large to decode (", {"resize": True}),
        (raw_png(10000, 9000, 8, 0, idat=False), "x.png", "train/a/x.png is too large to decode (", {"resize": True}),
    ],
    ids=["zero-bytes", "truncated-jpeg", "truncated-png", "text-as-jpg", "gif-as-png", "40x30", "bomb-error", "bomb-warning"],
)
def test_damaged_and_odd_images_are_one_line_errors(tmp_path, content, name, expected, kwargs):
    assert expected in error(two_classes(tmp_path, content, name), **kwargs)


def test_bombs_are_refused_even_with_pillows_check_off_and_big_images_resize(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    root = two_classes(tmp_path, raw_png(10000, 9000, 8, 0, idat=False))
    assert "x.png is 10000x9000, over the 89,478,485-pixel limit (a decompression bomb?)" in error(root, resize=True)
    (root / "train" / "a" / "x.png").write_bytes(encoded(Image.new("RGB", (640, 480), (9, 8, 7))))
    data = load(root, resize=True)
    assert data.x_train[data.y_train == 0].reshape(-1, 3).tolist() == [[9, 8, 7]] * 1024


def test_unreadable_files_and_folders(root, monkeypatch):
    # chmod does not stop root: refuse the way the OS would.
    locked = str(root / "train" / "dog" / "0001.png")
    real_open, real_scandir = os.open, os.scandir

    def denied(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    assert "cannot read " + locked + " (Permission denied): make it readable (chmod a+r)" in error(root)
    monkeypatch.setattr(os, "open", real_open)

    def unlisted(path="."):
        if str(path).endswith("bird"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", unlisted)
    assert "cannot list " + str(root / "train" / "bird") + " (Permission denied): make it readable" in error(root)
