"""airbench94's lookahead, inside the compiled train step, and airbench's schedule for its ``alpha``.

* :class:`Lookahead` - every ``sync_period`` steps the slow weights move
  ``alpha`` of the way to the fast ones and the fast weights restart from
  there; the slow weights are the result. It wraps any optimizer and runs
  inside the compiled train step (no per-step callback).
* :class:`AirbenchAlphaSchedule` - airbench's schedule for ``alpha``.
"""

import keras
from keras import ops

__all__ = ["AirbenchAlphaSchedule", "Lookahead"]


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
