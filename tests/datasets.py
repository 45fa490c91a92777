"""Small deterministic CIFAR-10 look-alikes for tests: arrays, pickle batches, image folders.

Images carry a class-dependent mean colour plus noise, so a tiny model learns
them in a few steps. Nothing here downloads anything.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from pipelines.cifar10 import CLASS_NAMES, synthetic_images

def synthetic_arrays(n, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, 32, 32, 3) and int32 labels cycling 0..9; each image is
    its class's mean colour plus noise (see `pipelines.cifar10.synthetic_images`)."""
    labels = (np.arange(n) % 10).astype(np.int32)
    return synthetic_images(labels, seed), labels


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote the official batches.

    bytes and str become BINSTRING (what ``encoding="bytes"`` reads back as
    bytes) and numpy globals use the pre-2.0 ``numpy.core`` names, so the
    fixtures exercise the same opcodes and globals as the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_binstring(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_binstring
    dispatch[str] = save_binstring

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode("ascii"))
        self.memoize(obj)


def write_batch(path: Path, obj) -> Path:
    """Pickles ``obj`` to ``path`` in the official batches' format (Python 2 style, protocol 2)."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)
    return path


def batch_dict(images, labels, name="batch") -> dict:
    """An official-format batch dict for NHWC uint8 ``images`` and int ``labels``."""
    n = len(images)
    return {
        b"batch_label": f"{name}".encode(),
        b"labels": [int(v) for v in labels],
        # Official rows: the R, G then B planes, each 32x32 row-major.
        b"data": np.ascontiguousarray(np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(n, 3072)),
        b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(n)],
    }


def make_pickle_dir(root: Path, n_per_batch=20, n_test=20, seed=0) -> Path:
    """Writes ``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta.

    Train images are ``synthetic_arrays(5 * n_per_batch, seed)`` in batch order,
    test images ``synthetic_arrays(n_test, seed + 1)``; labels cycle 0..9.

    Args:
        root: folder to create the batches under.
        n_per_batch: images per train batch.
        n_test: images in test_batch.
        seed: noise seed.

    Returns:
        ``root``.
    """
    root = Path(root)
    batch_dir = root / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_arrays(5 * n_per_batch, seed)
    for b in range(5):
        sl = slice(b * n_per_batch, (b + 1) * n_per_batch)
        write_batch(batch_dir / f"data_batch_{b + 1}", batch_dict(x[sl], y[sl], f"training batch {b + 1} of 5"))
    xt, yt = synthetic_arrays(n_test, seed + 1)
    write_batch(batch_dir / "test_batch", batch_dict(xt, yt, "testing batch 1 of 1"))
    write_batch(
        batch_dir / "batches.meta",
        {b"num_cases_per_batch": n_per_batch, b"label_names": [c.encode() for c in CLASS_NAMES], b"num_vis": 3072},
    )
    return root


def make_image_dir(root: Path, n_train_per_class=4, n_test_per_class=2, fmt="png", seed=0, classes=CLASS_NAMES) -> Path:
    """Writes an image folder ``root/train/<class>/0000.png ...`` and ``root/test/<class>/...``.

    Class folders are created in the order of ``classes``, and the i-th one
    gets the i-th synthetic colour.

    Args:
        root: folder to create ``train/`` and ``test/`` in.
        n_train_per_class: images per class in train/.
        n_test_per_class: images per class in test/.
        fmt: "png" (lossless) or "jpeg" / "jpg" (written as .jpg).
        seed: noise seed.
        classes: class folder names.

    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    ext, pil_format = {"png": ("png", "PNG"), "jpeg": ("jpg", "JPEG"), "jpg": ("jpg", "JPEG")}[fmt]
    for s, (split, per_class) in enumerate((("train", n_train_per_class), ("test", n_test_per_class))):
        for c, name in enumerate(classes):
            class_dir = root / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            images = synthetic_images(np.full(per_class, c), seed * 1000 + s * 100 + c)
            for i, image in enumerate(images):
                Image.fromarray(image).save(class_dir / f"{i:04d}.{ext}", format=pil_format)
    return root
