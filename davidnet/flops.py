"""FLOPs of a Keras model per image, from its layers' shapes: for TFLOP/s figures.

A FLOP here is one floating-point multiply or add, so a multiply-add counts 2
(the convention of MLPerf and of "TFLOP/s" on accelerator data sheets). Only
the layers that dominate a CNN are counted:

- convolutions (`Conv1D`, `Conv2D`, `Conv3D`, any strides, padding, dilation
  or groups): 2 x kernel size x input channels per group x output channels,
  at every output position (read from the layer's output shape, so strides
  and padding are accounted for without recomputing them);
- `Dense`: 2 x input features x units, at every position of its output
  (one position for the usual (batch, features) input).

Everything else is ignored: biases, batch norm, activations, pooling,
additions, augmentation and the loss are each a few FLOPs per activation,
under 1% of DavidNet's total, and data-movement-bound rather than
compute-bound. Transposed and depthwise/separable convolutions are not
counted either (none of our models has one). Nested models (a `keras.Model`
used as a layer) are counted through; other layers that hold layers inside
them are not looked into.

DavidNet at width 1 is 379,261,952 multiply-adds, 0.7585 GFLOP per image forward:
the prep convolution 3->64 at 32x32 (1.77M), three 3x3 convolutions of 75.5M
(layer1 64->128 at 32x32, layer2 128->256 at 16x16, layer3 256->512 at 8x8),
four residual convolutions of 37.7M (128->128 at 16x16, 512->512 at 4x4), and
the classifier 512x10.
"""

import math

import keras

COUNTED = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)

# Training costs about 3 forward passes: the forward pass, then in the backward
# pass one product for the gradient with respect to the activations and one
# for the gradient with respect to the weights, each as costly as the forward
# product (Kaplan et al. 2020, "Scaling laws", section 2.1; the usual
# convention of MFU figures).
TRAIN_TO_FORWARD = 3


def forward_flops(model):
    """FLOPs of one forward pass for one image (2 per multiply-add).

    Counts convolution and `Dense` layers only (see the module docstring).
    A layer or nested model called more than once counts once per call (its
    calls in other models built from the same layer objects included).

    Args:
        model: a built functional or `Sequential` Keras model with fixed
            input sizes (e.g. `keras.Input((32, 32, 3))`).

    Returns:
        An int: FLOPs per image.

    Raises:
        ValueError: the model is not built, or a counted layer has an
            unknown (None) size other than the batch.

    Example:
    ```python
    from davidnet.models import davidnet
    forward_flops(davidnet(width=1.0))  # 758_523_904: 0.7585 GFLOP
    ```
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer) * len(_output_shapes(layer))
        elif isinstance(layer, COUNTED):
            total += sum(_layer_flops(layer, shape) for shape in _output_shapes(layer))
    return total


def train_flops(model):
    """FLOPs of one training step for one image: 3 x `forward_flops(model)`.

    The usual convention: the backward pass costs twice the forward pass
    (gradients with respect to activations and to weights). The optimizer's
    update, a few FLOPs per weight per step, is not counted.

    Args:
        model: as for `forward_flops`.

    Returns:
        An int: FLOPs per image per training step.
    """
    return TRAIN_TO_FORWARD * forward_flops(model)


def _output_shapes(layer):
    """The output shape of each call of `layer` in the model graph."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        outputs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
        if outputs:
            shapes.append(tuple(outputs[0].shape))
    if not shapes:
        raise ValueError(
            f"forward_flops needs a built functional or Sequential model: layer {layer.name!r} "
            "has never been called on an input (build the model on keras.Input first)"
        )
    return shapes


def _layer_flops(layer, output_shape):
    # Output positions: every axis but the batch and the channels.
    if isinstance(layer, keras.layers.Dense):
        positions = output_shape[1:-1]
    elif layer.data_format == "channels_first":
        positions = output_shape[2:]
    else:
        positions = output_shape[1:-1]
    if any(size is None for size in positions):
        raise ValueError(
            f"forward_flops needs fixed input sizes: layer {layer.name!r} has output shape "
            f"{output_shape} (a None besides the batch)"
        )
    # The kernel is (*kernel_size, in_channels // groups, out_channels) for a
    # convolution and (in_features, units) for Dense: its size is the
    # multiply-adds of one output position.
    return 2 * math.prod(positions) * math.prod(layer.kernel.shape)
