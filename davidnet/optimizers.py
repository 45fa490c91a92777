"""Optimizers of the airbench94_muon fast preset: Muon for conv filters, and Lookahead, in-graph.

Keller Jordan's airbench (arXiv 2404.00498) reaches 94% on CIFAR-10 in seconds
with, among other things, two optimizer ingredients. Each is a separate piece
here, so it can also be combined with the classic DavidNet recipe:

* :func:`newton_schulz` and :class:`Muon` - momentum whose update is
  orthogonalised by a quintic Newton-Schulz iteration, applied to the conv
  FILTERS (each kernel reshaped to a matrix). Keras's own
  ``keras.optimizers.Muon`` applies Muon only to 2-D variables and sends conv
  kernels to AdamW; airbench94_muon does the opposite: Muon for the filters,
  Nesterov SGD for the batch-norm biases, the whitening bias and the head.
  :func:`muon_sgd` builds that split as one optimizer for ``model.compile``
  (a ``keras.optimizers.MultiOptimizer``); :func:`filters_and_rest` is the split.
* :class:`Lookahead` - airbench94's lookahead: every ``sync_period`` steps the
  slow weights move ``alpha`` of the way to the fast ones and the fast weights
  restart from there; the slow weights are the result. It wraps any optimizer
  and runs inside the compiled train step (no per-step callback);
  :class:`AirbenchAlphaSchedule` is airbench's schedule for ``alpha``.

Learning rates and weight decay: airbench94_muon in Keras
---------------------------------------------------------
airbench94_muon (batch 2000) sums its loss over the batch and uses PyTorch's
SGD (Nesterov, momentum 0.85) for everything but the filters, in three groups:
the whitening bias and the batch-norm biases at lr 0.053, the head at 0.67,
each with ``weight_decay = 2e-6 * 2000 / lr`` (so ``lr * weight_decay =
4e-3`` in every group), coupled: added to the gradient before the momentum.
Keras's losses are means over the batch, 1/2000 of the sum, so the same steps
are lr ``2000 * 0.053 = 106`` and ``2000 * 0.67 = 1340`` with coupled decay
``4e-3 / 106 = 3.774e-5`` and ``4e-3 / 1340 = 2.985e-6``: the product is
unchanged. :class:`davidnet.torch_optimizers.TorchSGD` is PyTorch's SGD
(coupled decay, the buffer of summed gradients that the current learning rate
scales), so these are exact, not an approximation. Muon (lr 0.24, momentum
0.6, no weight decay) needs no conversion: the orthogonalised update does not
depend on the scale of the gradient.
"""

import math
import re

import keras
from keras import ops

from davidnet.torch_optimizers import TorchSGD

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


@keras.saving.register_keras_serializable(package="davidnet")
class AirbenchAlphaSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """airbench94's lookahead ``alpha`` by step: ``1 - decay * (step / total_steps) ** 3``.

    airbench syncs with ``ema.lerp_(net, 1 - d)``, ``d = 0.95**5 * (step / total) ** 3``,
    so its ``alpha = 1 - d`` starts at 1 (plain training) and falls to
    ``1 - 0.95**5 = 0.226`` at the end. Steps past ``total_steps`` keep the last value.

    Args:
        total_steps: steps of the whole run.
        decay: airbench's final decay, ``0.95 ** 5``.

    Example:

    >>> schedule = AirbenchAlphaSchedule(total_steps=100)
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 100)]
    [1.0, 0.9033, 0.2262]
    """

    def __init__(self, total_steps, decay=0.95**5):
        if not total_steps > 0:
            raise ValueError(f"total_steps must be > 0. Got: {total_steps!r}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1]. Got: {decay!r}")
        self.total_steps = int(total_steps)
        self.decay = float(decay)

    def __call__(self, step):
        fraction = ops.minimum(ops.cast(step, "float32") / self.total_steps, 1.0)
        return 1.0 - self.decay * fraction**3

    def get_config(self):
        return {"total_steps": self.total_steps, "decay": self.decay}


@keras.saving.register_keras_serializable(package="davidnet")
class Lookahead(keras.optimizers.Optimizer):
    """Lookahead around any optimizer, inside the compiled train step.

    With ``k = sync_period``: the inner optimizer updates the (fast) model
    weights every step; after every k-th step the slow weights move
    ``alpha`` of the way to the fast ones, ``slow <- slow + alpha (fast - slow)``,
    and the fast weights restart from them, ``fast <- slow``. At the end of
    ``model.fit`` (``finalize_variable_values``) the model gets the slow
    weights, discarding the fast steps since the last sync, as airbench's
    final ``lookahead_state.update(model, decay=1.0)``. The inner optimizer's
    state (momentum) carries across syncs, as in airbench and Zhang et al.

    All of it is tensor code in the train step: the slow copy is taken at the
    first step of each period and the sync is a select on ``step % k``, so
    there is no per-step Python and no host round trip. The slow copy is
    taken from the weights themselves, so weights loaded after ``compile``
    are picked up. ``sync_period`` counts train steps (calls of ``apply``),
    also when the inner optimizer accumulates gradients.

    airbench's ``decay`` is ``1 - alpha``. Differences from airbench: only the
    variables the optimizer trains take part (airbench also averages
    batch-norm running statistics), and ``fit`` ends on the slow weights every
    time it returns (a run split over several ``fit`` calls restarts each one
    from the slow weights).

    Args:
        inner_optimizer: the Keras optimizer that takes the fast steps (e.g. SGD,
            or :func:`muon_sgd`'s MultiOptimizer).
        sync_period: k, steps between syncs (airbench: 5).
        alpha: the step towards the fast weights at a sync: a float in [0, 1],
            or a ``LearningRateSchedule`` (or any callable) of the number of
            steps taken, e.g. :class:`AirbenchAlphaSchedule`.
        name: the optimizer's name.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> inner = keras.optimizers.SGD(0.1, momentum=0.85, nesterov=True)
    >>> model.compile(optimizer=Lookahead(inner, sync_period=5, alpha=AirbenchAlphaSchedule(500)), loss="mse")
    """

    def __init__(self, inner_optimizer, sync_period=5, alpha=0.5, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"Lookahead takes inner_optimizer, sync_period, alpha and name; set the rest on the inner optimizer. Got: {sorted(kwargs)}"
            )
        super().__init__(learning_rate=0.0, name=name)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"inner_optimizer must be a Keras optimizer. Got: {inner_optimizer!r}")
        if getattr(inner_optimizer, "use_ema", False):
            raise ValueError("Lookahead ends on its slow weights, which would replace the inner optimizer's EMA: use one of the two")
        if not isinstance(sync_period, int) or sync_period < 1:
            raise ValueError(f"sync_period must be an integer >= 1. Got: {sync_period!r}")
        if not callable(alpha):
            if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be a float in [0, 1] or a schedule of the step. Got: {alpha!r}")
            alpha = float(alpha)
        self.inner_optimizer = inner_optimizer
        self.sync_period = sync_period
        self.alpha = alpha

    def build(self, var_list):
        """Builds the inner optimizer and one slow copy per variable."""
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        self._slow_weights = self.add_optimizer_variables(var_list, "slow")
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        """One inner step, then the lookahead bookkeeping, all as tensor ops."""
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Lookahead.apply without variables needs a built optimizer: call build(variables) first")
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
                self.built = True
        pairs = [
            (v, self._slow_weights[self._get_variable_index(v)])
            for v in trainable_variables
            if self._slow_weights[self._get_variable_index(v)] is not None
        ]
        value = ops.convert_to_tensor  # a variable's current value (inside JAX's stateless scope too)
        step = value(self._iterations)
        period_start = ops.equal(ops.mod(step, self.sync_period), 0)
        for fast, slow in pairs:
            self.assign(slow, ops.where(period_start, value(fast), value(slow)))

        self.inner_optimizer.apply(grads, trainable_variables)

        done = step + 1
        sync = ops.equal(ops.mod(done, self.sync_period), 0)
        alpha = self.alpha(done) if callable(self.alpha) else self.alpha
        for fast_variable, slow_variable in pairs:
            fast, slow = value(fast_variable), value(slow_variable)
            a = ops.cast(alpha, fast.dtype)
            # a * fast + (1 - a) * slow, not slow + a * (fast - slow): exact at a = 0 and a = 1.
            mixed = ops.add(ops.multiply(a, fast), ops.multiply(1 - a, slow))
            # self.assign: recorded by JAX's stateless scope; under a TF
            # MirroredStrategy it updates every replica's copy.
            self.assign(fast_variable, ops.where(sync, mixed, fast))
            self.assign(slow_variable, ops.where(sync, mixed, slow))
        self._iterations.assign_add(1)

    def finalize_variable_values(self, var_list):
        """Sets the model's variables to the slow weights (called by ``fit`` when it ends)."""
        self.inner_optimizer.finalize_variable_values(var_list)
        if not self.built:
            return
        for variable in var_list:
            index = self._trainable_variables_indices.get(self._var_key(variable))
            if index is not None and self._slow_weights[index] is not None:
                # A copy: on JAX assigning the variable would share its buffer,
                # and the next step that donates the weights (evaluate, predict)
                # would delete the slow weights' storage with it.
                variable.assign(ops.copy(self._slow_weights[index].value))

    def get_config(self):
        alpha = self.alpha if not callable(self.alpha) else keras.saving.serialize_keras_object(self.alpha)
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "sync_period": self.sync_period,
            "alpha": alpha,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        if isinstance(config.get("alpha"), dict):
            config["alpha"] = keras.saving.deserialize_keras_object(config["alpha"], custom_objects=custom_objects)
        return cls(inner, **config)
