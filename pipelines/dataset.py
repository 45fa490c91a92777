"""What every CIFAR-10 source returns, and the checks it must pass.

`Cifar10` is the dataset in memory (uint8 NHWC arrays), `DataError` the one
error a problem with the user's data raises, `CLASS_NAMES` and `IMAGE_SHAPE`
what CIFAR-10 is. `checked` builds a `Cifar10` from any source's arrays after
checking what every source must satisfy; the loaders (`pipelines.pickle_batches`,
`pipelines.image_folders`, `pipelines.tfds_source`) share it, and the hints of
their messages, from here. Import it through `pipelines.cifar10`.

numpy only: no TensorFlow, Pillow or Keras.
"""

from __future__ import annotations

import dataclasses
import re

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

# The ends of the loaders' "no CIFAR-10 here" messages: where to point them, and what they look for.
WHERE_HINT = (
    "pass --data-dir DIR (a cifar-10-batches-py folder or an image folder with "
    "train/ and test/) or set CIFAR10_DIR"
)
LAYOUTS = (
    "expected either the Python-pickle layout (data_batch_1..5 and test_batch, "
    "directly or in cifar-10-batches-py/) or an image folder with "
    "train/<class>/*.png|jpg and test/<class>/*"
)


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
        location: the folder the data was read from (absolute), or None
            (tensorflow-datasets, synthetic): a resumed run reads it again.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    image_format: str
    class_names: tuple[str, ...]
    location: str | None = None

    def __repr__(self) -> str:
        # The default repr would print pixel arrays.
        return (
            f"Cifar10(train={len(self.x_train)}, test={len(self.x_test)}, "
            f"image_format={self.image_format!r}, source={self.source!r})"
        )


# --- checks every source passes ----------------------------------------------------


def check_labels(labels, num_classes, where):
    """Raises DataError unless every label is 0..num_classes-1; ``where`` starts the message."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"{where}: labels must be 0..{num_classes - 1}, found {int(bad[0])} "
            f"({bad.size} out of range): this is not CIFAR-10 data"
        )


def checked(x_train, y_train, x_test, y_test, *, source, image_format, class_names):
    """Builds a Cifar10 after checking what every source must satisfy."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != (len(x),):
            raise DataError(
                f"{source}: {split} images are {x.dtype} {x.shape} with {y.shape} labels, "
                f"expected uint8 (N, 32, 32, 3) and N labels: the source is not CIFAR-10"
            )
        if len(x) == 0:
            raise DataError(f"{source}: the {split} split is empty: expected CIFAR-10 images")
        check_labels(y, min(len(class_names), len(CLASS_NAMES)), where=f"{source} {split}")
    return Cifar10(
        x_train=x_train,
        y_train=y_train.astype(np.int32, copy=False),
        x_test=x_test,
        y_test=y_test.astype(np.int32, copy=False),
        source=source,
        image_format=image_format,
        class_names=tuple(class_names),
    )


def first_line(error, limit=200):
    """The start of an exception's message (its type's name if it has none), kept to one line."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# Lone surrogates (bytes of a non-UTF-8 name) and control characters, shown escaped.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def shown_name(text):
    """``text`` (a str or path) safe to print, log or save as JSON on one line.

    Bytes of a name that is not valid UTF-8 (lone surrogates from os.listdir)
    become ``\\xNN``, control characters ``\\xNN``/``\\uNNNN``.
    """
    text = str(text)
    if _UNSAFE.search(text) is None:
        return text

    def escape(match):
        code = ord(match.group())
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, text)
