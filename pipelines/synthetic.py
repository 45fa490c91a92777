"""Synthetic CIFAR-10-shaped data for smoke runs and tests: class-coloured noise.

Learnable in a few steps by a tiny model, and never mistaken for CIFAR-10: its
``source`` says so and its ``image_format`` is "synthetic".
"""

from __future__ import annotations

import numpy as np

from pipelines.dataset import CLASS_NAMES, IMAGE_SHAPE, Cifar10

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

