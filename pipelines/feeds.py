"""Training feeds: batches of (uint8 images, one-hot labels) for `model.fit`.

Two feeds, one contract:
- `DeviceFeed`: the whole uint8 training set lives on the device; one
  permutation per epoch; each batch is a gather on the device. Works on every
  backend and is the fast path on JAX (no host-to-device copy per step).
- `tfdata_feed`: a tf.data pipeline (uint8 on the host; shuffle, batch,
  prefetch), the TensorFlow default. TensorFlow is imported only here, lazily,
  so the JAX path runs where TensorFlow is not installed.

Crop, flip and cutout are not done here: they run in the model
(`BatchAugmentation`), inside the compiled train step. The feeds do what also
changes the labels: mixup, and batch augmentation's repeated copies. The test
set is never fed through here: evaluation sees the original images.
"""

import keras
import numpy as np
from keras import ops

from pipelines import augment, keras_private


def check_batch_size(num_samples, batch_size):
    """Raises ValueError unless at least one full batch fits in the data."""
    if batch_size < 1 or batch_size > num_samples:
        raise ValueError(
            f"batch size {batch_size} does not fit {num_samples} training images: "
            "choose a batch size between 1 and the number of images"
        )


class DeviceFeed(keras.utils.PyDataset):
    """A device-resident training feed, usable with `model.fit` on any backend.

    Args:
        images: uint8 array (N, 32, 32, 3).
        labels: integer labels (N,).
        batch_size: samples per batch before `copies`; the last partial batch
            of an epoch is dropped, as in DavidNet.
        num_classes: width of the one-hot labels.
        seed: seeds the per-epoch permutation and mixup.
        mixup_alpha: Beta(alpha, alpha) mixup; 0 turns it off.
        copies: batch augmentation: each sample this many times per batch.
        process: (index, count) of this process in a multi-host run: every
            process draws the same permutation and takes rows index::count of
            each global batch, so together they feed each sample once.
        alternating_flip: airbench's derandomised flip: each image gets a
            fixed random bit, and is fed mirrored in the epochs where that bit
            XOR the epoch's parity is set, so over any two consecutive epochs
            it is seen once each way. The model's own random flip should then
            be off.

    Example:
    ```python
    feed = DeviceFeed(x_train, y_train, batch_size=512, seed=0)
    model.fit(feed, epochs=24, shuffle=False)
    ```
    """

    def __init__(
        self,
        images,
        labels,
        batch_size,
        num_classes=10,
        seed=0,
        mixup_alpha=0.0,
        copies=1,
        process=(0, 1),
        alternating_flip=False,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        check_batch_size(len(images), batch_size)
        self.process_index, self.process_count = process
        self.num_samples = len(images)
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.copies = copies
        self.images = ops.convert_to_tensor(np.asarray(images, np.uint8))
        self.labels = ops.convert_to_tensor(np.asarray(labels, np.int32))
        self._rng = np.random.default_rng(seed)
        self._seed_generator = keras.random.SeedGenerator(seed)
        self.alternating_flip = alternating_flip
        # Its own seed stream, so turning the flip on leaves the batch order as it was.
        self.flip_bits = augment.flip_bits(self.num_samples, [seed, 1]) if alternating_flip else None
        self.epoch = -1  # counts on_epoch_begin calls (this constructor's is the first)
        self.order = None
        self.order_bits = None
        self.on_epoch_begin()

    def __len__(self):
        return self.num_samples // self.batch_size

    def on_epoch_begin(self):
        # 50k indices: drawing them on the host costs microseconds, and one
        # transfer per epoch keeps the per-step path on the device.
        self.epoch += 1
        order = self._rng.permutation(self.num_samples).astype(np.int32)
        self.order = ops.convert_to_tensor(order)
        if self.alternating_flip:
            self.order_bits = ops.convert_to_tensor(self.flip_bits[order])

    def example(self):
        """Zeros shaped and typed as an item, drawing no random numbers (to
        compile the train step ahead of a run without changing it)."""
        rows = len(range(self.process_index, self.batch_size, self.process_count)) * self.copies
        dtype = "float32" if self.mixup_alpha > 0 else "uint8"
        return ops.zeros((rows, *self.images.shape[1:]), dtype), ops.zeros((rows, self.num_classes), "float32")

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        batch = self.order[rows][self.process_index :: self.process_count]
        bits = self.order_bits[rows][self.process_index :: self.process_count] if self.alternating_flip else None
        images, labels = device_batch(self.images, self.labels, batch, self.num_classes, bits, self.epoch)
        return label_mixing(images, labels, self.mixup_alpha, self.copies, self._seed_generator)


class ScanFeed(DeviceFeed):
    """The device feed of the scanned epoch loop (`davidnet.scan`): each item
    is `steps_per_call` batches of sample indices (with their flip bits and
    the epoch, for the alternating flip), and the compiled loop gathers the
    batches itself with `gather_batch`.

    Args:
        images, labels, batch_size, num_classes, seed, process,
            alternating_flip: as for `DeviceFeed`.
        steps_per_call: batches per item; None: the whole epoch in one item.

    Each item is `(indices, bits, epoch)`: int32 (steps, batch), bool
    (steps, batch) (all False without alternating flip) and an int32 scalar.
    Mixup and batch-augmentation copies are not supported here.
    """

    def __init__(self, images, labels, batch_size, steps_per_call=None, **kwargs):
        if kwargs.get("mixup_alpha") or kwargs.get("copies", 1) > 1:
            raise ValueError("the scanned loop (--loop scan) does not do mixup or batch-augmentation copies: use --loop fit")
        super().__init__(images, labels, batch_size, **kwargs)
        self.steps = self.num_samples // self.batch_size
        self.steps_per_call = min(steps_per_call or self.steps, self.steps)

    def __len__(self):
        return -(-self.steps // self.steps_per_call)

    def example(self):
        return tuple(ops.zeros_like(part) for part in self[0])

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range 0..{len(self) - 1}")
        first = index * self.steps_per_call
        count = min(self.steps_per_call, self.steps - first)
        rows = slice(first * self.batch_size, (first + count) * self.batch_size)
        indices = ops.reshape(self.order[rows], (count, self.batch_size))
        if self.alternating_flip:
            bits = ops.reshape(self.order_bits[rows], (count, self.batch_size))
        else:
            bits = ops.zeros((count, self.batch_size), "bool")
        share = slice(self.process_index, None, self.process_count)
        return indices[:, share], bits[:, share], ops.convert_to_tensor(self.epoch, "int32")


def gather_batch(images, labels, indices, num_classes):
    """The images and one-hot labels at `indices` of device-resident data."""
    return ops.take(images, indices, axis=0), ops.one_hot(ops.take(labels, indices, axis=0), num_classes)


def device_batch(images, labels, indices, num_classes, bits=None, epoch=0):
    """One training batch from device-resident data, before the model's own
    augmentation: the images and one-hot labels at `indices`, then (`bits`
    given: each sample's flip bit) airbench's alternating flip for `epoch`.
    keras.ops only: `DeviceFeed` calls it per batch, and the scanned epoch
    loop (`davidnet.scan`) traces the very same code into its program."""
    x, y = gather_batch(images, labels, indices, num_classes)
    if bits is not None:
        x = augment.alternating_flip(x, bits, epoch)
    return x, y


def label_mixing(images, labels, mixup_alpha, copies, seed):
    """Mixup then batch augmentation, the label-changing steps of a feed."""
    if mixup_alpha > 0:
        images, labels, _ = augment.mixup(images, labels, seed, mixup_alpha)
    return augment.repeat_batch(images, labels, copies)


def tfdata_feed(
    images,
    labels,
    batch_size,
    num_classes=10,
    seed=0,
    mixup_alpha=0.0,
    copies=1,
    host_augment=None,
):
    """A tf.data training feed: uint8 on the host, shuffled, batched, prefetched.

    Args:
        images, labels, batch_size, num_classes, seed, mixup_alpha, copies:
            as for `DeviceFeed`.
        host_augment: optional callable `f(uint8 images NHWC) -> uint8 images`
            of the same shape, applied to each batch on the host (an imgaug
            `Sequential`, an albumentations pipeline wrapped to take a batch,
            or any NumPy function).

    Returns:
        A `tf.data.Dataset` of `(images, one_hot_labels)`; images are uint8,
        or float32 when mixup is on.
    """
    import tensorflow as tf

    keras_private.seed_tensorflow()  # the run's seed, where TensorFlow was first imported just now
    check_batch_size(len(images), batch_size)
    if (mixup_alpha > 0 or copies > 1) and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "mixup and batch-augmentation copies in the tf.data feed need the "
            "TensorFlow backend: use the device feed (--pipeline device) instead"
        )
    images = np.asarray(images, np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)

    if host_augment is not None:

        def apply_host_augment(x, y):
            out = tf.numpy_function(
                lambda batch: _checked_host_augment(host_augment, batch), [x], tf.uint8
            )
            return tf.ensure_shape(out, x.shape), y

        dataset = dataset.map(apply_host_augment, num_parallel_calls=tf.data.AUTOTUNE)

    def to_one_hot(x, y):
        return x, tf.one_hot(y, num_classes)

    dataset = dataset.map(to_one_hot, num_parallel_calls=tf.data.AUTOTUNE)

    if mixup_alpha > 0:
        # keras.random takes no tensor seeds, so the tf.data graph draws the
        # Beta weights itself (as a ratio of Gammas) and shares `augment.mix`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def apply_mixup(batch, seed_pair):
            x, y = batch
            n = tf.shape(x)[0]
            g1 = tf.random.stateless_gamma([n], seed=seed_pair, alpha=mixup_alpha)
            g2 = tf.random.stateless_gamma([n], seed=seed_pair[::-1], alpha=mixup_alpha)
            return augment.mix(x, y, g1 / (g1 + g2))

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            apply_mixup, num_parallel_calls=tf.data.AUTOTUNE
        )
    if copies > 1:
        dataset = dataset.map(lambda x, y: augment.repeat_batch(x, y, copies))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _checked_host_augment(fn, batch):
    out = np.asarray(fn(batch))
    if out.shape != batch.shape or out.dtype != np.uint8:
        raise ValueError(
            "host_augment must return uint8 images of the shape it was given: "
            f"expected {batch.shape} uint8, got {out.shape} {out.dtype}"
        )
    return out


FEEDS = ("device", "tfdata")


def _tensorflow_installed():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


# The device feed may take this share of the accelerator's free memory; the
# rest is for the model, its activations and the compiled programs.
DEVICE_SHARE = 0.5


def make_feed(kind, images, labels, batch_size, free_bytes=None, process=(0, 1), scan=False, alternating_flip=False, **kwargs):
    """Builds a training feed by name: "device", "tfdata" or "auto"
    (tf.data on the TensorFlow backend, the device feed elsewhere).

    Args:
        scan: a `ScanFeed`, for the scanned epoch loop (device feed only).
        alternating_flip: airbench's derandomised flip (device feeds only).
        free_bytes: the accelerator's free memory (None: unknown, no check).
            A training set over `DEVICE_SHARE` of it does not go on the device:
            "auto" falls back to tf.data if TensorFlow is installed, and
            "device" (or "auto" without TensorFlow) stops with the sizes.
        process: (index, count) of this host in a multi-host run (see `DeviceFeed`).
    """
    requested = kind
    if kind == "auto":
        kind = "tfdata" if keras.backend.backend() == "tensorflow" else "device"
    needed = np.asarray(images).nbytes + np.asarray(labels).nbytes
    if kind == "device" and free_bytes is not None and needed > DEVICE_SHARE * free_bytes:
        sizes = f"the training set needs {needed / 2**20:.0f} MiB and the accelerator has {free_bytes / 2**20:.0f} MiB free"
        if requested == "auto" and _tensorflow_installed():
            print(f"note: {sizes}: streaming it with tf.data instead of keeping it on the device")
            kind = "tfdata"
        else:
            raise MemoryError(f"{sizes}: use --pipeline tfdata (needs TensorFlow) or --subset N")
    if kind == "tfdata":
        for wanted, what in ((process[1] > 1, "a multi-host run"), (scan, "the scanned loop (--loop scan)"), (alternating_flip, "alternating flip")):
            if wanted:
                raise ValueError(f"{what} needs the device feed: use --pipeline device")
        return tfdata_feed(images, labels, batch_size, **kwargs)
    if kind == "device":
        if kwargs.pop("host_augment", None) is not None:
            raise ValueError("host_augment runs in the tf.data feed only: use --pipeline tfdata")
        feed = ScanFeed if scan else DeviceFeed
        return feed(images, labels, batch_size, process=process, alternating_flip=alternating_flip, **kwargs)
    raise ValueError(f"pipeline must be one of auto, {', '.join(FEEDS)}. Got: {kind!r}")
