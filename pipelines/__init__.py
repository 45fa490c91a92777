"""Data for fast CIFAR-10 training: sources, tf.data and device-resident feeds, on-device augmentation.

Modules, one job each:

- `cifar10`: the public data API. `load_cifar10` tries the sources in order
  and returns a `Cifar10`; it also re-exports `DataError`, `CLASS_NAMES`,
  `IMAGE_SHAPE`, the targets and the synthetic data. Import from here.
- `dataset`: `Cifar10`, `DataError`, the checks every source's arrays pass, and
  how a name from the user's disk is shown in a message (`shown_name`).
- `pickle_batches`: the official Python-pickle batches (md5 sums, restricted
  unpickler).
- `image_folders`: ``train/<class>/*.png|jpg`` folders: listing, checks and
  decoding; `decoded_cache`: their decoded arrays kept as one ``.npz``.
- `tfds_source`: the tensorflow-datasets fallback and its network probe.
- `targets`: the accuracy a run times (DAWNBench's 94%; 91% on the JPEG copy).
- `synthetic`: class-coloured noise for smoke runs and tests.
- `feeds`: the training feeds for `model.fit` (device-resident or tf.data).
- `augment`: the augmentations themselves, in `keras.ops`.
- `keras_private`: every private Keras API the project relies on, checked
  against the pinned Keras (the lowest layer, so that both packages can use it).

Where each augmentation goes, and why:

- In the model: crop, flip and cutout. `augment.BatchAugmentation` is the
  first layer of our models; it runs on the accelerator, on whole batches,
  inside the compiled train step, and only when ``training=True``, so
  evaluation, prediction and a saved ``.keras`` model see the original images.
- In the feed (`feeds`): what changes the labels or the batch size, which a
  layer cannot do. Mixup mixes the labels as well as the images; batch
  augmentation (``copies``) repeats each sample in the batch, and the model's
  augmentation then makes each copy different. Both feeds do them
  (`tfdata_feed` only on the TensorFlow backend); the scanned loop's
  `ScanFeed` does neither. Host augmenters (``host_augment``: imgaug,
  albumentations or any NumPy function on a uint8 batch) run on the CPU, in
  the tf.data feed only.
- Per epoch, in the device feed: airbench's alternating flip
  (`augment.alternating_flip`). Each image has a fixed random bit and is
  mirrored in the epochs where that bit XOR the epoch's parity is set, so the
  flip needs each image's index and the epoch number, which the feed has and
  the model does not. `DeviceFeed` and `ScanFeed` only; it replaces the
  model's random flip.

The test set never goes through a feed: evaluation sees the original images.
"""
