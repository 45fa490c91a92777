"""The update rules the reference recipes ran, as Keras optimizers: PyTorch's SGD and Adam.

Keras's own SGD and Adam differ from the PyTorch code that cifar10-fast,
airbench94_muon, Hoffer et al.'s convNet.pytorch and the ResNet-9 Adam
tutorial trained with, in three ways that change the numbers:

* **Weight decay.** Keras's ``weight_decay`` is decoupled (``w -= lr * wd * w``
  outside the momentum, as AdamW); every reference here used PyTorch's
  coupled decay, an L2 term added to the gradient before the momentum (and,
  in Adam, before the moment estimates). Here ``weight_decay`` means the
  coupled one: ``g <- g + weight_decay * w``. For a loss averaged over the
  batch, a reference's value on a summed loss is divided by the batch size
  (and its learning rate multiplied by it): the product ``lr * weight_decay``
  is the same in both.
* **The momentum buffer.** Keras (and cifar10-fast's own ``nesterov_update``)
  keep a velocity with the learning rate inside it, ``v <- m v - lr g``;
  ``torch.optim.SGD`` keeps a sum of gradients, ``b <- m b + g``, and scales
  the whole of it by the current learning rate, ``w -= lr (g + m b)``
  (Nesterov) or ``w -= lr b``. The two agree while the learning rate is
  constant and differ when it changes: airbench94_muon's linear decay, a
  step schedule's drops. ``lr_in_buffer`` picks the form.
* **Adam.** ``torch.optim.Adam`` adds ``eps`` (1e-8) to ``sqrt(v) /
  sqrt(1 - beta_2^t)``, Keras's to ``sqrt(v)`` (1e-7); and PyTorch's
  ``OneCycleLR`` changes ``beta_1`` every step, which Keras's Adam (a fixed
  float) cannot. :class:`TorchAdam` takes ``beta_1`` as a schedule of the step,
  evaluated inside the train step.

Gradient clipping (``clipvalue``, ``clipnorm``) comes before the decay, as
``torch.nn.utils.clip_grad_value_`` before ``optimizer.step()``.
``exclude_from_weight_decay`` (Keras's own) exempts variables from the
coupled decay, e.g. ``var_names=["bias", "gamma", "beta"]`` for decay on
kernels only (Hoffer et al.).
"""

import keras
from keras import ops


class _CoupledDecay:
    """Makes `weight_decay` PyTorch's coupled L2: added to the gradient in `update_step`."""

    def _apply_weight_decay(self, variables):
        """Keras's decoupled decay: replaced by the coupled one in `_decayed`."""

    def _scheduled(self, value, dtype):
        """A hyperparameter that may be a schedule of the step (one-cycle's momentum)."""
        return ops.cast(value(self.iterations) if callable(value) else value, dtype)

    def _decayed(self, gradient, variable):
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.weight_decay, variable.dtype) * variable
        return gradient


@keras.saving.register_keras_serializable(package="davidnet")
class TorchSGD(_CoupledDecay, keras.optimizers.SGD):
    """SGD with coupled weight decay and a choice of momentum buffer.

    With ``lr_in_buffer=False`` it is ``torch.optim.SGD`` (dampening 0):
    ``d = g + wd w; b = m b + d; w -= lr (d + m b)`` with Nesterov, ``lr b``
    without. With ``lr_in_buffer=True`` it is cifar10-fast's
    ``nesterov_update`` (and Keras's SGD form): ``d = -lr (g + wd w);
    v = m v + d; w += d + m v`` (Nesterov) or ``w += v``.

    Args:
        learning_rate: a float or a ``LearningRateSchedule``.
        momentum: float in [0, 1), or a ``LearningRateSchedule`` of the step
            giving it (one-cycle's momentum, as PyTorch's ``OneCycleLR``
            sets it every step).
        nesterov: Nesterov momentum.
        weight_decay: coupled L2 coefficient (``None`` or 0: none).
        lr_in_buffer: the momentum buffer's form (see above).
        **kwargs: the base optimizer's arguments (``clipvalue``, ``name``...).

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer=TorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4), loss="mse")
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, lr_in_buffer=False, **kwargs):
        if isinstance(momentum, dict):
            momentum = keras.saving.deserialize_keras_object(momentum)
        fixed = 0.5 if callable(momentum) else momentum  # Keras checks a float; the schedule replaces it
        super().__init__(learning_rate=learning_rate, momentum=fixed, nesterov=nesterov, weight_decay=weight_decay, **kwargs)
        self.momentum = momentum
        self.lr_in_buffer = bool(lr_in_buffer)

    def update_step(self, gradient, variable, learning_rate):
        gradient = self._decayed(gradient, variable)
        lr = ops.cast(learning_rate, variable.dtype)
        if not callable(self.momentum) and not self.momentum:
            self.assign_sub(variable, lr * gradient)
            return
        m = self._scheduled(self.momentum, variable.dtype)
        buffer = self.momentums[self._get_variable_index(variable)]
        if self.lr_in_buffer:
            step = -lr * gradient
            self.assign(buffer, m * buffer + step)
            self.assign_add(variable, step + m * buffer if self.nesterov else buffer)
        else:
            # PyTorch starts the buffer at the first gradient: m * 0 + g is the same.
            self.assign(buffer, m * buffer + gradient)
            self.assign_sub(variable, lr * (gradient + m * buffer if self.nesterov else buffer))

    def get_config(self):
        config = {**super().get_config(), "lr_in_buffer": self.lr_in_buffer}
        if callable(self.momentum):
            config["momentum"] = keras.saving.serialize_keras_object(self.momentum)
        return config


@keras.saving.register_keras_serializable(package="davidnet")
class TorchAdam(_CoupledDecay, keras.optimizers.Adam):
    """``torch.optim.Adam``: coupled weight decay, PyTorch's epsilon, and ``beta_1`` by step.

    ``g += wd w; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, with ``t``
    the step counted from 1 and ``b1`` the value for this step (PyTorch's
    bias correction also uses the current ``beta_1``).

    Args:
        learning_rate: a float or a ``LearningRateSchedule``.
        beta_1: a float, or a ``LearningRateSchedule`` of the step (0 = the
            first step) giving it, e.g. one-cycle's momentum
            (:meth:`davidnet.schedules.OneCycle.momentum_in_graph`).
        beta_2, epsilon: as ``torch.optim.Adam`` (0.999, 1e-8).
        weight_decay: coupled L2 coefficient.
        **kwargs: the base optimizer's arguments (``clipvalue``, ``name``...).

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer=TorchAdam(1e-3, weight_decay=1e-4, clipvalue=0.1), loss="mse")
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None, **kwargs):
        if isinstance(beta_1, dict):
            beta_1 = keras.saving.deserialize_keras_object(beta_1)
        super().__init__(learning_rate=learning_rate, beta_1=0.9, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay, **kwargs)
        self.beta_1 = beta_1

    def update_step(self, gradient, variable, learning_rate):
        gradient = self._decayed(gradient, variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta_1 = self._scheduled(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, beta_1 * m + (1 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1 - beta_2) * ops.square(gradient))
        denominator = ops.sqrt(v) / ops.sqrt(1 - ops.power(beta_2, t)) + ops.cast(self.epsilon, dtype)
        self.assign_sub(variable, lr / (1 - ops.power(beta_1, t)) * m / denominator)

    def get_config(self):
        config = super().get_config()
        if callable(self.beta_1):
            config["beta_1"] = keras.saving.serialize_keras_object(self.beta_1)
        return config
