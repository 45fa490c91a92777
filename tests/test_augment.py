"""Tests for pipelines.augment: each batch op against NumPy, seeds, and BatchAugmentation in a model."""

import keras
import numpy as np
import pytest
from keras import ops

from pipelines import augment
from pipelines.augment import BatchAugmentation


def np_(x):
    return ops.convert_to_numpy(x)


def images(n, seed=0, low=1.0, high=255.0):
    """Float images with all values in [low, high): no two windows or mirrors coincide."""
    return np.random.default_rng(seed).uniform(low, high, (n, 32, 32, 3)).astype("float32")


def crop_offsets(inputs, outputs, padding=4, mode="reflect"):
    """For each output image, the (dy, dx) of the window of the padded input it equals, or None."""
    np_mode = "reflect" if mode == "reflect" else "constant"
    found = []
    for image, out in zip(inputs, outputs):
        padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=np_mode)
        hits = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(padded[dy : dy + 32, dx : dx + 32], out)
        ]
        found.append(hits[0] if len(hits) == 1 else None)
    return found


# --- normalize ---------------------------------------------------------------------


def test_normalize_matches_numpy_per_channel():
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    out = np_(augment.normalize(x))
    mean = np.array(augment.CIFAR10_MEAN, np.float32)
    std = np.array(augment.CIFAR10_STD, np.float32)
    expected = (x.astype(np.float32) - mean) / std
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_normalize_custom_stats_and_dtype():
    x = np.full((1, 2, 2, 3), 10, np.uint8)
    out = np_(augment.normalize(x, mean=(0.0, 5.0, 10.0), std=(2.0, 5.0, 1.0), dtype="float16"))
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out[0, 0, 0], [5.0, 1.0, 0.0])


# --- random_crop ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_random_crop_is_a_window_of_the_padded_image(mode):
    x = images(32, seed=2)
    out = np_(augment.random_crop(x, seed=3, padding=4, mode=mode))
    assert out.shape == x.shape
    offsets = crop_offsets(x, out, 4, mode)
    assert None not in offsets, f"images not a window of the {mode}-padded input: {offsets}"
    assert len(set(offsets)) > 1, "every image got the same offset"


def test_random_crop_constant_pads_with_zeros():
    x = images(32, seed=4)
    out = np_(augment.random_crop(x, seed=5, mode="constant"))
    offsets = crop_offsets(x, out, 4, "constant")
    # Off-centre crops bring in zero borders (the inputs have no zeros at all).
    shifted = [i for i, o in enumerate(offsets) if o != (4, 4)]
    assert shifted
    assert all((out[i] == 0).any() for i in shifted)


def test_random_crop_padding_zero_returns_input():
    x = images(2)
    out = augment.random_crop(x, seed=0, padding=0)
    np.testing.assert_array_equal(np_(out), x)


def test_random_crop_bad_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        augment.random_crop(images(1), seed=0, mode="wrap")


# --- random_flip ---------------------------------------------------------------------


def test_random_flip_is_identity_or_mirror_and_both_occur():
    x = images(64, seed=6)
    out = np_(augment.random_flip(x, seed=7))
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert same.any() and mirrored.any()


# --- cutout ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 5])
def test_cutout_zeros_one_square_inside_the_image(size):
    x = images(32, seed=8)  # all values >= 1: zeros come only from cutout
    out = np_(augment.cutout(x, seed=9, size=size))
    corners = []
    for image, result in zip(x, out):
        zero = result == 0
        # All channels of a pixel are cut together; nothing else changes.
        assert np.array_equal(zero.all(-1), zero.any(-1))
        mask = zero.all(-1)
        np.testing.assert_array_equal(result[~mask], image[~mask])
        ys, xs = np.nonzero(mask)
        assert mask.sum() == size * size
        assert ys.max() - ys.min() + 1 == size and xs.max() - xs.min() + 1 == size
        assert 0 <= ys.min() and ys.max() < 32 and 0 <= xs.min() and xs.max() < 32
        corners.append((ys.min(), xs.min()))
    assert len(set(corners)) > 1


def test_cutout_size_zero_returns_input():
    x = images(2)
    np.testing.assert_array_equal(np_(augment.cutout(x, seed=0, size=0)), x)


# --- mixup / mix ----------------------------------------------------------------------


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_mixup_mixes_images_and_labels_with_reversed_partner():
    x = np.random.default_rng(10).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    y = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
    mixed_x, mixed_y, lam = (np_(t) for t in augment.mixup(x, y, seed=11, alpha=0.4))
    assert lam.shape == (16,)
    assert np.all((lam >= 0) & (lam <= 1))
    assert len(np.unique(lam)) > 1  # one weight per pair
    assert mixed_x.dtype == np.float32
    xf = x.astype(np.float32)
    l4 = lam[:, None, None, None]
    np.testing.assert_allclose(mixed_x, l4 * xf + (1 - l4) * xf[::-1], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mixed_y, lam[:, None] * y + (1 - lam[:, None]) * y[::-1], atol=1e-6)
    np.testing.assert_allclose(mixed_y.sum(1), 1.0, atol=1e-6)


def test_mix_with_given_weights():
    x = np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 100.0)]).astype("float32")
    y = np.eye(2, dtype=np.float32)
    mixed_x, mixed_y = (np_(t) for t in augment.mix(x, y, np.array([0.25, 1.0], np.float32)))
    np.testing.assert_allclose(mixed_x[0], 75.0)
    np.testing.assert_allclose(mixed_x[1], 100.0)
    np.testing.assert_allclose(mixed_y, [[0.25, 0.75], [0.0, 1.0]])


# --- repeat_batch -----------------------------------------------------------------------


def test_repeat_batch_repeats_each_sample_consecutively():
    x = images(4, seed=12)
    y = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    rx, ry = (np_(t) for t in augment.repeat_batch(x, y, 3))
    assert rx.shape == (12, 32, 32, 3) and ry.shape == (12, 10)
    for i in range(12):
        np.testing.assert_array_equal(rx[i], x[i // 3])
        np.testing.assert_array_equal(ry[i], y[i // 3])


def test_repeat_batch_one_copy_unchanged():
    x, y = images(3), np.eye(3, dtype=np.float32)
    rx, ry = augment.repeat_batch(x, y, 1)
    np.testing.assert_array_equal(np_(rx), x)
    np.testing.assert_array_equal(np_(ry), y)


# --- seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        lambda x, s: augment.random_crop(x, s),
        lambda x, s: augment.random_crop(x, s, mode="constant"),
        lambda x, s: augment.random_flip(x, s),
        lambda x, s: augment.cutout(x, s),
        # 16 of them, as test_mixup_... and the feeds' mixup: on JAX the Beta draw is then compiled once.
        lambda x, s: augment.mixup(x[:16], np.eye(16, dtype="float32"), s)[0],
    ],
    ids=["crop_reflect", "crop_constant", "flip", "cutout", "mixup"],
)
def test_int_seed_is_reproducible(op):
    x = images(32, seed=13)  # the batch of the crop and cutout tests: on JAX their ops are compiled for it
    first, again, other = np_(op(x, 21)), np_(op(x, 21)), np_(op(x, 22))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --- BatchAugmentation -------------------------------------------------------------------------


def uint8_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype("uint8")


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_layer_inference_is_exactly_normalize():
    # 8 images in each of the layer's tests: on JAX its eager ops are compiled once per batch size.
    x = uint8_images(8, seed=14)
    layer = BatchAugmentation(crop_padding=4, flip=True, cutout_size=8, seed=0)
    expected = np_(augment.normalize(x))
    np.testing.assert_array_equal(np_(layer(x)), expected)
    np.testing.assert_array_equal(np_(layer(x, training=False)), expected)
    assert not np.array_equal(np_(layer(x, training=True)), expected)


def test_layer_training_crops_the_normalised_image():
    x = uint8_images(8, seed=15)
    layer = BatchAugmentation(crop_padding=4, crop_mode="reflect", flip=False, seed=1)
    out = np_(layer(x, training=True))
    offsets = crop_offsets(np_(augment.normalize(x)), out, 4, "reflect")
    assert None not in offsets


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_layer_same_seed_same_augmentation():
    x = uint8_images(8, seed=16)
    kwargs = dict(crop_padding=4, flip=True, cutout_size=8)
    a = np_(BatchAugmentation(seed=5, **kwargs)(x, training=True))
    b = np_(BatchAugmentation(seed=5, **kwargs)(x, training=True))
    c = np_(BatchAugmentation(seed=6, **kwargs)(x, training=True))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_layer_get_config_round_trip():
    layer = BatchAugmentation(crop_padding=2, crop_mode="constant", flip=False, cutout_size=6, seed=3, name="aug")
    config = layer.get_config()
    for key, value in dict(crop_padding=2, crop_mode="constant", flip=False, cutout_size=6, seed=3).items():
        assert config[key] == value
    clone = BatchAugmentation.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, BatchAugmentation)
    assert restored.get_config() == config


def test_layer_in_functional_model():
    x = uint8_images(8, seed=17)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, BatchAugmentation(cutout_size=8, seed=2)(inputs))
    expected = np_(augment.normalize(x))
    np.testing.assert_array_equal(np_(model(x, training=False)), expected)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(np_(model(x, training=True)), expected)


def test_layer_in_compiled_fit():
    rng = np.random.default_rng(18)
    x = rng.integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 16)]
    inputs = keras.Input((32, 32, 3))
    h = BatchAugmentation(crop_padding=4, flip=True, cutout_size=8, seed=0)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    before = model.get_weights()[0].copy()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert not np.allclose(model.get_weights()[0], before)
    # Still no augmentation at inference after training.
    h_model = keras.Model(inputs, model.layers[1].output)
    np.testing.assert_allclose(h_model.predict(x, verbose=0), np_(augment.normalize(x)), rtol=1e-6, atol=1e-6)


# --- random_crop with airbench's 2-pixel translate ---------------------------------------------------


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_random_crop_padding_two_reaches_all_25_offsets():
    x = images(400, seed=30)
    out = np_(augment.random_crop(x, seed=31, padding=2, mode="reflect"))
    offsets = crop_offsets(x, out, padding=2)
    assert None not in offsets
    assert set(offsets) == {(dy, dx) for dy in range(5) for dx in range(5)}


# --- flip_bits / alternating_flip ---------------------------------------------------------------------


def test_flip_bits_seeded_booleans():
    bits = augment.flip_bits(1000, seed=0)
    assert bits.dtype == np.bool_ and bits.shape == (1000,)
    np.testing.assert_array_equal(bits, augment.flip_bits(1000, seed=0))
    assert not np.array_equal(bits, augment.flip_bits(1000, seed=1))
    assert 450 < bits.sum() < 550


def test_alternating_flip_each_orientation_once_per_pair_of_epochs():
    x = images(64, seed=32)
    bits = augment.flip_bits(64, seed=33)
    mirrored = x[:, :, ::-1]
    seen = []
    for epoch in (0, 1):
        out = np_(augment.alternating_flip(x, bits, epoch))
        is_x = np.all(out == x, axis=(1, 2, 3))
        is_mirror = np.all(out == mirrored, axis=(1, 2, 3))
        assert np.all(is_x ^ is_mirror)
        seen.append(is_mirror)
    # Epoch 0 flips exactly the images whose bit is set (about half), epoch 1 the others.
    np.testing.assert_array_equal(seen[0], bits)
    np.testing.assert_array_equal(seen[1], ~bits)
    assert 20 < seen[0].sum() < 44


def test_alternating_flip_epoch_parity_and_input_types():
    x = images(16, seed=34)
    bits = augment.flip_bits(16, seed=35)
    even = np_(augment.alternating_flip(x, bits, 0))
    odd = np_(augment.alternating_flip(x, bits, 1))
    np.testing.assert_array_equal(np_(augment.alternating_flip(x, bits, 6)), even)
    np.testing.assert_array_equal(np_(augment.alternating_flip(x, bits, ops.convert_to_tensor(7))), odd)
    np.testing.assert_array_equal(np_(augment.alternating_flip(x, bits.astype("int32"), 0)), even)
    u8 = x.astype("uint8")
    assert np_(augment.alternating_flip(u8, bits, 1)).dtype == np.uint8


def test_alternating_flip_bad_bits_shape_raises():
    with pytest.raises(ValueError, match="flip_bits"):
        augment.alternating_flip(images(4), np.zeros(3, bool), 0)
    with pytest.raises(ValueError, match="flip_bits"):
        augment.alternating_flip(images(4), np.zeros((4, 1), bool), 0)
