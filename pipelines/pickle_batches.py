"""The official Python-pickle layout: ``data_batch_1..5`` and ``test_batch``.

Found directly in a folder or in its ``cifar-10-batches-py/`` (the Keras cache
is one such folder). Each batch is checked against the official md5 sums
(unless ``verify`` is off) and read with a restricted unpickler, so a doctored
batch cannot run code: only the globals that rebuild numpy arrays and bytes
are allowed.
"""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np

from pipelines.dataset import CLASS_NAMES, DataError, check_labels, checked, first_line

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


def find_pickle_dir(path):
    """Returns the folder holding the pickle batches under ``path``, or None."""
    names = (*_TRAIN_BATCHES, _TEST_BATCH)
    for candidate in (path / _PICKLE_SUBDIR, path):
        if candidate.is_dir() and any((candidate / n).exists() for n in names):
            return candidate
    return None


def load_pickle_dir(batch_dir, verify, origin):
    """Reads data_batch_1..5 and test_batch from ``batch_dir``."""
    missing = [n for n in (*_TRAIN_BATCHES, _TEST_BATCH) if not (batch_dir / n).is_file()]
    if missing:
        raise DataError(
            f"{batch_dir} lacks {', '.join(missing)}: a cifar-10-batches-py folder needs "
            f"data_batch_1..5 and test_batch; re-extract cifar-10-python.tar.gz"
        )
    train = [_read_batch(batch_dir / n, verify) for n in _TRAIN_BATCHES]
    x_test, y_test = _read_batch(batch_dir / _TEST_BATCH, verify)
    md5 = "md5 verified" if verify else "md5 not checked"
    return checked(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        source=f"pickle batches {batch_dir} (from {origin}, {md5})",
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
            f"{path} is truncated or not a CIFAR-10 batch ({type(e).__name__}: {first_line(e)}): "
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
    check_labels(labels, len(CLASS_NAMES), where=str(path))
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

