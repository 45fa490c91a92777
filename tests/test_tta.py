"""Tests for davidnet.tta: views, weights per level against a NumPy reference, and evaluate_tta."""

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.fastnet import fastnet
from davidnet.tta import VIEW_WEIGHTS, TTAMean, TTAViews, evaluate_tta, tta_mean, tta_model, tta_views
from tests.conftest import host_kernel_init

SIZE, CLASSES = 8, 4


def uint8_images(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


@pytest.fixture(scope="module")
def weights():
    """A linear map from every pixel to the logits: mirrors and shifts change them."""
    return np.random.default_rng(1).normal(size=(SIZE * SIZE * 3, CLASSES)).astype("float32") / 100


@pytest.fixture(scope="module")
def linear_model(weights):
    # Its kernel is `weights`, set below: the initial draw is made on the host (conftest),
    # not compiled on JAX for nothing.
    with host_kernel_init():
        inputs = keras.Input((SIZE, SIZE, 3), name="images")
        x = keras.layers.Flatten()(inputs)
        outputs = keras.layers.Dense(CLASSES, use_bias=False, name="linear")(x)
        model = keras.Model(inputs, outputs, name="linear")
    model.get_layer("linear").kernel.assign(weights)
    return model


# NumPy reference, written as airbench's infer_basic / infer_mirror / infer_mirror_translate.


def np_translations(images):
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = images.shape[1:3]
    return padded[:, :h, :w], padded[:, 2 : h + 2, 2 : w + 2]


def reference_logits(net, images, level):
    def basic(x):
        return net(x)

    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x[:, :, ::-1])

    def mirror_translate(x):
        return 0.5 * mirror(x) + 0.5 * np.mean([mirror(t) for t in np_translations(x)], axis=0)

    return (basic, mirror, mirror_translate)[level](images)


def linear_net(weights):
    return lambda x: x.reshape(len(x), -1).astype(np.float64) @ weights.astype(np.float64)


# --- views and weights ------------------------------------------------------------------------


def test_views_order_against_numpy():
    x = uint8_images(3, seed=2).astype("float32")
    left, right = np_translations(x)
    expected = {
        0: [x],
        1: [x, x[:, :, ::-1]],
        2: [x, x[:, :, ::-1], left, left[:, :, ::-1], right, right[:, :, ::-1]],
    }
    for level, views in expected.items():
        np.testing.assert_array_equal(ops.convert_to_numpy(tta_views(x, level)), np.concatenate(views))


def test_view_weights_sum_to_one_and_mean_reshapes_by_view():
    for level, w in VIEW_WEIGHTS.items():
        assert sum(w) == 1.0
    logits = np.arange(6 * 2 * 3, dtype="float32").reshape(12, 3)  # 6 views of 2 images
    expected = sum(wk * logits[2 * k : 2 * k + 2] for k, wk in enumerate(VIEW_WEIGHTS[2]))
    np.testing.assert_allclose(ops.convert_to_numpy(tta_mean(logits, 2)), expected, rtol=1e-6)


# --- tta_model against the reference -----------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 2])
def test_tta_model_matches_reference(level, linear_model, weights):
    x = uint8_images(5, seed=3)
    got = tta_model(linear_model, level).predict(x, verbose=0)
    assert got.shape == (5, CLASSES) and got.dtype == np.float32
    expected = reference_logits(linear_net(weights), x.astype(np.float32), level)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_levels_differ_on_this_model(weights):
    # Otherwise the reference test above could not tell the levels apart.
    x = uint8_images(5, seed=3).astype(np.float32)
    logits = [reference_logits(linear_net(weights), x, level) for level in (0, 1, 2)]
    assert not np.allclose(logits[0], logits[1], atol=1e-2)
    assert not np.allclose(logits[1], logits[2], atol=1e-2)


def test_level_zero_equals_predict(linear_model):
    x = uint8_images(4, seed=4)
    np.testing.assert_allclose(
        tta_model(linear_model, 0).predict(x, verbose=0), linear_model.predict(x, verbose=0), rtol=1e-6, atol=1e-7
    )


def test_tta_model_on_fastnet_with_uint8_images():
    # Kernels drawn with NumPy: on JAX each new shape would compile an initializer.
    with host_kernel_init():
        model = fastnet(widths=(4, 8, 8))
    x = uint8_images(2, size=32, seed=5)
    got = tta_model(model, 2).predict(x, verbose=0)
    assert model.name == "fastnet" and tta_model(model, 1).name == "fastnet_tta1"
    # The reference feeds the NumPy views (still uint8) to the model itself.
    expected = reference_logits(lambda v: model.predict(np.ascontiguousarray(v), verbose=0), x, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("level", [3, -1, "2", None])
def test_bad_level_raises(level, linear_model):
    with pytest.raises(ValueError, match="level"):
        tta_model(linear_model, level)
    with pytest.raises(ValueError, match="level"):
        tta_views(np.zeros((1, SIZE, SIZE, 3), "float32"), level)
    with pytest.raises(ValueError, match="level"):
        evaluate_tta(linear_model, uint8_images(2), np.zeros(2, int), level=level)


def test_layers_config_round_trip():
    for cls in (TTAViews, TTAMean):
        layer = cls(1, name="x")
        restored = cls.from_config(layer.get_config())
        assert restored.level == 1 and restored.dtype_policy.name == "float32"


# --- evaluate_tta -------------------------------------------------------------------------------------------


def test_evaluate_tta_accuracy_with_int_and_one_hot_labels(linear_model, weights):
    x = uint8_images(16, seed=6)
    predicted = reference_logits(linear_net(weights), x.astype(np.float32), 2).argmax(axis=1)
    labels = predicted.copy()
    labels[:5] = (labels[:5] + 1) % CLASSES  # 5 of 16 wrong on purpose
    assert evaluate_tta(linear_model, x, labels, level=2, batch_size=8) == pytest.approx(11 / 16)
    one_hot = np.eye(CLASSES, dtype="float32")[labels]
    assert evaluate_tta(linear_model, x, one_hot, level=2, batch_size=16) == pytest.approx(11 / 16)


def test_evaluate_tta_label_shape_mismatch_raises(linear_model):
    with pytest.raises(ValueError, match="labels"):
        evaluate_tta(linear_model, uint8_images(4), np.zeros(3, int))
