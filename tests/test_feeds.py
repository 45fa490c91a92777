"""Tests for pipelines.feeds: DeviceFeed, the tf.data feed, make_feed, and training through a feed."""

import importlib.util

import keras
import numpy as np
import pytest
from keras import ops

from pipelines.augment import BatchAugmentation, alternating_flip
from pipelines.feeds import DeviceFeed, make_feed, tfdata_feed
from tests.datasets import synthetic_arrays

BACKEND = keras.backend.backend()
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")

N = 100
BATCH = 16


def indexed_data(n=N):
    """uint8 images whose pixel [0, 0, 0] is their index, labels index % 10."""
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images, (np.arange(n) % 10).astype(np.int32)


def np_(x):
    return ops.convert_to_numpy(x)


def device_epoch(feed):
    """The batches of one epoch as NumPy (images, labels)."""
    return [tuple(np_(t) for t in feed[i]) for i in range(len(feed))]


def epoch_indices(batches):
    return np.concatenate([x[:, 0, 0, 0].astype(int) for x, _ in batches])


def tf_epoch(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


# --- DeviceFeed ------------------------------------------------------------------------


def test_device_feed_length_drops_partial_batch():
    x, y = indexed_data()
    assert len(DeviceFeed(x, y, BATCH)) == N // BATCH == 6
    assert len(DeviceFeed(x, y, N)) == 1
    assert len(DeviceFeed(x, y, 1)) == N


def test_device_feed_batches_have_shapes_and_matching_one_hot_labels():
    x, y = indexed_data()
    feed = DeviceFeed(x, y, BATCH, seed=1)
    batches = device_epoch(feed)
    assert len(batches) == 6
    for images, labels in batches:
        assert images.shape == (BATCH, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (BATCH, 10)
        assert set(np.unique(labels)) <= {0.0, 1.0}
        np.testing.assert_array_equal(labels.sum(1), 1.0)
        index = images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(labels.argmax(1), y[index])  # labels follow their images
        np.testing.assert_array_equal(images, x[index])
    with pytest.raises(IndexError):
        feed[len(feed)]


def test_device_feed_epoch_visits_each_sample_at_most_once():
    x, y = indexed_data()
    feed = DeviceFeed(x, y, BATCH, seed=2)
    seen = epoch_indices(device_epoch(feed))
    assert len(seen) == len(feed) * BATCH == 96
    assert len(np.unique(seen)) == 96


def test_device_feed_reshuffles_each_epoch():
    x, y = indexed_data()
    feed = DeviceFeed(x, y, BATCH, seed=3)
    first = epoch_indices(device_epoch(feed))
    feed.on_epoch_begin()
    second = epoch_indices(device_epoch(feed))
    assert len(np.unique(second)) == 96
    assert not np.array_equal(first, second)


def test_device_feed_seed_is_reproducible():
    x, y = indexed_data()
    a = epoch_indices(device_epoch(DeviceFeed(x, y, BATCH, seed=4)))
    b = epoch_indices(device_epoch(DeviceFeed(x, y, BATCH, seed=4)))
    c = epoch_indices(device_epoch(DeviceFeed(x, y, BATCH, seed=5)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_device_feed_mixup_gives_float_images_and_soft_labels():
    x, y = indexed_data()
    feed = DeviceFeed(x, y, BATCH, seed=6, mixup_alpha=1.0)
    images, labels = (np_(t) for t in feed[0])
    assert images.shape == (BATCH, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (BATCH, 10)
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)
    assert np.all((labels >= 0) & (labels <= 1))
    assert (labels.max(1) < 1 - 1e-3).any(), "no sample was mixed"
    assert not np.array_equal(images, np.round(images))  # mixed, not original pixels


def test_device_feed_copies_repeat_each_sample():
    x, y = indexed_data()
    feed = DeviceFeed(x, y, BATCH, seed=7, copies=4)
    assert len(feed) == N // BATCH  # copies do not change the epoch length
    images, labels = (np_(t) for t in feed[0])
    assert images.shape == (4 * BATCH, 32, 32, 3) and labels.shape == (4 * BATCH, 10)
    for i in range(BATCH):
        group = slice(4 * i, 4 * i + 4)
        assert (labels[group] == labels[4 * i]).all()
        assert (images[group] == images[4 * i]).all()
    assert len(np.unique(images[::4, 0, 0, 0])) == BATCH


def test_device_feed_batch_larger_than_data_raises():
    x, y = indexed_data(10)
    with pytest.raises(ValueError, match="batch size 11 does not fit 10 training images"):
        DeviceFeed(x, y, 11)
    with pytest.raises(ValueError, match="batch size 0"):
        DeviceFeed(x, y, 0)


# --- tf.data feed ------------------------------------------------------------------------------


@needs_tf
def test_tfdata_feed_elements_and_epoch_coverage():
    x, y = indexed_data()
    batches = tf_epoch(tfdata_feed(x, y, BATCH, seed=0))
    assert len(batches) == N // BATCH
    for images, labels in batches:
        assert images.shape == (BATCH, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (BATCH, 10)
        np.testing.assert_array_equal(labels.sum(1), 1.0)
        index = images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(labels.argmax(1), y[index])
        np.testing.assert_array_equal(images, x[index])
    seen = epoch_indices(batches)
    assert len(seen) == len(np.unique(seen)) == 96


@needs_tf
def test_tfdata_feed_applies_host_augment():
    x, y = indexed_data()
    batches = tf_epoch(tfdata_feed(x, y, BATCH, seed=1, host_augment=lambda b: 255 - b))
    for images, labels in batches:
        index = 255 - images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(images, 255 - x[index])
        np.testing.assert_array_equal(labels.argmax(1), y[index])


@needs_tf
@pytest.mark.parametrize(
    "bad",
    [lambda b: b[:, :16], lambda b: b.astype(np.float32)],
    ids=["wrong_shape", "wrong_dtype"],
)
def test_tfdata_feed_rejects_bad_host_augment(bad):
    x, y = indexed_data(20)
    with pytest.raises(Exception, match="host_augment must return"):
        tf_epoch(tfdata_feed(x, y, 4, host_augment=bad))


@needs_tf
@pytest.mark.skipif(BACKEND == "tensorflow", reason="the restriction applies off the TensorFlow backend")
@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.5}, {"copies": 2}])
def test_tfdata_feed_label_mixing_needs_tensorflow_backend(kwargs):
    x, y = indexed_data(20)
    with pytest.raises(ValueError, match="--pipeline device"):
        tfdata_feed(x, y, 4, **kwargs)


@needs_tf
@pytest.mark.skipif(BACKEND != "tensorflow", reason="mixup in tf.data needs the TensorFlow backend")
def test_tfdata_feed_mixup_on_tensorflow_backend():
    x, y = indexed_data()
    batches = tf_epoch(tfdata_feed(x, y, BATCH, seed=2, mixup_alpha=1.0))
    assert len(batches) == N // BATCH
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (BATCH, 32, 32, 3)
    np.testing.assert_allclose(np.concatenate([b[1] for b in batches]).sum(1), 1.0, atol=1e-5)
    assert (np.concatenate([b[1] for b in batches]).max(1) < 1 - 1e-3).any()


@needs_tf
@pytest.mark.skipif(BACKEND != "tensorflow", reason="copies in tf.data need the TensorFlow backend")
def test_tfdata_feed_copies_on_tensorflow_backend():
    x, y = indexed_data()
    images, labels = tf_epoch(tfdata_feed(x, y, BATCH, seed=3, copies=2))[0]
    assert images.shape == (2 * BATCH, 32, 32, 3) and labels.shape == (2 * BATCH, 10)
    np.testing.assert_array_equal(images[0::2], images[1::2])
    np.testing.assert_array_equal(labels[0::2], labels[1::2])


@needs_tf
def test_tfdata_feed_batch_larger_than_data_raises():
    x, y = indexed_data(10)
    with pytest.raises(ValueError, match="does not fit"):
        tfdata_feed(x, y, 11)


# --- make_feed ------------------------------------------------------------------------------------


def test_make_feed_auto_picks_the_backend_default():
    x, y = indexed_data(20)
    feed = make_feed("auto", x, y, 4)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        assert isinstance(feed, tf.data.Dataset)
    else:
        assert isinstance(feed, DeviceFeed)


def test_make_feed_by_name():
    x, y = indexed_data(20)
    assert isinstance(make_feed("device", x, y, 4, seed=1), DeviceFeed)
    if HAS_TF:
        import tensorflow as tf

        assert isinstance(make_feed("tfdata", x, y, 4), tf.data.Dataset)


def test_make_feed_unknown_name_raises():
    x, y = indexed_data(20)
    with pytest.raises(ValueError, match="pipeline must be one of"):
        make_feed("torch", x, y, 4)


def test_make_feed_host_augment_with_device_raises():
    x, y = indexed_data(20)
    with pytest.raises(ValueError, match="host_augment"):
        make_feed("device", x, y, 4, host_augment=lambda b: b)


# --- training through a feed ----------------------------------------------------------------------


def test_fit_with_device_feed_lowers_the_loss():
    keras.utils.set_random_seed(0)
    x, y = synthetic_arrays(160, seed=0)
    inputs = keras.Input((32, 32, 3))
    h = BatchAugmentation(crop_padding=4, flip=True, seed=0)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    one_hot = np.eye(10, dtype="float32")[y]
    start = model.evaluate(x, one_hot, batch_size=160, verbose=0)
    feed = DeviceFeed(x, y, batch_size=32, seed=0)
    history = model.fit(feed, epochs=4, shuffle=False, verbose=0)
    end = model.evaluate(x, one_hot, batch_size=160, verbose=0)
    assert len(history.history["loss"]) == 4
    assert end < 0.5 * start, (start, end, history.history["loss"])


def test_device_feed_gives_each_host_of_a_multi_host_run_its_own_rows():
    from pipelines.feeds import DeviceFeed

    images = np.zeros((64, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(64)  # each image carries its index
    labels = np.arange(64) % 10
    whole = DeviceFeed(images, labels, batch_size=16, seed=5)
    hosts = [DeviceFeed(images, labels, batch_size=16, seed=5, process=(i, 2)) for i in range(2)]
    for batch in range(len(whole)):
        ids = [ops.convert_to_numpy(feed[batch][0])[:, 0, 0, 0] for feed in hosts]
        assert len(ids[0]) == len(ids[1]) == 8
        assert not set(ids[0]) & set(ids[1])
        assert sorted([*ids[0], *ids[1]]) == sorted(ops.convert_to_numpy(whole[batch][0])[:, 0, 0, 0])


# --- alternating flip and the scanned loop's feed ---------------------------------------


def flipped_per_sample(feed, images):
    """Sample index -> whether this epoch's batches show it mirrored."""
    seen = {}
    for i in range(len(feed)):
        x, _ = (np_(t) for t in feed[i])
        for image in x:
            index = int(image[0, 0, 0]) if np.array_equal(image, images[int(image[0, 0, 0])]) else None
            if index is None:  # mirrored: the index pixel moved to the right edge
                index = int(image[0, -1, 0])
                np.testing.assert_array_equal(image, images[index][:, ::-1])
            seen[index] = index is not None and not np.array_equal(image, images[index])
    return seen


def test_alternating_flip_shows_every_sample_both_ways_over_two_epochs():
    images, labels = indexed_data()
    images[:, 0, -1, 0] = np.arange(N)  # the index also at the right edge, to find mirrored images
    feed = DeviceFeed(images, labels, BATCH, seed=3, alternating_flip=True)
    first = flipped_per_sample(feed, images)
    feed.on_epoch_begin()
    second = flipped_per_sample(feed, images)
    common = set(first) & set(second)
    assert len(common) > N // 2  # (the partial batch drops a few samples each epoch)
    assert all(first[i] != second[i] for i in common)
    assert 0.3 < np.mean(list(first.values())) < 0.7


def test_scan_feed_items_are_the_device_feeds_batches_as_indices():
    from pipelines.feeds import ScanFeed, gather_batch

    images, labels = indexed_data()
    device = DeviceFeed(images, labels, BATCH, seed=5, alternating_flip=True)
    scan = ScanFeed(images, labels, BATCH, seed=5, alternating_flip=True, steps_per_call=4)
    assert len(device) == 6 and len(scan) == 2  # 6 batches in calls of 4 and 2
    indices, bits, epoch = scan[1]
    assert np_(indices).shape == (2, BATCH) and np_(bits).dtype == bool and int(epoch) == 0
    for step in range(2):
        x, y = gather_batch(scan.images, scan.labels, indices[step], 10)
        x = alternating_flip(x, bits[step], epoch)
        expected_x, expected_y = device[4 + step]
        np.testing.assert_array_equal(np_(x), np_(expected_x))
        np.testing.assert_array_equal(np_(y), np_(expected_y))
    example = [np_(t) for t in scan.example()]
    assert example[0].shape == (4, BATCH) and not any(part.any() for part in example)


def test_scan_feed_and_alternating_flip_refuse_what_they_cannot_do():
    from pipelines.feeds import ScanFeed

    images, labels = indexed_data()
    with pytest.raises(ValueError, match="mixup"):
        ScanFeed(images, labels, BATCH, mixup_alpha=1.0)
    with pytest.raises(ValueError, match="needs the device feed"):
        make_feed("tfdata", images, labels, BATCH, scan=True)
    with pytest.raises(ValueError, match="alternating flip needs the device feed"):
        make_feed("tfdata", images, labels, BATCH, alternating_flip=True)
    assert isinstance(make_feed("device", images, labels, BATCH, scan=True), ScanFeed)


def test_device_feed_example_matches_an_item_without_drawing_random_numbers():
    images, labels = indexed_data()
    feed = DeviceFeed(images, labels, BATCH, seed=1, mixup_alpha=0.4, copies=2)
    state = np_(feed._seed_generator.state).copy()
    example = feed.example()
    np.testing.assert_array_equal(np_(feed._seed_generator.state), state)
    for a, b in zip(example, feed[0]):
        assert tuple(a.shape) == tuple(b.shape) and str(a.dtype) == str(b.dtype)
