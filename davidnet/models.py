"""Functional-API models: DavidNet (ResNet-9 of the DAWNBench entry) and ResNet-44.

Both take uint8 images in pixel units and start with `BatchAugmentation`, which
normalises always and augments only in training. Both end in float32 logits,
so they also work under the `mixed_bfloat16` policy.
"""

import keras
from keras import layers

from davidnet.initializers import he_fan_out, torch_bias, torch_default
from pipelines.augment import BatchAugmentation

# DavidNet as data, in the manner of cifar10-fast: each stage is
# (channels, max-pool after it, residual block after it). A variant is an edit here.
DAVIDNET_STAGES = {
    "prep": (64, False, False),
    "layer1": (128, True, True),
    "layer2": (256, True, False),
    "layer3": (512, True, True),
}

# PyTorch's BatchNorm defaults, which DavidNet was tuned with (torch momentum
# 0.1 is Keras momentum 0.9).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def scaled(channels, width):
    """Channels after the width multiplier: at least 1."""
    return max(1, int(round(channels * width)))


def _inputs(augmentation):
    inputs = keras.Input((32, 32, 3), name="images")
    return inputs, BatchAugmentation(**(augmentation or {}), name="augment")(inputs)


def conv_bn(
    x, channels, name, strides=1, relu=True, batch_norm=True, regularizer=None, init=torch_default,
    bias=False, zero_gamma=False,
):
    """3x3 convolution, batch norm, optionally ReLU.

    `init` makes the kernel's initializer (PyTorch's default unless given).
    `bias` gives the convolution a bias with PyTorch's default init (the
    ResNet-9 tutorial's convs have one); without batch norm (an ablation) it
    gets one anyway, the bias that batch norm would have replaced.
    `zero_gamma` starts the batch norm's scale at 0 (Hoffer et al.'s last
    batch norm of each residual block)."""
    fan_in = 9 * x.shape[-1]
    use_bias = bias or not batch_norm
    x = layers.Conv2D(
        channels, 3, strides=strides, padding="same", use_bias=use_bias, kernel_initializer=init(),
        bias_initializer=torch_bias(fan_in) if bias else "zeros", kernel_regularizer=regularizer, name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, gamma_initializer="zeros" if zero_gamma else "ones", name=f"{name}_bn"
        )(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def regularizer(l1=0.0, l2=0.0):
    """A Keras kernel regularizer for the ablations, or None."""
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def davidnet(
    width=1.0,
    num_classes=10,
    augmentation=None,
    logit_scale=0.125,
    batch_norm=True,
    l1=0.0,
    l2=0.0,
    dropout=0.0,
    conv_bias=False,
    head_bias=False,
    name="davidnet",
):
    """DavidNet / ResNet-9 exactly as in David Page's DAWNBench entry.

    prep conv 64; layer1 conv 128 + max-pool + residual(2 x conv-bn-relu 128);
    layer2 conv 256 + max-pool; layer3 conv 512 + max-pool + residual(512);
    global max-pool; linear without bias; logits scaled by 0.125.
    6,573,120 trainable parameters at width 1. Convolutions and the linear
    layer start from PyTorch's default init, as cifar10-fast's did.

    Args:
        width: channel multiplier (e.g. 0.25 for quick CPU runs).
        num_classes: outputs of the final linear layer.
        augmentation: keyword arguments for `BatchAugmentation`
            (crop_padding, crop_mode, flip, cutout_size, seed).
        logit_scale: multiplier on the logits (0.125 in the original).
        batch_norm: False removes every batch norm (the normalisation ablation).
        l1, l2: kernel regularisation of every convolution and the classifier.
        dropout: dropout rate before the classifier (0: none).
        conv_bias, head_bias: biases (PyTorch's default init) on the
            convolutions and the linear layer (the ResNet-9 tutorial's network:
            see `resnet9`).

    Example:
    ```python
    model = davidnet(width=0.25, augmentation={"cutout_size": 8})
    logits = model(np.zeros((2, 32, 32, 3), "uint8"))
    ```
    """
    inputs, x = _inputs(augmentation)
    conv = dict(batch_norm=batch_norm, regularizer=regularizer(l1, l2), bias=conv_bias)
    for stage, (channels, pool, residual) in DAVIDNET_STAGES.items():
        channels = scaled(channels, width)
        x = conv_bn(x, channels, stage, **conv)
        if pool:
            x = layers.MaxPooling2D(2, name=f"{stage}_pool")(x)
        if residual:
            branch = conv_bn(x, channels, f"{stage}_res1", **conv)
            branch = conv_bn(branch, channels, f"{stage}_res2", **conv)
            x = layers.Add(name=f"{stage}_add")([x, branch])
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(
        num_classes, use_bias=head_bias, kernel_initializer=torch_default(), bias_initializer=torch_bias(x.shape[-1]),
        kernel_regularizer=conv["regularizer"], name="linear",
    )(x)
    outputs = layers.Rescaling(logit_scale, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet9(dropout=0.2, name="resnet9", **kwargs):
    """The ResNet-9 of the Adam + one-cycle tutorial (Aakash N S, Jovian,
    "05b-cifar10-resnet"): DavidNet's layers with biases on every convolution
    and on the linear layer, dropout 0.2 before it, and unscaled logits.

    Args:
        dropout: the tutorial's 0.2.
        **kwargs: as for `davidnet`.
    """
    return davidnet(dropout=dropout, conv_bias=True, head_bias=True, logit_scale=1.0, name=name, **kwargs)


def _shortcut(x, channels, stride):
    """He et al.'s option A: identity, subsampled and zero-padded when the
    shape changes, so the shortcut has no parameters."""
    if stride == 1 and x.shape[-1] == channels:
        return x
    x = x[:, ::stride, ::stride, :]
    extra = channels - x.shape[-1]
    return layers.ZeroPadding3D(((0, 0), (0, 0), (extra // 2, extra - extra // 2)))(
        x[..., None]
    )[..., 0]


def resnet_cifar(
    depth=44,
    width=1.0,
    num_classes=10,
    augmentation=None,
    batch_norm=True,
    l1=0.0,
    l2=0.0,
    dropout=0.0,
    zero_init_residual=False,
    name=None,
):
    """The CIFAR ResNets of He et al. 2016, section 4.2 (ResNet-20/32/44/56/110).

    3 stages of n basic blocks (depth = 6n + 2) with 16/32/64 channels and
    identity shortcuts; global average pool; dense with bias. ResNet-44 has
    about 0.66M parameters. Convolutions start from He et al.'s normal init
    over the fan-out and the dense layer from N(0, 0.01) with a zero bias,
    as in Hoffer et al.'s code.

    Args:
        depth: 6n + 2.
        width: channel multiplier.
        num_classes: outputs of the classifier.
        augmentation: keyword arguments for `BatchAugmentation`.
        batch_norm, l1, l2, dropout: as for `davidnet`.
        zero_init_residual: start the last batch norm's scale of each block
            at 0, so each block starts as its shortcut (Hoffer et al.'s code).
    """
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110). Got: {depth}")
    blocks = (depth - 2) // 6
    inputs, x = _inputs(augmentation)
    conv = dict(batch_norm=batch_norm, regularizer=regularizer(l1, l2), init=he_fan_out)
    x = conv_bn(x, scaled(16, width), "stem", **conv)
    for stage, channels in enumerate((16, 32, 64)):
        channels = scaled(channels, width)
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            block_name = f"stage{stage + 1}_block{block + 1}"
            branch = conv_bn(x, channels, f"{block_name}_a", strides=stride, **conv)
            branch = conv_bn(branch, channels, f"{block_name}_b", relu=False, zero_gamma=zero_init_residual, **conv)
            x = layers.Add(name=f"{block_name}_add")([_shortcut(x, channels, stride), branch])
            x = layers.ReLU(name=f"{block_name}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(
        num_classes, dtype="float32", kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
        kernel_regularizer=conv["regularizer"], name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


MODELS = {"davidnet": davidnet, "resnet9": resnet9, "resnet44": resnet_cifar}
