"""Tests for davidnet.models: parameter counts, structure, width scaling, mixed precision, saving."""

import keras
import numpy as np
import pytest

from davidnet.models import DAVIDNET_STAGES, MODELS, davidnet, resnet9, resnet_cifar, scaled
from pipelines.augment import BatchAugmentation
from tests.conftest import host_kernel_init


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype("uint8")


@pytest.fixture(scope="module", autouse=True)
def host_init():
    """These tests are about the architectures: kernels drawn on the host (conftest)."""
    with host_kernel_init():
        yield


# Built once per module and never trained.
@pytest.fixture(scope="module")
def full_davidnet():
    return davidnet()


@pytest.fixture(scope="module")
def full_resnet44():
    return resnet_cifar(44)


@pytest.fixture(scope="module")
def small_davidnet():
    return davidnet(width=0.25)


@pytest.fixture(scope="module")
def small_resnet20():
    return resnet_cifar(20, width=0.5)


# --- parameter counts ------------------------------------------------------------------


def test_davidnet_parameter_count(full_davidnet):
    assert trainable_params(full_davidnet) == 6_573_120


def test_resnet44_parameter_count(full_resnet44):
    assert trainable_params(full_resnet44) == 658_586


def test_models_registry():
    assert MODELS == {"davidnet": davidnet, "resnet9": resnet9, "resnet44": resnet_cifar}


# --- width ---------------------------------------------------------------------------------


def test_scaled():
    assert scaled(64, 1.0) == 64
    assert scaled(64, 0.25) == 16
    assert scaled(512, 0.125) == 64
    assert scaled(16, 0.01) == 1  # never zero channels


def conv_filters(model):
    return {layer.name: layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_davidnet_channels_follow_scaled(width, full_davidnet, small_davidnet):
    model = full_davidnet if width == 1.0 else small_davidnet
    filters = conv_filters(model)
    expected = {}
    for stage, (channels, _, residual) in DAVIDNET_STAGES.items():
        expected[f"{stage}_conv"] = scaled(channels, width)
        if residual:
            expected[f"{stage}_res1_conv"] = expected[f"{stage}_res2_conv"] = scaled(channels, width)
    assert filters == expected
    assert model.get_layer("linear").kernel.shape == (scaled(512, width), 10)


def test_davidnet_width_gives_fewer_parameters(full_davidnet, small_davidnet):
    small = trainable_params(small_davidnet)
    assert 0 < small < trainable_params(full_davidnet) / 10  # about width^2 of the full model


def test_resnet_channels_follow_scaled(full_resnet44, small_resnet20):
    for model, width, blocks in ((full_resnet44, 1.0, 7), (small_resnet20, 0.5, 3)):
        filters = conv_filters(model)
        assert filters.pop("stem_conv") == scaled(16, width)
        assert len(filters) == 3 * blocks * 2
        for stage, channels in enumerate((16, 32, 64)):
            for block in range(blocks):
                for part in "ab":
                    assert filters[f"stage{stage + 1}_block{block + 1}_{part}_conv"] == scaled(channels, width)
        assert model.get_layer("logits").kernel.shape == (scaled(64, width), 10)
    assert trainable_params(small_resnet20) < trainable_params(full_resnet44)


def test_resnet_downsampling_strides(full_resnet44):
    strides = {layer.name: layer.strides for layer in full_resnet44.layers if isinstance(layer, keras.layers.Conv2D)}
    assert [name for name, s in strides.items() if s != (1, 1)] == ["stage2_block1_a_conv", "stage3_block1_a_conv"]
    assert all(s in ((1, 1), (2, 2)) for s in strides.values())


# --- structure -------------------------------------------------------------------------------


def test_davidnet_stage_layers(small_davidnet):
    names = {layer.name for layer in small_davidnet.layers}
    assert list(DAVIDNET_STAGES) == ["prep", "layer1", "layer2", "layer3"]
    assert DAVIDNET_STAGES["prep"][1:] == (False, False)
    assert DAVIDNET_STAGES["layer1"][1:] == (True, True)
    assert DAVIDNET_STAGES["layer2"][1:] == (True, False)
    assert DAVIDNET_STAGES["layer3"][1:] == (True, True)
    for stage, (_, pool, residual) in DAVIDNET_STAGES.items():
        assert {f"{stage}_conv", f"{stage}_bn", f"{stage}_relu"} <= names
        assert (f"{stage}_pool" in names) == pool
        for layer in ("res1_conv", "res1_bn", "res2_conv", "res2_bn", "add"):
            assert (f"{stage}_{layer}" in names) == residual, f"{stage}_{layer}"
    adds = [layer.name for layer in small_davidnet.layers if isinstance(layer, keras.layers.Add)]
    assert adds == ["layer1_add", "layer3_add"]
    assert isinstance(small_davidnet.get_layer("augment"), BatchAugmentation)
    assert isinstance(small_davidnet.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert small_davidnet.get_layer("linear").use_bias is False
    assert small_davidnet.get_layer("logits").scale == 0.125
    bn = small_davidnet.get_layer("prep_bn")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)


def test_davidnet_passes_augmentation_options():
    model = davidnet(width=0.25, augmentation={"cutout_size": 8, "crop_mode": "constant", "seed": 3})
    augment = model.get_layer("augment")
    assert (augment.cutout_size, augment.crop_mode, augment.seed) == (8, "constant", 3)


def test_resnet44_has_21_residual_adds(full_resnet44):
    adds = [layer for layer in full_resnet44.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 21


def test_model_names(full_davidnet, full_resnet44, small_resnet20):
    assert full_davidnet.name == "davidnet"
    assert full_resnet44.name == "resnet44"
    assert small_resnet20.name == "resnet20"
    assert resnet_cifar(20, width=0.5, name="custom").name == "custom"


@pytest.mark.parametrize("depth", [45, 21, 10])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n"):
        resnet_cifar(depth)


# --- outputs ----------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_logits_shape_and_dtype(small_davidnet, small_resnet20):
    x = images(2)
    for model in (small_davidnet, small_resnet20):
        logits = model.predict(x, verbose=0)
        assert logits.shape == (2, 10) and logits.dtype == np.float32
        assert np.all(np.isfinite(logits)) and np.ptp(logits) > 0


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_logits_float32_under_mixed_bfloat16(mixed_bfloat16):
    model = davidnet(width=0.25)
    assert model.get_layer("prep_conv").compute_dtype == "bfloat16"
    logits = model.predict(images(2), verbose=0)
    assert logits.shape == (2, 10)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits)) and np.ptp(logits) > 0
    # The symbolic outputs say the same for both models.
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
    resnet = resnet_cifar(20, width=0.5)
    assert keras.backend.standardize_dtype(resnet.outputs[0].dtype) == "float32"


def test_policy_restored_after_mixed_precision_test():
    assert keras.mixed_precision.global_policy().name == "float32"


# --- saving --------------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of XLA compilation on JAX
@pytest.mark.parametrize("which", ["davidnet", "resnet20"])
def test_saved_model_reloads_with_same_logits(which, tmp_path, small_davidnet, small_resnet20):
    model = small_davidnet if which == "davidnet" else small_resnet20
    x = images(2, seed=1)
    expected = model.predict(x, verbose=0)
    path = tmp_path / f"{which}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.get_layer("augment"), BatchAugmentation)
    assert trainable_params(restored) == trainable_params(model)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_ablation_options_change_the_network(small_davidnet):
    # At the widths of the module's small models: on JAX the variables of the shapes
    # they have already are created (and their losses computed) without new compiles.
    plain = small_davidnet
    no_bn = davidnet(width=0.25, batch_norm=False)
    assert not [l for l in no_bn.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.use_bias for l in no_bn.layers if isinstance(l, keras.layers.Conv2D))
    assert len([l for l in plain.layers if isinstance(l, keras.layers.BatchNormalization)]) == 8
    regularised = davidnet(width=0.25, l1=1e-5, l2=1e-4, dropout=0.3)
    assert regularised.get_layer("dropout").rate == 0.3
    assert len(regularised.losses) == 9  # 8 convolutions and the classifier
    assert len(resnet_cifar(20, width=0.5, l2=1e-4).losses) == 20  # 19 convolutions and the classifier
