"""Tests for davidnet.fastnet: the whitening kernel, the Dirac initializer and the airbench94 network."""

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.fastnet import BN_EPSILON, Dirac, WhiteningConv2D, fastnet, patch_whitening_kernel
from pipelines.augment import BatchAugmentation, normalize
from tests.conftest import host_kernel_init

TINY = (8, 16, 16)


def np_(x):
    return ops.convert_to_numpy(x)


def uint8_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype("uint8")


def correlated_images(n=6, size=8, seed=0):
    """Float images whose channels and neighbouring pixels are correlated and
    whose mean is not zero, so that whitening has something to undo."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3))
    x = x @ np.array([[1.0, 0.6, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 0.4]])
    x = x + 0.8 * np.roll(x, 1, axis=2) + 0.3
    return x.astype("float32")


def patches(x, p=2):
    """All p x p patches, rows in the (dy, dx, channel) order of a HWIO kernel; explicit loops."""
    h, w = x.shape[1] - p + 1, x.shape[2] - p + 1
    columns = [x[:, dy : dy + h, dx : dx + w, c] for dy in range(p) for dx in range(p) for c in range(x.shape[3])]
    return np.stack(columns, axis=-1).reshape(-1, len(columns)).astype(np.float64)


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def expected_trainable(widths, num_classes=10, whiten_kernel=False, bn_scale=False):
    """By hand: whitening bias (24) [+ kernel 2*2*3*24], per group two bias-free
    3x3 convs and two batch norms (beta [+ gamma]), the bias-free classifier."""
    count = 24 + (2 * 2 * 3 * 24 if whiten_kernel else 0)
    channels = 24
    for width in widths:
        count += 9 * channels * width + 9 * width * width
        count += 2 * width * (2 if bn_scale else 1)
        channels = width
    return count + channels * num_classes


@pytest.fixture(scope="module", autouse=True)
def host_init():
    """These tests are about the architecture: kernels drawn on the host (conftest)."""
    with host_kernel_init():
        yield


@pytest.fixture(scope="module")
def kernel():
    return patch_whitening_kernel(np_(normalize(uint8_images(8, seed=1))))


@pytest.fixture(scope="module")
def model(kernel):
    return fastnet(widths=TINY, whitening_kernel=kernel)


# --- patch_whitening_kernel ------------------------------------------------------------


def test_whitening_kernel_shape_dtype_and_negated_half():
    for p in (1, 2, 3):
        k = patch_whitening_kernel(correlated_images(), patch_size=p)
        d = p * p * 3
        assert k.shape == (p, p, 3, 2 * d) and k.dtype == np.float32
        np.testing.assert_array_equal(k[..., d:], -k[..., :d])


def test_whitening_kernel_as_keras_conv_whitens_the_patches():
    x = correlated_images()
    moment = patches(x).T @ patches(x) / len(patches(x))
    assert not np.allclose(moment, np.eye(12), atol=0.1)  # something to whiten
    k = patch_whitening_kernel(x, eps=0.0)
    # Through Keras's own convolution, so the HWIO layout is checked too.
    y = np_(ops.conv(x, k, padding="valid")).reshape(-1, 24).astype(np.float64)
    assert y.shape[0] == 6 * 7 * 7
    first = y[:, :12]
    np.testing.assert_allclose(first.T @ first / len(first), np.eye(12), atol=2e-3)
    np.testing.assert_allclose(y[:, 12:], -first, atol=1e-5)


def test_whitening_eps_damps_each_component_in_ascending_order():
    """airbench94_muon's init_whiten keeps eigh's order: the smallest component first."""
    x = correlated_images(seed=3)
    eigenvalues = np.sort(np.linalg.eigvalsh(patches(x).T @ patches(x) / len(patches(x))))
    eps = 0.5
    k = patch_whitening_kernel(x, eps=eps)
    y = patches(x) @ k.reshape(12, 24)[:, :12].astype(np.float64)
    np.testing.assert_allclose(y.T @ y / len(y), np.diag(eigenvalues / (eigenvalues + eps)), atol=1e-4)


def test_whitening_chunks_agree_with_one_pass():
    # 300 images: more than one chunk of 256 inside.
    x = np.random.default_rng(4).normal(size=(300, 4, 4, 3)).astype("float32")
    x[..., 1] += x[..., 0]
    p = patches(x)
    eigenvalues, eigenvectors = np.linalg.eigh(p.T @ p / len(p))
    expected = eigenvectors / np.sqrt(eigenvalues + 5e-4)
    got = patch_whitening_kernel(x).reshape(12, 24)[:, :12]
    # Eigenvectors are defined up to sign.
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.zeros((32, 32, 3), "float32"), {}, "NHWC"),
        (np.zeros((2, 32, 32, 3), "uint8"), {}, "normalised"),
        (np.zeros((2, 1, 1, 3), "float32"), {}, "patch"),
        (np.zeros((2, 8, 8, 3), "float32"), {"patch_size": 0}, "patch_size"),
        (np.zeros((2, 8, 8, 3), "float32"), {"patch_size": 2.0}, "patch_size"),
    ],
    ids=["3d", "uint8", "too_small", "zero_patch", "float_patch"],
)
def test_whitening_kernel_bad_input_raises(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        patch_whitening_kernel(images, **kwargs)


# --- Dirac ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cin, cout", [(3, 5), (5, 3), (4, 4)])
def test_dirac_conv_passes_input_channels_through(cin, cout):
    x = np.random.default_rng(5).normal(size=(2, 6, 6, cin)).astype("float32")
    conv = keras.layers.Conv2D(cout, 3, padding="same", use_bias=False, kernel_initializer=Dirac())
    y = np_(conv(x))
    n = min(cin, cout)
    np.testing.assert_allclose(y[..., :n], x[..., :n], atol=1e-6)
    k = np_(conv.kernel)
    identity = np.zeros((3, 3, cin, n), np.float32)
    identity[1, 1, np.arange(n), np.arange(n)] = 1
    np.testing.assert_array_equal(k[..., :n], identity)
    if cout > cin:
        # The other outputs keep the base draw (Glorot uniform), not the identity.
        rest = k[..., n:]
        assert np.all(rest != 0) and np.all(np.abs(rest) <= np.sqrt(6 / (9 * (cin + cout))))
        assert not np.allclose(y[..., n:], 0)


def test_dirac_config_round_trip_and_base():
    init = Dirac("he_uniform")
    assert init.get_config()["base"]["class_name"] == "HeUniform"
    restored = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(restored, Dirac) and isinstance(restored.base, keras.initializers.HeUniform)
    assert isinstance(Dirac().base, keras.initializers.GlorotUniform)
    with pytest.raises(ValueError, match="kh, kw, in, out"):
        Dirac()((3, 4))


# --- fastnet: structure and parameters --------------------------------------------------------


def test_fastnet_layer_sequence(model):
    groups = [
        f"block{g}_{layer}"
        for g in (1, 2, 3)
        for layer in ("conv1", "pool", "bn1", "act1", "conv2", "bn2", "act2")
    ]
    expected = ["images", "augment", "whiten", "whiten_act", *groups, "pool", "linear", "logits"]
    assert [layer.name for layer in model.layers] == expected
    assert isinstance(model.get_layer("augment"), BatchAugmentation)
    whiten = model.get_layer("whiten")
    assert (whiten.filters, whiten.kernel_size, whiten.padding, whiten.use_bias) == (24, (2, 2), "valid", True)
    for g, width in enumerate(TINY, start=1):
        for part in (1, 2):
            conv = model.get_layer(f"block{g}_conv{part}")
            assert (conv.filters, conv.kernel_size, conv.padding, conv.use_bias) == (width, (3, 3), "same", False)
            assert isinstance(conv.kernel_initializer, Dirac)
            bn = model.get_layer(f"block{g}_bn{part}")
            # airbench's BatchNorm(momentum=0.6): the running statistics keep 0.6.
            assert bn.momentum == pytest.approx(0.6) and bn.epsilon == BN_EPSILON
            assert bn.scale is False and bn.center is True
        assert model.get_layer(f"block{g}_pool").pool_size == (2, 2)
    activations = [layer.activation for layer in model.layers if isinstance(layer, keras.layers.Activation)]
    assert activations == [keras.activations.gelu] * 7
    assert model.get_layer("linear").use_bias is False and model.get_layer("linear").units == 10
    assert model.get_layer("logits").scale == pytest.approx(1 / TINY[2])  # airbench94_muon: head(x) / x.size(-1)
    # 32 -> 31 (2x2 valid) -> 15 -> 7 -> 3: global max equals airbench's MaxPool2d(3).
    assert tuple(model.get_layer("block3_act2").output.shape) == (None, 3, 3, TINY[2])


def test_fastnet_parameter_count(model):
    assert trainable_params(model) == expected_trainable(TINY)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 2 * 2 * 3 * 24 + 2 * 2 * sum(TINY)  # frozen whitening kernel, BN moving stats
    # At airbench's widths, the count the docstring states.
    assert expected_trainable((64, 256, 256)) == 1_971_352


def test_whitening_kernel_is_installed_and_frozen(model, kernel):
    whiten = model.get_layer("whiten")
    np.testing.assert_array_equal(np_(whiten.kernel), kernel)
    assert whiten.kernel.trainable is False
    trainable = {id(w) for w in model.trainable_weights}
    assert id(whiten.kernel) not in trainable and id(whiten.bias) in trainable
    # PyTorch's default Conv2d bias: U(+-1/sqrt(fan_in)), fan_in 2 * 2 * 3.
    bias = np_(whiten.bias)
    assert np.all(np.abs(bias) <= 1 / np.sqrt(12)) and np.std(bias) > 0.05


def test_fastnet_bad_arguments_raise(kernel):
    with pytest.raises(ValueError, match="3 conv groups"):
        fastnet(widths=(8, 16))
    with pytest.raises(ValueError, match="whitening_kernel"):
        fastnet(widths=TINY, whitening_kernel=kernel[..., :12])


# --- fastnet: outputs, precision, saving, training ---------------------------------------------


def test_fastnet_logits_shape_and_dtype(model):
    logits = model.predict(uint8_images(3, seed=2), verbose=0)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits)) and np.ptp(logits) > 0


def test_fastnet_under_mixed_bfloat16(model, kernel, mixed_bfloat16):
    mixed = fastnet(widths=TINY, whitening_kernel=kernel)
    assert mixed.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.outputs[0].dtype) == "float32"
    np.testing.assert_array_equal(np_(mixed.get_layer("whiten").kernel), kernel)
    mixed.set_weights(model.get_weights())
    x = uint8_images(3, seed=3)
    logits = mixed.predict(x, verbose=0)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    expected = model.predict(x, verbose=0)
    # Same weights, bfloat16 arithmetic: close, not equal.
    np.testing.assert_allclose(logits, expected, atol=0.1 * np.ptp(expected))


def test_policy_restored_after_mixed_precision_test():
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_fastnet_save_load_round_trip(model, tmp_path):
    x = uint8_images(2, seed=4)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "fastnet.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(restored.get_layer("whiten"), WhiteningConv2D)
    assert restored.get_layer("whiten").kernel.trainable is False
    assert isinstance(restored.get_layer("block2_conv1").kernel_initializer, Dirac)
    assert trainable_params(restored) == trainable_params(model)


def test_fastnet_training_step_keeps_the_whitening_kernel(kernel):
    # No augmentation: less to compile, and it is not what this test is about.
    net = fastnet(widths=TINY, whitening_kernel=kernel, augmentation={"crop_padding": 0, "flip": False})
    net.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    before = {w.path: np_(w).copy() for w in net.weights}
    y = np.eye(10, dtype="float32")[[0, 1, 2, 3]]
    history = net.fit(uint8_images(4, seed=5), y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = {w.path for w in net.weights if not np.array_equal(np_(w), before[w.path])}
    whiten = net.get_layer("whiten")
    assert whiten.kernel.path not in changed
    assert whiten.bias.path in changed
    assert net.get_layer("block1_bn1").beta.path in changed
    assert net.get_layer("block1_bn1").moving_mean.path in changed
    assert net.get_layer("block3_conv2").kernel.path in changed


def test_ablation_switches_change_what_they_should(model):
    ablated = fastnet(
        widths=TINY, activation="relu", frozen_bn_scale=False, dirac=False,
        augmentation={"crop_padding": 2, "flip": False}, name="ablated",
    )
    activations = [layer for layer in ablated.layers if isinstance(layer, keras.layers.Activation)]
    assert len(activations) == 7 and all(layer.activation is keras.activations.relu for layer in activations)
    bn = ablated.get_layer("block2_bn1")
    assert bn.scale is True and any(w is bn.gamma for w in ablated.trainable_weights)
    # Without a whitening kernel its kernel trains; gammas add one per BN channel.
    assert ablated.get_layer("whiten").kernel.trainable is True
    assert trainable_params(ablated) == expected_trainable(TINY, whiten_kernel=True, bn_scale=True)
    # Dirac: the first min(in, out) outputs are the identity; without it, random.
    n = 8  # block2_conv1: 8 in, 16 out
    identity = np.zeros((3, 3, n, n), np.float32)
    identity[1, 1, np.arange(n), np.arange(n)] = 1
    np.testing.assert_array_equal(np_(model.get_layer("block2_conv1").kernel)[..., :n], identity)
    assert np.all(np_(ablated.get_layer("block2_conv1").kernel)[..., :n] != identity)
    assert ablated.get_layer("augment").crop_padding == 2 and ablated.get_layer("augment").flip is False
    assert ablated.name == "ablated"
