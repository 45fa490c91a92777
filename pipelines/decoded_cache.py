"""The decoded cache of an image folder: one uncompressed ``.npz`` of its arrays.

Decoding 60,000 images takes a while, so `pipelines.image_folders` decodes
them once and keeps the arrays here, in the data folder (or, when that is not
writable, in ``cache_dir``, by default ``~/.cache/davidnet``). `cache_key`
says what decoding depended on (each file's name, label, size, mtime, inode,
ctime, and `_CACHE_VERSION`); `read_cache` returns the arrays only if the
file is whole and agrees with the folder's listing, else None (decoded
again); `write_cache` is atomic and removes its temp file on any exception or
SIGTERM; `remove_replaced` removes the caches a new one replaces, ours only,
recognised by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from pipelines.dataset import IMAGE_SHAPE, shown_name

_DEFAULT_CACHE_DIR = "~/.cache/davidnet"
# Bump when the cache's contents, key or decoding change, so old caches are not trusted.
_CACHE_VERSION = 3  # 2: the test split shuffled too; 3: stat key with inode and ctime, formats by content, 16-bit modes
_STALE_TEMP_S = 3600  # a temp cache file this old is a killed writer's leftover


def cache_key(files, resize):
    """Short hash of what decoding depends on, so any change to the folder decodes it again."""
    h = hashlib.sha256(f"cifar10-cache v{_CACHE_VERSION} resize={bool(resize)}\n".encode())
    for split in ("train", "test"):
        for _, label, rel, key in files[split]:
            # fsencode: the raw bytes of a name that is not valid UTF-8.
            h.update(os.fsencode(rel) + f"\0{label}\0{key}\n".encode())
    return h.hexdigest()[:16]


def cache_slots(root, cache_dir, resize, key):
    """[(folder, name prefix, cache path)], the data folder first, then the fallback.

    The prefix names the slot, one cache per image folder and resize setting:
    writing a new cache replaces the files with the same prefix. In the shared
    fallback folder the prefix carries a hash of the image folder's real path.
    """
    r = "r1" if resize else "r0"
    fallback = Path(os.path.expanduser(str(cache_dir) if cache_dir else _DEFAULT_CACHE_DIR))
    folder = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:12]
    slots = ((Path(root), f".cifar10-cache-{r}-"), (fallback, f"cifar10-cache-{folder}-{r}-"))
    return [(d, prefix, d / f"{prefix}{key}.npz") for d, prefix in slots]


def _temp_prefix(prefix):
    """Temporary files are hidden and named apart from the caches they become."""
    return "." + prefix.lstrip(".") + "tmp-"


def remove_replaced(caches, kept):
    """Removes the caches ``kept`` replaces: ours only, recognised by name, in our cache folders.

    Those are the other caches of the same slot (an earlier state of the
    folder), temp files of killed writers older than `_STALE_TEMP_S`, and in
    the data folder itself the caches of version 2 (named without a slot).
    Best effort: a file that cannot be removed is left.
    """
    now = time.time()
    for folder, prefix, _ in caches:
        ours = re.compile(re.escape(prefix) + r"[0-9a-f]{16}\.npz")
        temp = re.compile(re.escape(_temp_prefix(prefix)) + r"\w+\.tmp")
        legacy = re.compile(r"\.cifar10-cache-[0-9a-f]{16}\.npz") if folder == caches[0][0] else None
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            try:
                if ours.fullmatch(name) or (legacy is not None and legacy.fullmatch(name)):
                    if path != kept:
                        path.unlink()
                elif temp.fullmatch(name) and now - path.lstat().st_mtime > _STALE_TEMP_S:
                    path.unlink()
            except OSError:
                pass


def read_cache(path, counts, class_names, known_formats):
    """Returns the cached ((x_train, y_train, x_test, y_test), formats), or None if absent or
    unusable: unreadable, other shapes or dtypes than `counts` images per split, labels out of
    range, other class names, or formats not all among `known_formats`."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
            names = tuple(str(n) for n in z["class_names"])
            formats = {str(f) for f in z["formats"]}
    except Exception as e:  # noqa: BLE001 - a broken cache (truncated zip, ...) is just decoded again
        warnings.warn(f"ignoring unreadable cache {shown_name(path)} ({type(e).__name__}): decoding again", stacklevel=5)
        return None
    x_train, y_train, x_test, y_test = arrays
    for x, y, n in ((x_train, y_train, counts["train"]), (x_test, y_test, counts["test"])):
        if (
            x.shape != (n, *IMAGE_SHAPE)
            or x.dtype != np.uint8
            or y.shape != (n,)
            or y.dtype != np.int32
            or (n and not 0 <= y.min() <= y.max() < len(class_names))
        ):
            return None
    if names != tuple(class_names) or not formats or not formats <= set(known_formats):
        return None
    return arrays, formats


def write_cache(path, prefix, arrays, class_names, formats):
    """Writes the cache atomically: a reader sees the old file or the whole new one.

    The temp file is removed on any exception, KeyboardInterrupt included, and
    on SIGTERM (`_sigterm_raises`); only SIGKILL or a crash can leave one, and
    the next write removes it once stale (`remove_replaced`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_raises():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(prefix), suffix=".tmp")
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
                    formats=np.array(sorted(formats)),
                )
            # mkstemp makes the file private; a cache in a shared data folder should be readable by all.
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def _sigterm_raises():
    """While the cache is written, SIGTERM raises SystemExit(143) instead of ending the process
    outright, so the temp file is removed. Only where Python may set handlers (the main thread)
    and none is set: a program's own SIGTERM handler is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
