"""The image-folder layout: ``train/<class>/*.png|jpg`` and ``test/<class>/*``.

Labels follow the class folders (CIFAR-10's names in CIFAR-10's order, else
sorted), and each split is put in one fixed random order. Decoding 60,000
images takes a while, so it is done once: the arrays are cached as an ``.npz``
in the data folder (or in ``cache_dir`` when that is not writable), keyed on
the folder's listing, so any change to the folder decodes it again.

Pillow is imported only to decode, and Keras only for the progress bar.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pipelines.dataset import CLASS_NAMES, IMAGE_SHAPE, DataError, checked, first_line

_DEFAULT_CACHE_DIR = "~/.cache/davidnet"
_IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
# Bump when the cache's contents or decoding change, so old caches are not trusted.
_CACHE_VERSION = 2  # 2: the test split shuffled too
_PROGRESS_EVERY = 1000

_TRAIN_ORDER_SEED = 0
_TEST_ORDER_SEED = 1


def load_image_dir(root, origin, resize, cache_dir, progress):
    """Loads ``root/train/<class>/*`` and ``root/test/<class>/*``, through the decoded cache."""
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(
                f"image folder {root} has no {split}/ split: expected {root}/train/<class>/*.png|jpg "
                f"and {root}/test/<class>/*"
            )
    listing = {split: _scan_split(root / split) for split in ("train", "test")}
    train_classes, test_classes = set(listing["train"]), set(listing["test"])
    if train_classes != test_classes:
        only_train = ", ".join(sorted(train_classes - test_classes)) or "none"
        only_test = ", ".join(sorted(test_classes - train_classes)) or "none"
        raise DataError(
            f"image folder {root}: train/ and test/ have different class folders "
            f"(only in train: {only_train}; only in test: {only_test}); make them match"
        )
    # CIFAR-10's names happen to be alphabetical; naming the order keeps labels
    # right even if CLASS_NAMES or the sort rule ever change.
    if train_classes == set(CLASS_NAMES):
        class_names = CLASS_NAMES
    else:
        class_names = tuple(sorted(train_classes))
    if not 2 <= len(class_names) <= len(CLASS_NAMES):
        raise DataError(
            f"image folder {root} has {len(class_names)} class folders in train/, expected 2 to 10 "
            f"(CIFAR-10 labels are 0..9): one folder per class"
        )

    files = {}  # split -> [(path, label, relpath, size, mtime_ns)] ordered by label, then file name
    formats = set()
    for split in ("train", "test"):
        files[split] = []
        for label, name in enumerate(class_names):
            for path, size, mtime, fmt in listing[split][name]:
                files[split].append((path, label, f"{split}/{name}/{os.path.basename(path)}", size, mtime))
                formats.add(fmt)
    # The official batches hold both splits in random order, so the first N
    # images of either are a class-mixed sample (--subset N, x_test[:1000],
    # `predict --images 0,5,17` rely on that). Give an image folder the same
    # property: one fixed permutation per split.
    for split, seed in (("train", _TRAIN_ORDER_SEED), ("test", _TEST_ORDER_SEED)):
        order = np.random.default_rng(seed).permutation(len(files[split]))
        files[split] = [files[split][i] for i in order]
    # One JPEG is enough to make the copy lossy, and "jpeg" is what changes the expected accuracy.
    image_format = "jpeg" if "jpeg" in formats else "png"
    format_label = " and ".join(f.upper() for f in sorted(formats))

    key = _cache_key(files, resize)
    local_cache = root / f".cifar10-cache-{key}.npz"
    fallback_dir = Path(os.path.expanduser(str(cache_dir) if cache_dir else _DEFAULT_CACHE_DIR))
    fallback_cache = fallback_dir / f"cifar10-cache-{key}.npz"
    counts = {split: len(files[split]) for split in files}

    for cache in (local_cache, fallback_cache):
        arrays = _read_cache(cache, counts, class_names)
        if arrays is not None:
            return checked(
                *arrays,
                source=f"image folder {root} (from {origin}, {format_label}, decoded cache {cache})",
                image_format=image_format,
                class_names=class_names,
            )

    all_paths = [f[0] for split in ("train", "test") for f in files[split]]
    images = _decode_images(all_paths, resize, progress)
    x_train, x_test = images[: counts["train"]], images[counts["train"] :]
    y_train = np.array([f[1] for f in files["train"]], dtype=np.int32)
    y_test = np.array([f[1] for f in files["test"]], dtype=np.int32)
    arrays = (x_train, y_train, x_test, y_test)

    written, failures = None, []
    for cache in (local_cache, fallback_cache):
        try:
            _write_cache(cache, arrays, class_names)
            written = cache
            break
        except OSError as e:
            failures.append(f"{cache.parent}: {e.strerror or e}")
    if written is not None:
        cached = f"decoded cache {written}"
    else:
        cached = "decoded, not cached"
        warnings.warn(
            f"could not cache the decoded images of {root} ({'; '.join(failures)}): "
            f"pass a writable cache_dir to avoid decoding again",
            stacklevel=4,
        )
    return checked(
        *arrays,
        source=f"image folder {root} (from {origin}, {format_label}, {cached})",
        image_format=image_format,
        class_names=class_names,
    )


def _scan_split(split_dir):
    """Lists ``split_dir/<class>/<image>``: {class: [(path str, size, mtime_ns, format)] sorted by name}.

    Hidden entries (``.DS_Store``, ``.ipynb_checkpoints``) are skipped; anything
    else that is not an image file is an error, so a mislaid file is not
    silently ignored. Paths stay strings: pathlib costs seconds over 60,000 files.
    """
    try:
        class_dirs = sorted(
            e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
        )
        if not class_dirs:
            raise DataError(
                f"{split_dir} has no class folders: expected {split_dir}/<class>/*.png|jpg, one folder per class"
            )
        listing = {}
        for name in class_dirs:
            class_dir = split_dir / name
            entries = []
            for e in sorted(os.scandir(class_dir), key=lambda e: e.name):
                if e.name.startswith("."):
                    continue
                path = e.path
                if e.is_dir():
                    raise DataError(
                        f"unexpected folder {path}: class folders hold image files only "
                        f"(expected {split_dir}/<class>/*.png|jpg)"
                    )
                image_format = _IMAGE_SUFFIXES.get(_suffix(e.name))
                if image_format is None:
                    raise DataError(
                        f"{path} is not an image (expected .png, .jpg or .jpeg): remove it from the image folder"
                    )
                st = e.stat()
                entries.append((path, st.st_size, st.st_mtime_ns, image_format))
            if not entries:
                raise DataError(
                    f"class folder {class_dir} is empty: add its .png/.jpg images or remove the folder"
                )
            listing[name] = entries
    except OSError as e:
        raise DataError(f"cannot list {e.filename or split_dir}: {e.strerror or e}") from e
    return listing


def _suffix(name):
    """Lower-case extension with its dot ("" if none); cheaper than os.path.splitext over 60,000 names."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _cache_key(files, resize):
    """Short hash of what decoding depends on, so any change to the folder decodes it again."""
    h = hashlib.sha256(f"cifar10-cache v{_CACHE_VERSION} resize={bool(resize)}\n".encode())
    for split in ("train", "test"):
        for _, label, rel, size, mtime in files[split]:
            h.update(f"{rel}\0{label}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


def _read_cache(path, counts, class_names):
    """Returns the cached (x_train, y_train, x_test, y_test), or None if absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
            names = tuple(str(n) for n in z["class_names"])
    except Exception as e:  # noqa: BLE001 - a broken cache (truncated zip, ...) is just decoded again
        warnings.warn(f"ignoring unreadable cache {path} ({type(e).__name__}): decoding again", stacklevel=5)
        return None
    x_train, y_train, x_test, y_test = arrays
    if (
        names != tuple(class_names)
        or x_train.shape != (counts["train"], *IMAGE_SHAPE)
        or x_test.shape != (counts["test"], *IMAGE_SHAPE)
        or x_train.dtype != np.uint8
        or x_test.dtype != np.uint8
    ):
        return None
    return arrays


def _write_cache(path, arrays, class_names):
    """Writes the cache atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cifar10-cache-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            x_train, y_train, x_test, y_test = arrays
            # Uncompressed: loading 180 MB is then a plain read, compression would cost seconds.
            np.savez(
                f,
                x_train=x_train,
                y_train=y_train,
                x_test=x_test,
                y_test=y_test,
                class_names=np.array(class_names),
            )
        # mkstemp makes the file private; a cache in a shared data folder should be readable by all.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _decode_images(paths, resize, progress):
    """Decodes image files into one (N, 32, 32, 3) uint8 array, in order."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("reading an image folder needs Pillow: pip install Pillow") from e
    bar = None
    if progress:
        try:
            from keras.utils import Progbar

            print(f"Decoding {len(paths)} images (once; later loads read the cache)")
            bar = Progbar(len(paths), unit_name="image")
        except ImportError:
            bar = None
    out = np.empty((len(paths), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode_one(Image, path, resize)
        if bar is not None and ((i + 1) % _PROGRESS_EVERY == 0 or i + 1 == len(paths)):
            bar.update(i + 1)
    return out


def _decode_one(Image, path, resize):
    """One image as a (32, 32, 3) uint8 array; ``Image`` is PIL.Image, passed in to import it once."""
    try:
        with Image.open(path) as im:
            if im.size != IMAGE_SHAPE[:2]:
                if not resize:
                    w, h = im.size
                    raise DataError(
                        f"{path} is {w}x{h}, expected 32x32: pass --resize to resize images to 32x32"
                    )
                im = im.convert("RGB").resize(IMAGE_SHAPE[:2], Image.Resampling.BILINEAR)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, ... on bad files
        raise DataError(
            f"{path} is not a readable image ({type(e).__name__}: {first_line(e)}): replace or remove it"
        ) from e

