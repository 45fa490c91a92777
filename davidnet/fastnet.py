"""The airbench94_muon network (Keller Jordan, arXiv 2404.00498) and its two initialisations.

Three pieces, each usable on its own (for instance with DavidNet):

- `patch_whitening_kernel`: the first convolution's kernel, computed once on
  the host from training images, so that its outputs are whitened patches
  (airbench's `init_whitening_conv`).
- `Dirac`: a kernel initializer that makes the first output channels of a
  convolution copy its input channels (airbench's `dirac_`), an implicit
  residual connection without an `Add`.
- `fastnet`: airbench94_muon's network in the functional API, taking uint8 images
  like `davidnet.models.davidnet` and ending in float32 logits.

Example:
```python
from pipelines.augment import normalize

kernel = patch_whitening_kernel(normalize(x_train[:5000]))
model = fastnet(whitening_kernel=kernel, augmentation={"crop_padding": 2})
```
"""

import keras
import numpy as np
from keras import layers

from davidnet.initializers import Standardized, torch_bias, torch_default
from pipelines.augment import BatchAugmentation

# airbench's BatchNorm(momentum=0.6) passes 1 - 0.6 = 0.4 to PyTorch as the
# weight of the new batch, so the running statistics keep 0.6 of their old
# value: Keras momentum (the weight of the running value) 0.6. Epsilon as
# airbench (Keras's batch norm computes in float32 also under mixed_bfloat16).
BN_MOMENTUM = 0.6
BN_EPSILON = 1e-12


def patch_whitening_kernel(images, patch_size=2, eps=5e-4):
    """Returns a Conv2D kernel that whitens the `patch_size` x `patch_size` patches of `images`.

    The patches' second-moment matrix (about zero, as in airbench: the images
    are normalised, so it is their covariance up to the small per-channel
    means) is eigen-decomposed; each eigenvector, scaled by
    1 / sqrt(eigenvalue + eps), becomes one filter, in `eigh`'s ascending
    order of eigenvalues (airbench94_muon's `init_whiten`; airbench94 put the
    largest first, which only permutes the channels).
    The same filters negated follow, so that a ReLU/GELU after the convolution
    keeps both signs of every component. Computed in float64 with NumPy, on the
    host, once per run.

    Args:
        images: normalised float images NHWC (see `pipelines.augment.normalize`),
            a few thousand training images; NumPy or a backend tensor.
        patch_size: side of the square patches (and of the kernel).
        eps: added to every eigenvalue, so that the near-zero components are
            not blown up.

    Returns:
        float32 array of shape (patch_size, patch_size, C, 2 * patch_size**2 * C),
        Keras's HWIO layout: the kernel of a "valid" `Conv2D` with that many filters.

    Example:
    ```python
    kernel = patch_whitening_kernel(normalize(x_train[:5000]))  # (2, 2, 3, 24)
    ```
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch NHWC (4 dimensions). Got shape: {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "images must be normalised floats (pipelines.augment.normalize), not raw pixels. "
            f"Got dtype: {images.dtype}"
        )
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int. Got: {patch_size!r}")
    if min(images.shape[1:3]) < patch_size or images.shape[0] == 0:
        raise ValueError(
            f"images must hold at least one {patch_size}x{patch_size} patch. Got shape: {images.shape}"
        )
    channels = images.shape[-1]
    dim = patch_size * patch_size * channels
    moment = np.zeros((dim, dim))
    count = 0
    # A chunk of images at a time: all patches of 5000 images at once would be
    # about 0.5 GB in float64.
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256].astype(np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(chunk, (patch_size, patch_size), axis=(1, 2))
        # (N, H', W', C, ph, pw) -> rows in the kernel's (ph, pw, C) order.
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim)
        moment += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(moment / count)
    filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)
    kernel = np.concatenate([filters, -filters], axis=1)
    return kernel.reshape(patch_size, patch_size, channels, 2 * dim).astype(np.float32)


@keras.saving.register_keras_serializable(package="davidnet")
class Dirac(keras.initializers.Initializer):
    """Convolution kernels whose first output channels pass their input channels through.

    Draws the kernel (kh, kw, in, out) from `base`, then sets output channels
    0 .. min(in, out) - 1 to the identity: output channel i has a 1 at the
    centre tap for input channel i and zeros elsewhere (airbench's
    `dirac_(w[:w.size(1)])`). With "same" padding such a channel starts as a
    copy of its input, an implicit residual connection; the other output
    channels keep the random draw.

    Args:
        base: initializer (or its name) for the other channels. Default
            "glorot_uniform", Keras's `Conv2D` default; `fastnet` passes
            PyTorch's default (`davidnet.initializers.torch_default`), as
            airbench's convs draw it before `dirac_`.

    Example:
    ```python
    conv = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, kernel_initializer=Dirac())
    ```
    """

    def __init__(self, base="glorot_uniform"):
        self.base = keras.initializers.get(base)

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(f"Dirac initializes conv kernels (kh, kw, in, out). Got shape: {tuple(shape)}")
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        identity = np.zeros(shape, np.float32)
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        replaced = np.zeros(shape, bool)
        replaced[..., :n] = True
        drawn = self.base(shape, dtype=dtype)
        return keras.ops.where(replaced, keras.ops.cast(identity, dtype), drawn)

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base)}


@keras.saving.register_keras_serializable(package="davidnet")
class WhiteningConv2D(layers.Conv2D):
    """A `Conv2D` whose kernel can be frozen while its bias trains.

    Keras's `trainable` is per layer; airbench fixes the whitening kernel and
    trains the bias, so the kernel variable is marked non-trainable at build
    time. The flag is in the config, so it survives `save`/`load_model`.

    Args:
        filters, kernel_size, **kwargs: as for `keras.layers.Conv2D`.
        kernel_trainable: False freezes the kernel.
    """

    def __init__(self, filters, kernel_size, kernel_trainable=False, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.kernel_trainable = kernel_trainable

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel.trainable = self.kernel_trainable

    def get_config(self):
        return {**super().get_config(), "kernel_trainable": self.kernel_trainable}


def fastnet(
    widths=(64, 256, 256),
    num_classes=10,
    augmentation=None,
    whitening_kernel=None,
    activation="gelu",
    batch_norm_momentum=BN_MOMENTUM,
    frozen_bn_scale=True,
    dirac=True,
    logit_scale=None,
    name="fastnet",
):
    """airbench94_muon's network (its `CifarNet`): a whitening conv and three conv groups.

    whiten: 2x2 "valid" conv with 2*2*2*3 = 24 filters and a bias -> activation;
    then per group: 3x3 conv -> 2x2 max-pool -> BN -> activation -> 3x3 conv ->
    BN -> activation (no conv biases); global max-pool (airbench's MaxPool2d(3)
    on the final 3x3 map); linear without bias; logits times `logit_scale`.
    Initialisation as airbench94_muon: PyTorch's defaults for the whitening
    conv (its bias U(+-1/sqrt(12))) and under `Dirac`; the head drawn with
    PyTorch's default and rescaled to standard deviation 1 (`Standardized`).
    1,971,352 trainable parameters at the default widths with a whitening
    kernel (its 288 weights then frozen).

    Args:
        widths: output channels of the three conv groups.
        num_classes: outputs of the final linear layer.
        augmentation: keyword arguments for `BatchAugmentation` (airbench:
            `{"crop_padding": 2, "flip": False}` with `alternating_flip` in the feed).
        whitening_kernel: from `patch_whitening_kernel`, shape (p, p, 3, 12p^2);
            installed and frozen (the bias still trains). None: a 2x2 kernel
            trained from Keras's default initialisation.
        activation: a Keras activation name ("gelu" as airbench, "relu").
        batch_norm_momentum: Keras momentum of every batch norm (0.6: the
            running statistics keep 0.6 of their value, as airbench's).
        frozen_bn_scale: True: batch norms have no trainable scale (gamma
            fixed at 1), only a bias, as in airbench.
        dirac: identity-initialise the 3x3 convs (`Dirac`); False: PyTorch's default.
        logit_scale: multiplier on the logits; None: 1 / widths[-1], as
            airbench94_muon divides the head's output by its input width.
        name: the model's name.

    Example:
    ```python
    model = fastnet(widths=(16, 64, 64), whitening_kernel=kernel)
    logits = model(np.zeros((2, 32, 32, 3), "uint8"))
    ```
    """
    if len(widths) != 3:
        raise ValueError(f"widths must give the channels of 3 conv groups. Got: {widths!r}")
    patch = 2
    if whitening_kernel is not None:
        whitening_kernel = np.asarray(whitening_kernel, np.float32)
        patch = whitening_kernel.shape[0] if whitening_kernel.ndim == 4 else 0
        expected = (patch, patch, 3, 2 * patch * patch * 3)
        if not patch or whitening_kernel.shape != expected:
            raise ValueError(
                f"whitening_kernel must have shape (p, p, 3, 12p^2) as from patch_whitening_kernel. "
                f"Got: {whitening_kernel.shape}"
            )
    inputs = keras.Input((32, 32, 3), name="images")
    x = BatchAugmentation(**(augmentation or {}), name="augment")(inputs)
    whiten = WhiteningConv2D(
        2 * patch * patch * 3, patch, padding="valid", kernel_trainable=whitening_kernel is None,
        kernel_initializer=torch_default(), bias_initializer=torch_bias(patch * patch * 3), name="whiten",
    )
    x = whiten(x)
    if whitening_kernel is not None:
        whiten.kernel.assign(whitening_kernel)
    x = layers.Activation(activation, name="whiten_act")(x)
    for group, channels in enumerate(widths, start=1):
        for part in (1, 2):
            prefix = f"block{group}"
            x = layers.Conv2D(
                channels, 3, padding="same", use_bias=False,
                kernel_initializer=Dirac(torch_default()) if dirac else torch_default(), name=f"{prefix}_conv{part}",
            )(x)
            if part == 1:
                x = layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
            x = layers.BatchNormalization(
                momentum=batch_norm_momentum, epsilon=BN_EPSILON, scale=not frozen_bn_scale, name=f"{prefix}_bn{part}"
            )(x)
            x = layers.Activation(activation, name=f"{prefix}_act{part}")(x)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_initializer=Standardized(torch_default()), name="linear")(x)
    scale = 1.0 / widths[-1] if logit_scale is None else logit_scale
    outputs = layers.Rescaling(scale, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
