"""The image-folder layout: ``train/<class>/*.png|jpg`` and ``test/<class>/*``.

Labels follow the class folders (CIFAR-10's names in CIFAR-10's order, else
sorted), and each split is put in one fixed random order. Decoding 60,000
images takes a while, so it is done once: the arrays are cached as an ``.npz``
in the data folder (or in ``cache_dir`` when that is not writable).

What the folder may hold: every problem with the
user's folder is a `DataError` of one line naming the file or folder (names
that are not valid UTF-8, or hold control characters, are shown escaped, as
``caf\\xe9.png``) and saying what to do, raised before any image is decoded
where it can be.

- Entries whose name starts with "." (``.DS_Store``, ``.ipynb_checkpoints``)
  are skipped. Everything else is refused by name, not skipped: a mislaid
  file should not silently change the data. A class folder holds regular
  files (or symbolic links to them) named ``*.png``, ``*.jpg`` or ``*.jpeg``,
  not empty; a named pipe, socket, device, folder or broken link there is
  refused after an ``os.stat``, which never opens it (opening a FIFO would
  hang). A split holds class folders only.
- Image file names need not be valid UTF-8: such files are loaded (the cache
  key hashes the raw bytes of the name). Class folder names must be valid
  UTF-8 without control characters, since they are printed and saved as the
  class names.
- Classes: the same class folders in train/ and test/, 2 to 10 of them, each
  with at least one image in each split. Folders named after some but not all
  of CIFAR-10's classes (one missing or misspelled) are refused: their labels
  would silently not be CIFAR-10's.
- Files are decoded by content, PNG or JPEG only (a JPEG named .png counts as
  JPEG, since "jpeg" changes the expected accuracy), 32x32 unless ``resize``,
  and at most `_MAX_PIXELS` (Pillow's decompression-bomb bound, applied even
  if Pillow's own check is turned off). See `_rgb_array` for how each Pillow
  mode becomes 8-bit RGB.

The decoded cache is keyed on each file's relative name, label, size,
``st_mtime_ns``, ``st_ino`` and ``st_ctime_ns``, and on the decoding version.
The ctime changes on every write and cannot be set back by ``touch``/``utime``,
so a file rewritten in place with the same size and a restored mtime is still
seen (a chmod, a new hard link or a copy of the folder change the key too:
one more decode, never stale data). Limit: a change made within the file
system's timestamp granularity of the file's previous change (a few ms on
Linux, seconds on some network or FAT file systems), keeping its inode and
size, is not seen; delete the cache file to force a decode. Writing a cache
removes the caches it replaces (ours only, by name: the same image folder and
resize setting), and is atomic.

Pillow is imported only to decode, and Keras only for the progress bar.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings

import numpy as np

from pipelines.dataset import CLASS_NAMES, IMAGE_SHAPE, DataError, checked, first_line, shown_name
from pipelines.decoded_cache import cache_key, cache_slots, read_cache, remove_replaced, write_cache

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What each decodable content format counts as (MPO: a camera JPEG with extra frames).
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}
# Pillow's default decompression-bomb bound (Image.MAX_IMAGE_PIXELS), kept even where it is turned off.
_MAX_PIXELS = 89_478_485
_PROGRESS_EVERY = 1000

_TRAIN_ORDER_SEED = 0
_TEST_ORDER_SEED = 1


def load_image_dir(root, origin, resize, cache_dir, progress):
    """Loads ``root/train/<class>/*`` and ``root/test/<class>/*``, through the decoded cache."""
    where = shown_name(root)
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            state = "is not a folder" if os.path.lexists(split_dir) else "is missing"
            raise DataError(
                f"image folder {where} has no {split}/ split ({split}/ {state}): expected "
                f"{where}/train/<class>/*.png|jpg and {where}/test/<class>/*"
            )
    listing = {split: _scan_split(root / split) for split in ("train", "test")}
    class_names = _class_names(where, set(listing["train"]), set(listing["test"]))

    files = {}  # split -> [(path, label, relpath, stat key)] ordered by label, then file name
    for split in ("train", "test"):
        files[split] = []
        for label, name in enumerate(class_names):
            for path, key in listing[split][name]:
                files[split].append((path, label, f"{split}/{name}/{os.path.basename(path)}", key))
    # The official batches hold both splits in random order, so the first N
    # images of either are a class-mixed sample (--subset N, x_test[:1000],
    # `predict --images 0,5,17` rely on that). Give an image folder the same
    # property: one fixed permutation per split.
    for split, seed in (("train", _TRAIN_ORDER_SEED), ("test", _TEST_ORDER_SEED)):
        order = np.random.default_rng(seed).permutation(len(files[split]))
        files[split] = [files[split][i] for i in order]

    caches = cache_slots(root, cache_dir, resize, cache_key(files, resize))
    counts = {split: len(files[split]) for split in files}
    for _, _, cache in caches:
        cached = read_cache(cache, counts, class_names, set(_FORMATS.values()))
        if cached is not None:
            arrays, formats = cached
            return _checked(arrays, formats, class_names, where, origin, f"decoded cache {shown_name(cache)}")

    all_paths = [f[0] for split in ("train", "test") for f in files[split]]
    images, formats = _decode_images(all_paths, resize, progress)
    x_train, x_test = images[: counts["train"]], images[counts["train"] :]
    y_train = np.array([f[1] for f in files["train"]], dtype=np.int32)
    y_test = np.array([f[1] for f in files["test"]], dtype=np.int32)
    arrays = (x_train, y_train, x_test, y_test)

    written, failures = None, []
    for _, prefix, cache in caches:
        try:
            write_cache(cache, prefix, arrays, class_names, formats)
            written = cache
            break
        except OSError as e:
            failures.append(f"{shown_name(cache.parent)}: {e.strerror or e}")
    if written is not None:
        remove_replaced(caches, written)
        note = f"decoded cache {shown_name(written)}"
    else:
        note = "decoded, not cached"
        warnings.warn(
            f"could not cache the decoded images of {where} ({'; '.join(failures)}): "
            f"pass a writable cache_dir to avoid decoding again",
            stacklevel=4,
        )
    return _checked(arrays, formats, class_names, where, origin, note)


def _checked(arrays, formats, class_names, where, origin, note):
    """`checked`, its source line naming the folder, who named it, the formats and the cache."""
    # One JPEG is enough to make the copy lossy, and "jpeg" is what changes the expected accuracy.
    image_format = "jpeg" if "jpeg" in formats else "png"
    format_label = " and ".join(f.upper() for f in sorted(formats))
    return checked(
        *arrays,
        source=f"image folder {where} (from {origin}, {format_label}, {note})",
        image_format=image_format,
        class_names=class_names,
    )


def _class_names(where, train_classes, test_classes):
    """The class names in label order; DataError unless train/ and test/ agree on 2 to 10 usable classes."""
    if train_classes != test_classes:
        only_train = _listed(train_classes - test_classes)
        only_test = _listed(test_classes - train_classes)
        raise DataError(
            f"image folder {where}: train/ and test/ have different class folders "
            f"(only in train: {only_train}; only in test: {only_test}); make them match"
        )
    # CIFAR-10's names happen to be alphabetical; naming the order keeps labels
    # right even if CLASS_NAMES or the sort rule ever change.
    if train_classes == set(CLASS_NAMES):
        return CLASS_NAMES
    if not 2 <= len(train_classes) <= len(CLASS_NAMES):
        raise DataError(
            f"image folder {where} has {len(train_classes)} class folders in train/ and test/ "
            f"({_listed(train_classes)}), expected 2 to 10 (CIFAR-10 labels are 0..9): one folder per class"
        )
    # Some of CIFAR-10's names but not all (a missing or misspelled folder): sorted labels would
    # not be CIFAR-10's, silently.
    cifar = train_classes & set(CLASS_NAMES)
    if cifar:
        raise DataError(
            f"image folder {where} has {len(cifar)} of CIFAR-10's 10 class folders "
            f"(missing: {_listed(set(CLASS_NAMES) - cifar)}; not CIFAR-10's: {_listed(train_classes - cifar)}): "
            f"add or rename folders in train/ and test/ so that all ten are there, or, for a dataset of your own, "
            f"name no folder after a CIFAR-10 class (its labels would not be CIFAR-10's)"
        )
    return tuple(sorted(train_classes))


def _listed(names, limit=12):
    """Sorted names, comma-separated, at most ``limit`` of them."""
    names = sorted(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "none") + more


def _kind(mode):
    """What a non-regular file is, for messages."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _stat(entry):
    """``entry``'s stat, following symbolic links, without opening it; DataError if it has none."""
    try:
        return entry.stat()
    except OSError as e:
        shown, target = shown_name(entry.path), "?"
        if entry.is_symlink():
            if isinstance(e, FileNotFoundError):
                with contextlib.suppress(OSError):
                    target = shown_name(os.readlink(entry.path))
                raise DataError(f"{shown} is a broken symbolic link (to {target}, which does not exist): remove it or restore its target") from e
            raise DataError(f"{shown} is a symbolic link that cannot be followed ({e.strerror or e}): remove or fix it") from e
        raise DataError(f"cannot read {shown} ({e.strerror or e}): check its permissions, or remove it") from e


def _scan_split(split_dir):
    """Lists ``split_dir/<class>/<image>``: {class: [(path str, stat key)] sorted by name}.

    Hidden entries are skipped, anything else that is not what the layout
    expects is refused by name (see the module docstring). Paths stay strings:
    pathlib costs seconds over 60,000 files.
    """
    where = shown_name(split_dir)
    listing = {}
    for entry in _entries(split_dir):
        shown = shown_name(entry.path)
        st = _stat(entry)
        if not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
            raise DataError(
                f"{shown} is {what}, not a class folder: {where}/ holds one folder per class "
                f"(<class>/*.png|jpg); move it out"
            )
        if shown_name(entry.name) != entry.name:
            raise DataError(
                f"class folder {shown} has a name that is not valid UTF-8 text (or holds control characters): "
                f"rename it, class names are printed and saved"
            )
        listing[entry.name] = _scan_class(entry.path)
    if not listing:
        raise DataError(f"{where} has no class folders: expected {where}/<class>/*.png|jpg, one folder per class")
    return listing


def _scan_class(class_dir):
    """[(path, (size, mtime_ns, ino, ctime_ns))] of the images in one class folder, by name."""
    images = []
    for entry in _entries(class_dir):
        path = entry.path
        st = _stat(entry)  # never opens: a FIFO is refused here, not read
        if stat.S_ISDIR(st.st_mode):
            raise DataError(
                f"unexpected folder {shown_name(path)}: class folders hold image files only "
                f"(expected <class>/*.png|jpg); move it out"
            )
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{shown_name(path)} is {_kind(st.st_mode)}, not an image file: remove it from the image folder")
        if not entry.name.lower().endswith(_IMAGE_SUFFIXES):
            raise DataError(f"{shown_name(path)} is not an image (expected .png, .jpg or .jpeg): remove it from the image folder")
        if st.st_size == 0:
            raise DataError(f"{shown_name(path)} is empty (0 bytes): replace it with the image or remove it")
        images.append((path, (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)))
    if not images:
        raise DataError(
            f"class folder {shown_name(class_dir)} is empty: add its .png/.jpg images or remove the folder"
        )
    return images


def _entries(folder):
    """The folder's entries not starting with ".", sorted by name; DataError if it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as e:
        raise DataError(
            f"cannot list {shown_name(e.filename or folder)} ({e.strerror or e}): make it readable (chmod a+rx) or remove it"
        ) from e
    return sorted(entries, key=lambda e: e.name)


def _decode_images(paths, resize, progress):
    """Decodes image files into one (N, 32, 32, 3) uint8 array, in order, and the set of their formats."""
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
    formats = set()
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and decodes anyway; here it is an error, raised in Image.open.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i, path in enumerate(paths):
            out[i], image_format = _decode_one(Image, path, resize)
            formats.add(image_format)
            if bar is not None and ((i + 1) % _PROGRESS_EVERY == 0 or i + 1 == len(paths)):
                bar.update(i + 1)
    return out, formats


def _decode_one(Image, path, resize):
    """One image as ((32, 32, 3) uint8, "png" or "jpeg"); ``Image`` is PIL.Image, passed in to import it once."""
    shown = shown_name(path)
    try:
        # O_NONBLOCK: should the file have become a FIFO since it was listed, opening it does not
        # hang, and fstat refuses it below (O_NONBLOCK changes nothing for a regular file).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise DataError(f"cannot read {shown} ({e.strerror or e}): make it readable (chmod a+r) or remove it") from e
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{shown} became {_kind(mode)} while the folder was read: remove it from the image folder")
        try:
            with Image.open(f) as im:
                image_format = _FORMATS.get(im.format)
                if image_format is None:
                    raise DataError(f"{shown} holds a {im.format} image, expected PNG or JPEG: convert it to PNG")
                w, h = im.size
                if w * h > _MAX_PIXELS:
                    raise DataError(
                        f"{shown} is {w}x{h}, over the {_MAX_PIXELS:,}-pixel limit (a decompression bomb?): "
                        f"shrink it or remove it"
                    )
                if (w, h) != IMAGE_SHAPE[:2] and not resize:
                    raise DataError(f"{shown} is {w}x{h}, expected 32x32: pass --resize to resize images to 32x32")
                rgb = _rgb_array(im, shown)
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DataError(f"{shown} is too large to decode ({shown_name(first_line(e))}): shrink it or remove it") from e
        except Exception as e:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, ... on bad files
            raise DataError(
                f"{shown} is not a readable image ({type(e).__name__}: {shown_name(first_line(e))}): replace or remove it"
            ) from e
    if rgb.shape[:2] != IMAGE_SHAPE[:2]:
        rgb = np.asarray(Image.fromarray(rgb).resize(IMAGE_SHAPE[:2], Image.Resampling.BILINEAR))
    return rgb, image_format


def _rgb_array(im, shown):
    """A Pillow image of any mode as (H, W, 3) uint8 RGB; DataError naming a mode it cannot convert.

    - 16-bit grey ("I;16", "I;16L", "I;16B", "I;16N"): the high byte
      (``>> 8``, i.e. /257 rounded down), as Pillow itself reduces 16-bit RGB
      PNGs, so 65535 is 255 and 32767 is 127 (Pillow's convert clips to 255: white).
    - "I" (32-bit integers; what older Pillows open 16-bit grey PNGs as):
      taken as 16-bit, clipped to 0..65535, then as above.
    - "F" (float): Pillow's own F -> L rule, values on the 0..255 scale,
      clipped and truncated.
    - Alpha ("LA", "La", "PA", "RGBA", "RGBa", "P" with transparency): the
      alpha channel is dropped and the (un-premultiplied) colour kept, as
      Keras's ``load_img`` and torchvision do; "P" with transparency goes
      through RGBA, which gives the same colours without Pillow's warning.
    - "1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV": Pillow's conversion.
    """
    mode = im.mode
    if mode == "I" or mode.startswith("I;16"):
        try:
            grey = np.asarray(im)
        except Exception as e:  # noqa: BLE001 - a raw mode numpy cannot map
            raise DataError(f"{shown} has image mode {mode}, which this loader cannot read: convert it to 8-bit RGB") from e
        if mode == "I":
            grey = np.clip(grey, 0, 65535)
        grey = (grey.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "La" or (mode == "P" and "transparency" in im.info):
        im = im.convert("LA" if mode == "La" else "RGBA")
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except ValueError as e:
            raise DataError(f"{shown} has image mode {mode}, which Pillow cannot convert to RGB: convert it to 8-bit RGB") from e
    return np.asarray(im)
