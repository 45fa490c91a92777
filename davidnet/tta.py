"""Test-time augmentation as in airbench: mirror, and mirror plus one-pixel translations.

Level 0: the logits of the image. Level 1: the mean of the logits of the image
and of its left-right mirror. Level 2: half level 1 of the image, half the mean
of level 1 of the image translated by (-1, -1) and by (+1, +1), the translations
being the crops at (0, 0) and (2, 2) of the image reflect-padded by one pixel.

`tta_model` wraps any of our models (uint8 images in, logits out) into one
Keras model: the views are stacked into one batch, the wrapped model runs once
on it, and the views' logits are averaged with the weights above, so one
compiled `predict` does everything on the accelerator. Reflect padding commutes
with per-channel normalisation, so translating raw pixels (as here) equals
airbench's translating normalised images.

Example:
```python
accuracy = evaluate_tta(model, x_test, y_test, level=2)
```
"""

import keras
import numpy as np
from keras import ops

# Each level's views, in the order `tta_views` stacks them, and their weights:
# level 2 is 0.5 * mean(image, mirror) + 0.5 * mean over the two translations
# of mean(translated, its mirror).
VIEW_WEIGHTS = {
    0: (1.0,),
    1: (0.5, 0.5),
    2: (0.25, 0.25, 0.125, 0.125, 0.125, 0.125),
}


def _check_level(level):
    if level not in VIEW_WEIGHTS:
        raise ValueError(f"level must be 0 (none), 1 (mirror) or 2 (mirror + translate). Got: {level!r}")


def tta_views(images, level=2):
    """Returns the views of `images` that TTA at `level` averages over, stacked on the batch axis.

    Args:
        images: batch NHWC (any dtype).
        level: 0, 1 or 2.

    Returns:
        (k * N, H, W, C): the image, then its mirror (levels >= 1), then the
        (-1, -1) and (+1, +1) translations each followed by its mirror (level 2).
    """
    _check_level(level)
    views = [images]
    if level >= 2:
        height, width = images.shape[1], images.shape[2]
        padded = ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        views += [padded[:, :height, :width], padded[:, 2 : height + 2, 2 : width + 2]]
    if level >= 1:
        views = [v for view in views for v in (view, ops.flip(view, axis=2))]
    return ops.concatenate(views, axis=0) if len(views) > 1 else images


def tta_mean(logits, level=2):
    """Returns the weighted mean of the views' logits: (k * N, classes) -> (N, classes).

    Args:
        logits: the model's outputs on `tta_views(images, level)`.
        level: 0, 1 or 2, as for the views.
    """
    _check_level(level)
    weights = VIEW_WEIGHTS[level]
    if len(weights) == 1:
        return logits
    per_view = ops.reshape(logits, (len(weights), -1, logits.shape[-1]))
    weights = ops.convert_to_tensor(weights, per_view.dtype)
    return ops.sum(per_view * weights[:, None, None], axis=0)


class _TTALayer(keras.layers.Layer):
    """What the two TTA layers share: a level, float32, the batch axis left open."""

    def __init__(self, level=2, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_level(level)
        self.level = level

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "level": self.level}


@keras.saving.register_keras_serializable(package="davidnet")
class TTAViews(_TTALayer):
    """Layer form of `tta_views` (float32, so pixel values pass unrounded).

    Args:
        level: 0, 1 or 2.
    """

    def call(self, images):
        return tta_views(images, self.level)


@keras.saving.register_keras_serializable(package="davidnet")
class TTAMean(_TTALayer):
    """Layer form of `tta_mean` (float32, like our logits).

    Args:
        level: 0, 1 or 2.
    """

    def call(self, logits):
        return tta_mean(logits, self.level)


def tta_model(model, level=2):
    """Returns a model that takes `model`'s images and outputs its TTA logits.

    The wrapped model runs once per batch on all views together: a
    `predict(batch_size=B)` puts B * (1, 2, 6) images (level 0, 1, 2) through
    `model` at a time. Weights are shared with `model`, not copied.

    Args:
        model: a Keras model from images (N, H, W, C) to logits (N, classes),
            e.g. `fastnet` or `davidnet`.
        level: 0 (none), 1 (mirror) or 2 (mirror + translate).

    Example:
    ```python
    logits = tta_model(model, level=2).predict(x_test, batch_size=500)
    ```
    """
    _check_level(level)
    spec = model.inputs[0]
    inputs = keras.Input(spec.shape[1:], dtype=spec.dtype, name="images")
    logits = model(TTAViews(level, name="tta_views")(inputs))
    outputs = TTAMean(level, name="tta_mean")(logits)
    return keras.Model(inputs, outputs, name=f"{model.name}_tta{level}")


def evaluate_tta(model, images, labels, level=2, batch_size=1000):
    """Returns the accuracy of `model` with test-time augmentation at `level`.

    Args:
        model: as for `tta_model`.
        images: the test images, as `model` takes them (uint8 for ours).
        labels: integer labels (N,) or one-hot (N, classes).
        level: 0, 1 or 2.
        batch_size: images per predict step (each becomes up to 6 views).

    Example:
    ```python
    print(f"TTA accuracy: {evaluate_tta(model, x_test, y_test):.4f}")
    ```
    """
    labels = np.asarray(labels)
    shape = labels.shape
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"labels must be (N,) integers or (N, classes) one-hot for N = {len(images)} images. "
            f"Got shape: {shape}"
        )
    logits = tta_model(model, level).predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean(logits.argmax(axis=1) == labels))
