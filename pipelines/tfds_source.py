"""The last source: CIFAR-10 through tensorflow-datasets, which may download it.

Unless tensorflow-datasets already holds cifar10, the download host is probed
first (a TCP connection, bounded in time), so that a machine without network
fails in seconds with one line instead of after minutes of retries.
tensorflow-datasets is imported only when it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.dataset import CLASS_NAMES, LAYOUTS, WHERE_HINT, DataError, checked, first_line

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


def load_tfds():
    """Loads CIFAR-10 through tensorflow-datasets, downloading it if needed
    (after checking in seconds that the download host can be reached)."""
    if not _tfds_prepared():
        why = _unreachable(_TFDS_URL)
        if why is not None:
            host = _TFDS_URL.split("/")[2]
            raise DataError(
                f"no CIFAR-10 on this machine and its download host {host} cannot be reached ({why}): "
                f"{WHERE_HINT} ({LAYOUTS})"
            )
    try:
        import tensorflow_datasets as tfds

        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(
            tfds.load("cifar10", split=["train", "test"], batch_size=-1, as_supervised=True)
        )
    except Exception as e:  # noqa: BLE001 - no network, not installed, quota: all mean "not available"
        raise DataError(
            f"no CIFAR-10 found: {WHERE_HINT}; the download through tensorflow-datasets failed: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from e
    return checked(
        np.asarray(x_train, dtype=np.uint8),
        np.asarray(y_train).astype(np.int32),
        np.asarray(x_test, dtype=np.uint8),
        np.asarray(y_test).astype(np.int32),
        source="tensorflow-datasets cifar10",
        image_format="tfds",
        class_names=CLASS_NAMES,
    )

