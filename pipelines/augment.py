"""On-device batch augmentation for CIFAR-10, written in `keras.ops` only.

Every function takes a whole batch (NHWC) and a `seed` (anything `keras.random`
accepts: an int, a `keras.random.SeedGenerator`, or a seed tensor for stateless
use inside traced functions) and returns a batch. Nothing loops over images in
Python, so the same code runs inside the compiled train step on the TensorFlow
and JAX backends.

`BatchAugmentation` is the layer that puts crop, flip and cutout into a model:
it runs only when `training=True`, so evaluation and prediction always see the
original, unaugmented images. Mixup and batch augmentation change the labels
as well as the images, so they live in the data feeds (`pipelines.feeds`).
"""

import keras
import numpy as np
from keras import ops

from pipelines import keras_private

# Per-channel statistics of the CIFAR-10 training set, in 0..255 pixel units.
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)


def normalize(images, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype="float32"):
    """Returns `(images - mean) / std` per channel, as `dtype`.

    Args:
        images: batch NHWC, uint8 or float, in 0..255 pixel units.
        mean, std: per-channel statistics in pixel units.
        dtype: the output dtype.
    """
    images = ops.cast(images, "float32")
    mean = ops.convert_to_tensor(mean, "float32")
    std = ops.convert_to_tensor(std, "float32")
    return ops.cast((images - mean) / std, dtype)


def random_crop(images, seed, padding=4, mode="reflect"):
    """Pads each image by `padding` pixels and crops it back at a random offset.

    Args:
        images: batch NHWC.
        seed: a seed for `keras.random`.
        padding: pixels of padding on every side (4 in DavidNet and He et al.).
        mode: "reflect" (DavidNet) or "constant" (zeros, He et al.).

    Returns:
        A batch of the same shape; each image has its own offset.
    """
    if mode not in ("reflect", "constant"):
        raise ValueError(f"mode must be 'reflect' or 'constant'. Got: {mode!r}")
    if padding == 0:
        return images
    batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
    padded = ops.pad(
        images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode=mode
    )
    offsets = keras.random.randint((batch, 2), 0, 2 * padding + 1, seed=seed)
    # Two gathers (rows, then columns) with per-image index grids: one batched op
    # each, instead of a slice per image.
    rows = offsets[:, :1] + ops.arange(height, dtype=offsets.dtype)[None, :]
    cols = offsets[:, 1:] + ops.arange(width, dtype=offsets.dtype)[None, :]
    out = ops.take_along_axis(padded, rows[:, :, None, None], axis=1)
    return ops.take_along_axis(out, cols[:, None, :, None], axis=2)


def random_flip(images, seed):
    """Flips each image left-right with probability 1/2."""
    flip = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=seed) < 0.5
    return ops.where(flip, ops.flip(images, axis=2), images)


CUTOUT_MODES = ("inside", "centre")


def cutout(images, seed, size=8, mode="inside"):
    """Zeros one `size` x `size` square per image, at a random place.

    mode "inside" (DavidNet, cifar10-fast's `Cutout`): the square lies wholly
    inside the image, its corner uniform over the places where it fits.
    mode "centre" (DeVries & Taylor's Cutout, and Hoffer et al.'s code): its
    centre is a uniform pixel of the image, its rows `c - size // 2` to
    `c + size // 2` (end excluded) clipped at the border, so near the border
    it covers less: on average 196 of 1024 pixels for size 16 on 32 x 32,
    against 256 inside. Applied to normalised images, zero is the mean colour.
    """
    if size == 0:
        return images
    if mode not in CUTOUT_MODES:
        raise ValueError(f"cutout mode must be one of {', '.join(CUTOUT_MODES)}. Got: {mode!r}")
    batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
    corner = keras.random.uniform((batch, 2), seed=seed)
    if mode == "inside":
        y0 = ops.floor(corner[:, 0] * (height - size + 1))[:, None, None]
        x0 = ops.floor(corner[:, 1] * (width - size + 1))[:, None, None]
        y1, x1 = y0 + size, x0 + size
    else:  # the clipping is implicit: rows and columns outside the image do not exist
        y = ops.floor(corner[:, 0] * height)[:, None, None]
        x = ops.floor(corner[:, 1] * width)[:, None, None]
        y0, x0, y1, x1 = y - size // 2, x - size // 2, y + size // 2, x + size // 2
    ys = ops.arange(height, dtype="float32")[None, :, None]
    xs = ops.arange(width, dtype="float32")[None, None, :]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return ops.where(inside[..., None], ops.zeros_like(images), images)


def mixup(images, labels, seed, alpha=1.0):
    """Mixes each sample with another of the batch (Zhang et al., "mixup").

    Each pair gets its own weight lam ~ Beta(alpha, alpha); see `mix` for the
    pairing.

    Args:
        images: batch NHWC (any dtype; returned as float32).
        labels: one-hot (or soft) labels, (N, classes).
        seed: a seed for `keras.random`.
        alpha: the Beta distribution's parameter.

    Returns:
        `(mixed_images, mixed_labels, lam)`, `lam` of shape (N,).
    """
    lam = keras.random.beta((ops.shape(images)[0],), alpha, alpha, seed=seed)
    return (*mix(images, labels, lam), lam)


def mix(images, labels, lam):
    """Returns `lam * sample[i] + (1 - lam) * sample[N-1-i]` for images and labels.

    The partner of sample i is sample N-1-i: the batch is already shuffled, so
    this is a random pairing without a second permutation. Split from `mixup`
    so that a feed can draw `lam` with its own random source (tf.data).
    """
    images = ops.cast(images, "float32")
    labels = ops.cast(labels, "float32")
    lam = ops.cast(lam, "float32")
    mixed_images = _lerp(images, ops.flip(images, axis=0), lam[:, None, None, None])
    mixed_labels = _lerp(labels, ops.flip(labels, axis=0), lam[:, None])
    return mixed_images, mixed_labels


def _lerp(a, b, weight):
    return weight * a + (1.0 - weight) * b


def repeat_batch(images, labels, copies):
    """Batch augmentation (Hoffer et al., "Augment your batch"): each sample
    `copies` times in the same batch; the in-model augmentation then makes each
    copy different. `copies` <= 1 returns the batch unchanged."""
    if copies <= 1:
        return images, labels
    return ops.repeat(images, copies, axis=0), ops.repeat(labels, copies, axis=0)


@keras.saving.register_keras_serializable(package="davidnet")
class BatchAugmentation(keras.layers.Layer):
    """Normalises images and, in training only, crops, flips and cuts them out.

    The first layer of our models: it takes uint8 (or float, for mixup) images
    in pixel units, so a saved `.keras` model predicts on raw images, and the
    augmentation runs on the accelerator inside the compiled train step.
    Augmentation acts on normalised images, as in cifar10-fast (so cutout and
    constant padding fill with the mean colour).

    Args:
        crop_padding: pixels of padding for the random crop (0: no crop).
        crop_mode: "reflect" or "constant".
        flip: whether to flip left-right at random.
        cutout_size: side of the cutout square (0: no cutout).
        cutout_mode: "inside" (DavidNet) or "centre" (DeVries & Taylor); see `cutout`.
        seed: an int for reproducible augmentation.

    Example:
    ```python
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = BatchAugmentation(crop_padding=4, flip=True, cutout_size=8)(inputs)
    ```
    """

    def __init__(
        self,
        crop_padding=4,
        crop_mode="reflect",
        flip=True,
        cutout_size=0,
        seed=None,
        cutout_mode="inside",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.crop_padding = crop_padding
        self.crop_mode = crop_mode
        self.flip = flip
        self.cutout_size = cutout_size
        if cutout_mode not in CUTOUT_MODES:
            raise ValueError(f"cutout_mode must be one of {', '.join(CUTOUT_MODES)}. Got: {cutout_mode!r}")
        self.cutout_mode = cutout_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        keras_private.allow_non_tensor_positional_args(self)  # the `training` flag, positional

    def call(self, images, training=False):
        x = normalize(images, dtype="float32")
        if training:
            if self.crop_padding:
                x = random_crop(x, self.seed_generator, self.crop_padding, self.crop_mode)
            if self.flip:
                x = random_flip(x, self.seed_generator)
            if self.cutout_size:
                x = cutout(x, self.seed_generator, self.cutout_size, self.cutout_mode)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "crop_padding": self.crop_padding,
            "crop_mode": self.crop_mode,
            "flip": self.flip,
            "cutout_size": self.cutout_size,
            "cutout_mode": self.cutout_mode,
            "seed": self.seed,
        }


def flip_bits(n, seed):
    """Returns n random booleans, drawn once per run, for `alternating_flip`.

    Args:
        n: number of training images.
        seed: a seed for NumPy's `default_rng`.
    """
    return np.random.default_rng(seed).random(n) < 0.5  # host-side, once per run


def alternating_flip(images, flip_bits, epoch):
    """airbench's derandomised flip: image i is mirrored in epoch e iff flip_bits[i] XOR (e odd).

    Random flipping shows an image in the same orientation in two consecutive
    epochs half the time; alternating shows every image once each way in every
    pair of epochs (in airbench's ablations: 94% in 9.9 epochs instead of 10.8).

    Args:
        images: batch NHWC (any dtype).
        flip_bits: bool or 0/1 ints (N,), each image's fixed bit from
            `flip_bits(num_train, seed)`, gathered with the same indices as
            `images` when the batch is a shuffled part of the training set.
        epoch: the epoch number, a Python int or a scalar tensor.

    Example:
    ```python
    bits = flip_bits(len(x_train), seed=0)
    batch = alternating_flip(x_train[idx], bits[idx], epoch)
    ```
    """
    flip_bits = ops.convert_to_tensor(flip_bits)
    if len(flip_bits.shape) != 1 or (
        images.shape[0] is not None and flip_bits.shape[0] is not None and flip_bits.shape[0] != images.shape[0]
    ):
        raise ValueError(
            f"flip_bits must have shape (N,) for a batch of N = {images.shape[0]} images. Got: {tuple(flip_bits.shape)}"
        )
    odd = ops.equal(ops.mod(ops.convert_to_tensor(epoch, "int32"), 2), 1)
    flip = ops.logical_xor(ops.cast(flip_bits, "bool"), odd)
    return ops.where(flip[:, None, None, None], ops.flip(images, axis=2), images)
