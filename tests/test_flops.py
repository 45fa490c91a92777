"""davidnet.flops: FLOPs per image from the layers' shapes, against hand counts."""

import keras
import pytest
from keras import layers
from keras.src.backend.common import global_state

from davidnet.flops import forward_flops, train_flops
from davidnet.models import davidnet


@pytest.fixture(autouse=True)
def shapes_only():
    """Builds each test's models without drawing their initial weights: the
    count needs shapes only, and on JAX every new weight shape would compile a
    random-number program (seconds on 2 CPU cores for DavidNet at width 1).
    The deferred initialisations are then dropped, so no later code runs them."""
    # A copy: Keras appends to the list that is there, so restoring that same list
    # would keep them, and the next fit would initialise them all (on JAX, 7 to 15 s
    # of compiling DavidNet's width-1 initializers, in whichever test came next).
    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    with keras.StatelessScope(initialize_variables=False):
        yield
    global_state.set_global_attribute("uninitialized_variables", before)


def test_davidnet_at_width_1_is_0_7585_gflop_per_image():
    macs = (
        32 * 32 * 3 * 3 * 3 * 64  # prep: 3 -> 64 at 32x32
        + 32 * 32 * 9 * 64 * 128  # layer1: 64 -> 128 at 32x32, before its pool (75.5M)
        + 2 * 16 * 16 * 9 * 128 * 128  # layer1 residual: two 128 -> 128 at 16x16 (37.7M each)
        + 16 * 16 * 9 * 128 * 256  # layer2: 128 -> 256 at 16x16 (75.5M)
        + 8 * 8 * 9 * 256 * 512  # layer3: 256 -> 512 at 8x8 (75.5M)
        + 2 * 4 * 4 * 9 * 512 * 512  # layer3 residual: two 512 -> 512 at 4x4 (37.7M each)
        + 512 * 10  # the classifier
    )
    assert macs == 379_261_952
    model = davidnet(width=1.0)
    assert forward_flops(model) == 2 * macs  # 0.7585 GFLOP
    assert train_flops(model) == 3 * 2 * macs


def test_strides_padding_groups_and_dense_on_a_sequence_by_hand():
    inputs = keras.Input((9, 9, 4))
    x = layers.Conv2D(6, 3, strides=2, padding="valid")(inputs)  # 4x4 out, (9 - 3) // 2 + 1
    x = layers.BatchNormalization()(x)  # not counted
    x = layers.Conv2D(8, (3, 1), padding="same", groups=2)(x)  # 4x4 out, 3 in-channels per group
    x = layers.MaxPooling2D(2)(x)  # 2x2, not counted
    x = layers.Reshape((4, 8))(x)
    x = layers.Dense(5)(x)  # on each of 4 positions; the bias is not counted
    model = keras.Model(inputs, x)
    macs = 4 * 4 * (3 * 3 * 4) * 6 + 4 * 4 * (3 * 1 * 3) * 8 + 4 * 8 * 5
    assert forward_flops(model) == 2 * macs == 2 * 4768


def test_channels_first_nested_models_and_shared_layers_count_each_call():
    inner = keras.Sequential([keras.Input((3, 8, 8)), layers.Conv2D(2, 3, padding="same", data_format="channels_first")])
    assert forward_flops(inner) == 2 * 8 * 8 * 9 * 3 * 2
    shared = layers.Dense(4)
    inputs = keras.Input((3, 8, 8))
    features = layers.Flatten()(inner(inputs))  # 128 features
    outputs = shared(layers.Dense(4)(features)) + shared(layers.Dense(4)(features))
    model = keras.Model(inputs, outputs)
    macs = 8 * 8 * 9 * 3 * 2 + 2 * 128 * 4 + 2 * 4 * 4
    assert forward_flops(model) == 2 * macs


def test_an_unbuilt_model_or_unknown_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="never been called"):
        forward_flops(keras.Sequential([layers.Dense(3)]))
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="fixed input sizes"):
        forward_flops(model)
