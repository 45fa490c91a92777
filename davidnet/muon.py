"""Muon for conv filters, as airbench94_muon: Newton-Schulz, the optimizer, and its split with SGD.

* :func:`newton_schulz` and :class:`Muon` - momentum whose update is
  orthogonalised by a quintic Newton-Schulz iteration, applied to the conv
  FILTERS (each kernel reshaped to a matrix). Keras's own
  ``keras.optimizers.Muon`` applies Muon only to 2-D variables and sends conv
  kernels to AdamW; airbench94_muon does the opposite: Muon for the filters,
  Nesterov SGD for the batch-norm biases, the whitening bias and the head.
* :func:`muon_sgd` builds that split as one optimizer for ``model.compile``
  (a ``keras.optimizers.MultiOptimizer``); :func:`filters_and_rest` is the split.

Muon (lr 0.24, momentum 0.6, no weight decay) needs no conversion from
airbench94_muon's summed loss to Keras's mean: the orthogonalised update does
not depend on the scale of the gradient (:mod:`davidnet.optimizers` has the
arithmetic for the SGD groups).
"""

import math
import re

import keras
from keras import ops

from davidnet.torch_optimizers import TorchSGD

__all__ = ["NEWTON_SCHULZ_COEFFICIENTS", "newton_schulz", "Muon", "filters_and_rest", "muon_sgd"]

# airbench / Muon quintic coefficients: they maximise the slope at zero, so
# five steps lift even small singular values into a band around 1 (0.68 to
# 1.20 for all above 0.3% of the Frobenius norm) instead of converging to 1.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix, steps=3, eps=1e-7, dtype="bfloat16"):
    """Approximately orthogonalises a matrix: U V^T of its SVD, up to singular values near 1.

    The quintic Newton-Schulz iteration of Muon / airbench94_muon: scale the
    matrix to Frobenius norm 1 (so every singular value is at most 1), put the
    short side first (the Gram matrix is then the small one), and apply
    ``X <- a X + (b A + c A A) X`` with ``A = X X^T`` ``steps`` times. The result
    has the input's singular vectors and, after 5 steps, singular values in
    [0.68, 1.2] (all those above 0.3% of the input's Frobenius norm).

    Computed in ``dtype`` (airbench94_muon: 3 steps in bfloat16, its
    ``zeropower_via_newtonschulz5``) and returned in the input's dtype;
    ``dtype="float32"`` gives a result comparable with a float64 NumPy
    reference to 1e-5.

    Args:
        matrix: a 2-D tensor.
        steps: iterations (airbench94_muon: 3; 5 lift more of the small
            singular values into the band).
        eps: added to the norm, so a zero matrix stays zero.
        dtype: the dtype of the iteration ("bfloat16" or "float32").

    Returns:
        A tensor of the same shape and dtype.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(8, 32)).astype("float32")
    >>> s = np.linalg.svd(keras.ops.convert_to_numpy(newton_schulz(x, steps=5, dtype="float32")), compute_uv=False)
    >>> bool(0.7 < s.min() and s.max() < 1.2)
    True
    """
    if len(matrix.shape) != 2:
        raise ValueError(f"newton_schulz expects a 2-D matrix. Got shape {tuple(matrix.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1. Got: {steps!r}")
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    out_dtype = matrix.dtype
    x = ops.cast(matrix, dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = ops.transpose(x)
    x = x / (ops.sqrt(ops.sum(ops.square(x))) + eps)
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    if tall:
        x = ops.transpose(x)
    return ops.cast(x, out_dtype)


@keras.saving.register_keras_serializable(package="davidnet")
class Muon(keras.optimizers.Optimizer):
    """Muon for conv filters, as airbench94_muon: orthogonalised Nesterov momentum.

    For each variable (rank >= 2, output channels on the last axis as in Keras
    kernels: ``(kh, kw, in, out)`` for Conv2D, ``(in, out)`` for Dense):

    1. momentum ``buf <- buf + (1 - momentum) (g - buf)`` (PyTorch ``buf.lerp_(g, 1 - momentum)``);
    2. update ``u = g + momentum (buf - g)`` (Nesterov, ``g.lerp(buf, momentum)``),
       or ``u = buf`` without Nesterov;
    3. ``u`` reshaped to an (out_channels, everything else) matrix,
       orthogonalised by :func:`newton_schulz`, reshaped back;
    4. with ``normalize_weights``, the weight is first rescaled to Frobenius
       norm ``sqrt(out_channels)`` (airbench's
       ``p.data.mul_(len(p.data)**0.5 / p.data.norm())``);
    5. ``w <- w - learning_rate * u``.

    The running sum of airbench94_muon's Muon (``buf = m buf + g``,
    ``u = g + m buf``) is this running average times 1 / (1 - m); Newton-Schulz
    divides the scale out, so the two give the same step.

    Variables of rank < 2 (biases, batch-norm parameters) have nothing to
    orthogonalise: ``build`` raises a ValueError naming them. Route them to
    another optimizer: :func:`muon_sgd` does (Nesterov SGD, as airbench).
    The inherited ``weight_decay`` (Keras's, decoupled) still applies, but with
    ``normalize_weights`` the rescaling undoes it; airbench uses none.

    Args:
        learning_rate: a float, or a
            ``keras.optimizers.schedules.LearningRateSchedule``. airbench94_muon: 0.24.
        momentum: float in [0, 1). airbench94_muon: 0.6.
        nesterov: Nesterov momentum (True in airbench94_muon).
        ns_steps: Newton-Schulz iterations (airbench94_muon: 3).
        ns_dtype: the Newton-Schulz iteration's dtype (airbench94_muon: bfloat16).
        normalize_weights: rescale each weight to norm sqrt(out_channels)
            before its update.
        **kwargs: the base optimizer's arguments (``name``, ``weight_decay``,
            ``clipnorm``, ``use_ema``, ...).

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False),
    ...                           keras.layers.GlobalAveragePooling2D()])
    >>> model.compile(optimizer=Muon(learning_rate=0.24, momentum=0.6), loss="mse")
    """

    def __init__(self, learning_rate=0.24, momentum=0.6, nesterov=True, ns_steps=3, normalize_weights=True, ns_dtype="bfloat16", **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Got: {momentum!r}")
        if not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"ns_steps must be an integer >= 1. Got: {ns_steps!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.ns_steps = ns_steps
        self.ns_dtype = keras.backend.standardize_dtype(ns_dtype)
        self.normalize_weights = bool(normalize_weights)

    def build(self, variables):
        """Creates one momentum buffer per variable; rejects variables of rank < 2."""
        if self.built:
            return
        for variable in variables:
            if len(variable.shape) < 2:
                raise ValueError(
                    f"Muon orthogonalises matrices and conv filters (rank >= 2). Got "
                    f"{getattr(variable, 'path', variable.name)} of shape {tuple(variable.shape)}: route it to "
                    "another optimizer (muon_sgd does, or keras.optimizers.MultiOptimizer)"
                )
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        """One Muon step on one variable (only self.assign and keras.ops: works under JAX's stateless apply)."""
        shape = tuple(int(d) for d in variable.shape)
        lr = ops.cast(learning_rate, "float32")
        g = ops.cast(gradient, "float32")
        buffer = self.momentums[self._get_variable_index(variable)]
        m = self.momentum
        average = ops.add(ops.multiply(ops.cast(buffer, "float32"), m), ops.multiply(g, 1.0 - m))
        self.assign(buffer, ops.cast(average, buffer.dtype))
        update = ops.add(ops.multiply(g, 1.0 - m), ops.multiply(average, m)) if self.nesterov else average
        # Rows x output channels is the transpose of (out, rest); Newton-Schulz
        # commutes with transposition (and with permuting the rest), so the
        # result is airbench's (out, in * kh * kw) orthogonalisation.
        update = ops.reshape(newton_schulz(ops.reshape(update, (-1, shape[-1])), self.ns_steps, dtype=self.ns_dtype), shape)
        weight = ops.cast(variable, "float32")
        if self.normalize_weights:
            norm = ops.sqrt(ops.sum(ops.square(weight)))
            weight = weight * (math.sqrt(shape[-1]) / ops.maximum(norm, 1e-12))
        self.assign(variable, ops.cast(weight - lr * update, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "ns_steps": self.ns_steps,
                "ns_dtype": self.ns_dtype,
                "normalize_weights": self.normalize_weights,
            }
        )
        return config


def filters_and_rest(model):
    """Splits trainable variables into conv filters (rank >= 3) and everything else.

    The split of airbench94_muon: the filters go to Muon; biases, batch-norm
    parameters and Dense kernels (the head) to SGD. Non-trainable variables
    (e.g. a frozen whitening conv) are in neither list.

    Args:
        model: a built Keras model or layer, or a list of variables.

    Returns:
        ``(filters, rest)``: two lists of variables, in the model's order.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> [[v.name for v in part] for part in filters_and_rest(model)]
    [['kernel'], ['bias', 'kernel', 'bias']]
    """
    variables = list(model.trainable_variables) if hasattr(model, "trainable_variables") else list(model)
    if not variables:
        raise ValueError(f"filters_and_rest expects a built model (or variables) with trainable variables. Got: {model!r}")
    filters = [v for v in variables if len(v.shape) >= 3]
    rest = [v for v in variables if len(v.shape) < 3]
    return filters, rest


def muon_sgd(
    model_or_patterns,
    muon_lr,
    sgd_lr,
    momentum=0.85,
    muon_momentum=0.6,
    nesterov=True,
    weight_decay=None,
    ns_steps=3,
    normalize_weights=True,
    ns_dtype="bfloat16",
    groups=None,
    default=None,
    name=None,
):
    """One optimizer for ``model.compile``: Muon for the conv filters, Nesterov SGD for the rest.

    A ``keras.optimizers.MultiOptimizer`` whose ``OptimizerMap`` sends the
    filters (by variable path) to one :class:`Muon` and everything else to one
    :class:`davidnet.torch_optimizers.TorchSGD` (PyTorch's SGD, as
    airbench94_muon); ``groups`` adds more optimizers for other
    variables (airbench94_muon's head has its own learning rate). It runs in
    ``model.fit`` on JAX and TensorFlow, and ``get_config`` round-trips.

    A MultiOptimizer has no single ``learning_rate``: give ``muon_lr`` and
    ``sgd_lr`` as ``LearningRateSchedule``s (each counts its own steps, which
    are the global steps) rather than a callback that assigns
    ``optimizer.learning_rate``.

    Args:
        model_or_patterns: a built model (its trainable variables of rank >= 3
            go to Muon, see :func:`filters_and_rest`), or a regular expression or
            list of them, matched in full against variable paths
            (e.g. ``r".*_conv/kernel"``).
        muon_lr: Muon's learning rate (float or schedule); airbench94_muon: 0.24.
        sgd_lr: SGD's learning rate (float or schedule), for a mean loss.
        momentum: SGD momentum (airbench: 0.85).
        muon_momentum: Muon momentum (airbench94_muon: 0.6).
        nesterov: Nesterov momentum for both.
        weight_decay: SGD's coupled weight decay (PyTorch's), or None (see
            the module docstring for airbench94_muon's values). Muon gets none.
        ns_steps: Muon's Newton-Schulz iterations (airbench94_muon: 3).
        ns_dtype: their dtype (airbench94_muon: bfloat16).
        normalize_weights: Muon rescales each filter to norm sqrt(out_channels).
        groups: optional dict, regular expression (full match on the variable
            path) -> a Keras optimizer, for variables that need their own
            optimizer; a variable may match only one of these and the filters.
        default: the optimizer for everything else; None: a ``TorchSGD``
            from ``sgd_lr``, ``momentum``, ``nesterov`` and ``weight_decay``.
        name: the MultiOptimizer's name.

    Returns:
        A ``keras.optimizers.MultiOptimizer``.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")])
    >>> optimizer = muon_sgd(model, muon_lr=0.24, sgd_lr=0.1, weight_decay=5e-3,
    ...                      groups={".*head/kernel": TorchSGD(0.5, momentum=0.85, nesterov=True)})
    >>> model.compile(optimizer=optimizer, loss="mse")
    """
    if isinstance(model_or_patterns, str):
        patterns = [model_or_patterns]
    elif isinstance(model_or_patterns, (list, tuple)) and model_or_patterns and all(isinstance(p, str) for p in model_or_patterns):
        patterns = list(model_or_patterns)
    else:
        filters, _ = filters_and_rest(model_or_patterns)
        if not filters:
            raise ValueError(f"muon_sgd found no conv filters (trainable variables of rank >= 3) in {model_or_patterns!r}")
        patterns = [re.escape(v.path) for v in filters]
    for pattern in patterns:
        _check_pattern(pattern)  # a bad expression fails here, not at the first fit
    # One key for all filters, so one Muon: a key per filter would come back
    # from get_config as one Muon per filter, with a different variable list.
    filter_pattern = "|".join(f"(?:{p})" for p in patterns)
    sgd = default or TorchSGD(sgd_lr, momentum=float(momentum), nesterov=nesterov, weight_decay=weight_decay)
    muon = Muon(
        muon_lr, momentum=muon_momentum, nesterov=nesterov, ns_steps=ns_steps, normalize_weights=normalize_weights, ns_dtype=ns_dtype
    )
    mapping = {filter_pattern: muon}
    for pattern, optimizer in (groups or {}).items():
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"groups must map regular expressions to Keras optimizers. Got {pattern!r}: {optimizer!r}")
        _check_pattern(pattern)
        mapping[pattern] = optimizer
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(sgd, mapping), name=name)


def _check_pattern(pattern):
    try:
        re.compile(pattern)
    except (re.error, TypeError) as error:
        raise ValueError(f"expected a regular expression for variable paths. Got {pattern!r}: {error}") from None
