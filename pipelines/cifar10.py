"""CIFAR-10 as uint8 NHWC arrays, from whichever copy this machine has.

The public API of the data: `load_cifar10`, the `Cifar10` it returns,
`DataError`, `CLASS_NAMES` and `IMAGE_SHAPE`, and (re-exported from their own
modules) the targets and the synthetic data. Import them from here.

Three sources are tried in order: a folder the user names (``data_dir`` or the
``CIFAR10_DIR`` environment variable), the Keras download cache
``~/.keras/datasets/cifar-10-batches-py``, and finally tensorflow-datasets.
This module holds that order; each source has a module of its own:

- `pipelines.pickle_batches`: the official Python-pickle batches, read with a
  restricted unpickler, so a doctored batch cannot run code (the Keras cache
  is in this layout);
- `pipelines.image_folders`: an image folder (``train/<class>/*.png|jpg`` and
  ``test/<class>/*``), decoded once and cached as an ``.npz`` keyed on the
  folder's listing;
- `pipelines.tfds_source`: tensorflow-datasets, after a network probe;
- `pipelines.dataset`: `Cifar10`, `DataError` and the checks all of them pass;
- `pipelines.targets`: the accuracy a run times (DAWNBench's 94%, 91% on JPEG);
- `pipelines.synthetic`: class-coloured noise for smoke runs and tests.

Every problem with the user's data is raised as :class:`DataError` with a
one-line message naming the file, what was expected and what to do.

TensorFlow, Pillow and Keras are imported lazily, inside the functions that
need them: importing this module costs numpy only.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pipelines.dataset import CLASS_NAMES, IMAGE_SHAPE, LAYOUTS, WHERE_HINT, Cifar10, DataError
from pipelines.image_folders import load_image_dir
from pipelines.pickle_batches import find_pickle_dir, load_pickle_dir
from pipelines.synthetic import synthetic_cifar10, synthetic_images
from pipelines.targets import DAWNBENCH_TARGET, equivalent_target, resolve_target, target_note
from pipelines.tfds_source import load_tfds

__all__ = [
    "CLASS_NAMES",
    "DAWNBENCH_TARGET",
    "IMAGE_SHAPE",
    "Cifar10",
    "DataError",
    "equivalent_target",
    "load_cifar10",
    "resolve_target",
    "synthetic_cifar10",
    "synthetic_images",
    "target_note",
]

_KERAS_CACHE = "~/.keras/datasets/cifar-10-batches-py"


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
        return _located(_load_dir(Path(os.path.expanduser(data_dir)), "--data-dir", verify, resize, cache_dir, progress), data_dir)
    env_dir = os.environ.get("CIFAR10_DIR", "")
    if env_dir:
        return _located(_load_dir(Path(os.path.expanduser(env_dir)), "CIFAR10_DIR", verify, resize, cache_dir, progress), env_dir)
    keras_cache = Path(os.path.expanduser(_KERAS_CACHE))
    if keras_cache.is_dir():
        return _located(load_pickle_dir(keras_cache, verify, origin="Keras cache"), keras_cache)
    if not download:
        raise DataError(f"no CIFAR-10 found and download is off: {WHERE_HINT}, or allow the download")
    return load_tfds()


def _located(data, folder):
    """`data` with the absolute path of the folder it was read from."""
    return dataclasses.replace(data, location=str(Path(os.path.expanduser(folder)).resolve()))


# --- named folders ---------------------------------------------------------------


def _load_dir(path, origin, verify, resize, cache_dir, progress):
    """Loads a user-named folder in either layout; ``origin`` says who named it."""
    named = f"{path} (from {origin})"
    if not path.exists():
        raise DataError(f"{named} does not exist: {WHERE_HINT}")
    if not path.is_dir():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(
                f"{named} is an archive, not a directory: extract it (tar xf) and pass the extracted folder"
            )
        raise DataError(f"{named} is not a directory: {WHERE_HINT}")
    try:
        batch_dir = find_pickle_dir(path)
        has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    except OSError as e:
        raise DataError(f"cannot read {named}: {e.strerror or e}") from e
    if batch_dir is not None:
        return load_pickle_dir(batch_dir, verify, origin=origin)
    if has_train or has_test:
        return load_image_dir(path, origin, resize, cache_dir, progress)
    hint = ""
    if path.name in ("train", "test"):
        hint = "; this looks like one split: pass its parent folder"
    raise DataError(f"{named} is in neither CIFAR-10 layout: {LAYOUTS}{hint}")

