"""The references' weight initialisations, as Keras initializers.

Keras's layers start from Glorot uniform kernels and zero biases; the
reference code did not:

* PyTorch's ``nn.Conv2d`` and ``nn.Linear`` (cifar10-fast's DavidNet,
  airbench94_muon, the ResNet-9 tutorial) draw weights with
  ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  and biases from the same range (:func:`torch_default`, :func:`torch_bias`);
* Hoffer et al.'s ResNets (convNet.pytorch ``init_model``) draw conv weights
  from N(0, 2 / (k * k * out_channels)), He et al.'s init over the fan-out,
  not truncated (:func:`he_fan_out`);
* airbench94_muon rescales its head so that its weights have standard
  deviation 1 (:class:`Standardized`).

Each function returns a new initializer: Keras warns when one unseeded
initializer is called for several layers (they would all get the same draw).
"""

import math

import keras
from keras import ops


def torch_default():
    """PyTorch's default for conv and linear weights: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias(fan_in):
    """PyTorch's default for a conv or linear bias: U(+-1/sqrt(fan_in)), fan_in of the layer's kernel."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def he_fan_out():
    """He et al.'s normal init over the fan-out, untruncated (Hoffer et al.'s ``init_model``)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="davidnet")
class Standardized(keras.initializers.Initializer):
    """Draws from `base`, then divides by the draw's standard deviation (unbiased, as ``torch.std``).

    airbench94_muon's head: ``w *= 1 / w.std()`` after PyTorch's default init.

    Args:
        base: initializer (or its name or config) to draw from.

    Example:
    ```python
    head = keras.layers.Dense(10, use_bias=False, kernel_initializer=Standardized(torch_default()))
    ```
    """

    def __init__(self, base="glorot_uniform"):
        self.base = keras.initializers.get(base)

    def __call__(self, shape, dtype=None):
        drawn = ops.cast(self.base(shape, dtype="float32"), "float32")
        count = math.prod(shape)
        std = ops.sqrt(ops.sum(ops.square(drawn - ops.mean(drawn))) / max(count - 1, 1))
        return ops.cast(drawn / std, dtype or keras.backend.floatx())

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base)}
