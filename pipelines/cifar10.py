"""CIFAR-10 as uint8 NHWC arrays, from whichever copy this machine has.

Three sources are tried in order: a folder the user names (``data_dir`` or the
``CIFAR10_DIR`` environment variable), the Keras download cache
``~/.keras/datasets/cifar-10-batches-py``, and finally tensorflow-datasets.

A named folder may hold either the official Python-pickle batches or an image
folder (``train/<class>/*.png|jpg`` and ``test/<class>/*``). Pickles are read
with a restricted unpickler, so a doctored batch cannot run code; image folders
are decoded once and cached as an ``.npz`` keyed on the folder's listing.

Every problem with the user's data is raised as :class:`DataError` with a
one-line message naming the file, what was expected and what to do.

TensorFlow, Pillow and Keras are imported lazily, inside the functions that
need them: importing this module costs numpy only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

IMAGE_SHAPE = (32, 32, 3)

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_PICKLE_SUBDIR = "cifar-10-batches-py"
_KERAS_CACHE = "~/.keras/datasets/cifar-10-batches-py"
_DEFAULT_CACHE_DIR = "~/.cache/davidnet"
_IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
# Bump when the cache's contents or decoding change, so old caches are not trusted.
_CACHE_VERSION = 2  # 2: the test split shuffled too
_PROGRESS_EVERY = 1000

_WHERE_HINT = (
    "pass --data-dir DIR (a cifar-10-batches-py folder or an image folder with "
    "train/ and test/) or set CIFAR10_DIR"
)
_LAYOUTS = (
    "expected either the Python-pickle layout (data_batch_1..5 and test_batch, "
    "directly or in cifar-10-batches-py/) or an image folder with "
    "train/<class>/*.png|jpg and test/<class>/*"
)


# DAWNBench's bar is 94% test accuracy on CIFAR-10. The JPEG copy is lossy and
# about 3 points harder (shared/data/README): 91% there is the same bar.
DAWNBENCH_TARGET = 0.94
_EQUIVALENT_TARGET = {"jpeg": 0.91}


def equivalent_target(image_format):
    """The test accuracy on data of `image_format` ("pickle", "png", "jpeg",
    "tfds", "synthetic") that stands for DAWNBench's 94% on CIFAR-10: 0.91 on
    the JPEG copy, 0.94 elsewhere. A run's default `--target`."""
    return _EQUIVALENT_TARGET.get(image_format, DAWNBENCH_TARGET)


def target_note(image_format, target, given):
    """One line saying which accuracy a run times and why (`given`: the user chose it)."""
    if given:
        return f"target: test accuracy {target:g} (--target)"
    if image_format == "jpeg":
        return f"target: test accuracy {target:g}, the JPEG copy's equivalent of DAWNBench's {DAWNBENCH_TARGET:g} on CIFAR-10 (--target to change)"
    return f"target: test accuracy {target:g}, DAWNBench's bar (--target to change)"


class DataError(ValueError):
    """A problem with the user's data; ``str(e)`` is ONE line saying what was expected and what to do."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Cifar10:
    """CIFAR-10 in memory, train and test splits.

    Attributes:
        x_train: uint8 images, shape (N, 32, 32, 3), NHWC.
        y_train: int32 labels, shape (N,), values 0..9.
        x_test: uint8 images, shape (M, 32, 32, 3).
        y_test: int32 labels, shape (M,).
        source: one human-readable line saying where the data came from.
        image_format: "pickle", "png", "jpeg" or "tfds". "jpeg" matters: models
            score about 3 points lower on the lossy JPEG copy.
        class_names: the name of each label, index = label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    image_format: str
    class_names: tuple[str, ...]

    def __repr__(self) -> str:
        # The default repr would print pixel arrays.
        return (
            f"Cifar10(train={len(self.x_train)}, test={len(self.x_test)}, "
            f"image_format={self.image_format!r}, source={self.source!r})"
        )


def load_cifar10(
    data_dir=None,
    *,
    verify=True,
    resize=False,
    download=True,
    cache_dir=None,
    progress=True,
) -> Cifar10:
    """Loads CIFAR-10 from the first source that has it.

    Order: ``data_dir``, else the ``CIFAR10_DIR`` environment variable; then the
    Keras cache ``~/.keras/datasets/cifar-10-batches-py``; then
    tensorflow-datasets (only if ``download``).

    Order: pickles keep the official batches' order, which is random (class
    mixed) in both splits. An image folder, listed by label then file name,
    is put in one fixed random order per split (the same at every load, on
    every machine), so that in both splits the first N images are a
    class-mixed sample, as in the official batches: ``--subset N`` trains on
    all classes and ``x_test[:1000]`` is not 1,000 airplanes. Shuffling for
    training is the feed's job, every epoch.

    Args:
        data_dir: a folder in the Python-pickle layout (``data_batch_1..5`` and
            ``test_batch``, directly or inside ``cifar-10-batches-py/``) or an
            image folder (``train/<class>/*.png|jpg``, ``test/<class>/*``).
            ``None`` falls back to ``CIFAR10_DIR``, then the other sources.
        verify: check the pickle batches against the official md5 sums.
        resize: resize image-folder images that are not 32x32 (bilinear)
            instead of rejecting them.
        download: allow the tensorflow-datasets fallback, which may download.
        cache_dir: where to cache decoded image folders when the data folder
            itself is not writable; default ``~/.cache/davidnet``.
        progress: show a progress bar while decoding an image folder.

    Returns:
        A :class:`Cifar10`.

    Raises:
        DataError: no CIFAR-10 could be found, or the data found is not valid.
    """
    if data_dir is not None and str(data_dir) != "":
        return _load_dir(Path(os.path.expanduser(data_dir)), "--data-dir", verify, resize, cache_dir, progress)
    env_dir = os.environ.get("CIFAR10_DIR", "")
    if env_dir:
        return _load_dir(Path(os.path.expanduser(env_dir)), "CIFAR10_DIR", verify, resize, cache_dir, progress)
    keras_cache = Path(os.path.expanduser(_KERAS_CACHE))
    if keras_cache.is_dir():
        return _load_pickle_dir(keras_cache, verify, origin="Keras cache")
    if not download:
        raise DataError(f"no CIFAR-10 found and download is off: {_WHERE_HINT}, or allow the download")
    return _load_tfds()


# --- named folders ---------------------------------------------------------------


def _load_dir(path, origin, verify, resize, cache_dir, progress):
    """Loads a user-named folder in either layout; ``origin`` says who named it."""
    named = f"{path} (from {origin})"
    if not path.exists():
        raise DataError(f"{named} does not exist: {_WHERE_HINT}")
    if not path.is_dir():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(
                f"{named} is an archive, not a directory: extract it (tar xf) and pass the extracted folder"
            )
        raise DataError(f"{named} is not a directory: {_WHERE_HINT}")
    try:
        batch_dir = _find_pickle_dir(path)
        has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    except OSError as e:
        raise DataError(f"cannot read {named}: {e.strerror or e}") from e
    if batch_dir is not None:
        return _load_pickle_dir(batch_dir, verify, origin=origin)
    if has_train or has_test:
        return _load_image_dir(path, origin, resize, cache_dir, progress)
    hint = ""
    if path.name in ("train", "test"):
        hint = "; this looks like one split: pass its parent folder"
    raise DataError(f"{named} is in neither CIFAR-10 layout: {_LAYOUTS}{hint}")


def _find_pickle_dir(path):
    """Returns the folder holding the pickle batches under ``path``, or None."""
    names = (*_TRAIN_BATCHES, _TEST_BATCH)
    for candidate in (path / _PICKLE_SUBDIR, path):
        if candidate.is_dir() and any((candidate / n).exists() for n in names):
            return candidate
    return None


# --- Python-pickle layout ----------------------------------------------------------


def _load_pickle_dir(batch_dir, verify, origin):
    """Reads data_batch_1..5 and test_batch from ``batch_dir``."""
    missing = [n for n in (*_TRAIN_BATCHES, _TEST_BATCH) if not (batch_dir / n).is_file()]
    if missing:
        raise DataError(
            f"{batch_dir} lacks {', '.join(missing)}: a cifar-10-batches-py folder needs "
            f"data_batch_1..5 and test_batch; re-extract cifar-10-python.tar.gz"
        )
    train = [_read_batch(batch_dir / n, verify) for n in _TRAIN_BATCHES]
    x_test, y_test = _read_batch(batch_dir / _TEST_BATCH, verify)
    checked = "md5 verified" if verify else "md5 not checked"
    return _checked(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        source=f"pickle batches {batch_dir} (from {origin}, {checked})",
        image_format="pickle",
        class_names=CLASS_NAMES,
    )


def _read_batch(path, verify):
    """Reads one official batch file into NHWC uint8 images and int32 labels."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e.strerror or e}") from e
    if verify and path.name in _BATCH_MD5:
        got = hashlib.md5(raw).hexdigest()
        if got != _BATCH_MD5[path.name]:
            raise DataError(
                f"{path} has md5 {got}, not the official {_BATCH_MD5[path.name]}: "
                f"re-download it, or pass --no-verify to load a batch that is not the official file"
            )
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise DataError(
            f"{path} is not an official CIFAR-10 batch and may be malicious: it asks to run {e}, "
            f"while a batch only holds numpy arrays and lists; delete it and re-download"
        ) from None
    except Exception as e:  # noqa: BLE001 - corrupt pickles fail in many ways (EOFError, ValueError, ...)
        raise DataError(
            f"{path} is truncated or not a CIFAR-10 batch ({type(e).__name__}: {_first_line(e)}): "
            f"re-download it"
        ) from e
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not the dict of a CIFAR-10 batch: re-download it")
    # Python 2 wrote str keys, which encoding="bytes" turns into bytes; accept str keys from re-saved copies.
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    if b"labels" not in batch and b"fine_labels" in batch:
        raise DataError(f"{path} looks like a CIFAR-100 batch (fine_labels): pass a CIFAR-10 folder")
    for key in (b"data", b"labels"):
        if key not in batch:
            raise DataError(
                f"{path} has no {key.decode()!r} entry: a CIFAR-10 batch needs 'data' and 'labels'; re-download it"
            )
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{path}: 'data' is {what}, expected uint8 (N, 3072) rows of 32x32 R, G, B planes; re-download it"
        )
    try:
        labels = np.asarray(batch[b"labels"])
    except Exception as e:  # noqa: BLE001 - ragged or odd label objects
        raise DataError(f"{path}: 'labels' is not a list of integers: re-download it") from e
    if labels.shape != (len(data),) or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DataError(
            f"{path}: 'labels' is {labels.dtype} {labels.shape}, expected {len(data)} integers "
            f"(one per image); re-download it"
        )
    _check_labels(labels, len(CLASS_NAMES), where=str(path))
    # Rows are the R, G then B planes, each 32x32 row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _reconstruct(*args):
    # Imported on first use: numpy 2 moved it to numpy._core, which official files predate.
    from numpy._core.multiarray import _reconstruct as numpy_reconstruct

    return numpy_reconstruct(*args)


def _latin1_encode(text, encoding):
    """What Python 3 pickles at protocol 2 call to rebuild bytes; only that use is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _empty_bytes():
    return b""


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; the message is its dotted name."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch needs: dicts, lists, ints, bytes and numpy arrays.

    The official batches are Python 2 protocol 2 pickles whose only globals
    rebuild numpy arrays; copies re-saved by Python 3 also rebuild bytes via
    ``_codecs.encode``. Any other global could run code, so it is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


# --- image-folder layout -----------------------------------------------------------

_TRAIN_ORDER_SEED = 0
_TEST_ORDER_SEED = 1


def _load_image_dir(root, origin, resize, cache_dir, progress):
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
            return _checked(
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
    return _checked(
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
            f"{path} is not a readable image ({type(e).__name__}: {_first_line(e)}): replace or remove it"
        ) from e


# --- tensorflow-datasets --------------------------------------------------------------


# Where tensorflow-datasets' cifar10 builder downloads from; probed first, so
# that a machine without network fails in seconds, not after minutes of the
# downloader's retries with a partial download left behind.
_TFDS_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_PROBE_TIMEOUT_S = 5.0


def _tfds_prepared():
    """Whether tensorflow-datasets already holds cifar10 (no download needed)."""
    root = Path(os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))) / "cifar10"
    return any(root.glob("*/dataset_info.json"))


def _unreachable(url, timeout=_PROBE_TIMEOUT_S):
    """None if a TCP connection to `url`'s host opens within `timeout` seconds,
    else why not. The name lookup is bounded too (it runs in a thread)."""
    import socket
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome = {}

    def connect():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as e:
            outcome["error"] = f"{type(e).__name__}: {e.strerror or e}"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("error", f"no answer in {timeout:g}s")


def _load_tfds():
    """Loads CIFAR-10 through tensorflow-datasets, downloading it if needed
    (after checking in seconds that the download host can be reached)."""
    if not _tfds_prepared():
        why = _unreachable(_TFDS_URL)
        if why is not None:
            host = _TFDS_URL.split("/")[2]
            raise DataError(
                f"no CIFAR-10 on this machine and its download host {host} cannot be reached ({why}): "
                f"{_WHERE_HINT} ({_LAYOUTS})"
            )
    try:
        import tensorflow_datasets as tfds

        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(
            tfds.load("cifar10", split=["train", "test"], batch_size=-1, as_supervised=True)
        )
    except Exception as e:  # noqa: BLE001 - no network, not installed, quota: all mean "not available"
        raise DataError(
            f"no CIFAR-10 found: {_WHERE_HINT}; the download through tensorflow-datasets failed: "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from e
    return _checked(
        np.asarray(x_train, dtype=np.uint8),
        np.asarray(y_train).astype(np.int32),
        np.asarray(x_test, dtype=np.uint8),
        np.asarray(y_test).astype(np.int32),
        source="tensorflow-datasets cifar10",
        image_format="tfds",
        class_names=CLASS_NAMES,
    )


# --- shared checks ---------------------------------------------------------------------


def _check_labels(labels, num_classes, where):
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"{where}: labels must be 0..{num_classes - 1}, found {int(bad[0])} "
            f"({bad.size} out of range): this is not CIFAR-10 data"
        )


def _checked(x_train, y_train, x_test, y_test, *, source, image_format, class_names):
    """Builds a Cifar10 after checking what every source must satisfy."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != (len(x),):
            raise DataError(
                f"{source}: {split} images are {x.dtype} {x.shape} with {y.shape} labels, "
                f"expected uint8 (N, 32, 32, 3) and N labels: the source is not CIFAR-10"
            )
        if len(x) == 0:
            raise DataError(f"{source}: the {split} split is empty: expected CIFAR-10 images")
        _check_labels(y, min(len(class_names), len(CLASS_NAMES)), where=f"{source} {split}")
    return Cifar10(
        x_train=x_train,
        y_train=y_train.astype(np.int32, copy=False),
        x_test=x_test,
        y_test=y_test.astype(np.int32, copy=False),
        source=source,
        image_format=image_format,
        class_names=tuple(class_names),
    )


def _first_line(error, limit=200):
    """The start of an exception's message, kept to one line for DataError."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- synthetic data, for smoke runs and tests -------------------------------------

# One clearly distinct RGB mean per class, so a tiny model learns them in a few steps.
_CLASS_COLORS = np.array(
    [
        [200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [200, 40, 200],
        [40, 200, 200], [230, 230, 230], [30, 30, 30], [200, 120, 40], [100, 40, 160],
    ],
    dtype=np.float32,
)
_NOISE_STD = 16.0


def synthetic_images(labels, seed=0):
    """uint8 images (len(labels), 32, 32, 3): each its class's colour plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    noise = rng.normal(0.0, _NOISE_STD, size=(len(labels), *IMAGE_SHAPE))
    images = _CLASS_COLORS[labels % len(_CLASS_COLORS)][:, None, None, :] + noise
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def synthetic_cifar10(n_train=512, n_test=200, seed=0):
    """A CIFAR-10-shaped `Cifar10` of class-coloured noise, for `--smoke` runs:
    learnable in seconds, and never mistaken for CIFAR-10 (its source says so)."""
    y_train = np.random.default_rng(seed).permutation(np.arange(n_train) % 10).astype(np.int32)
    y_test = (np.arange(n_test) % 10).astype(np.int32)
    return Cifar10(
        synthetic_images(y_train, seed),
        y_train,
        synthetic_images(y_test, seed + 1),
        y_test,
        source="synthetic class-coloured noise (smoke run, not CIFAR-10)",
        image_format="synthetic",
        class_names=CLASS_NAMES,
    )

