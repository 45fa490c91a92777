"""The learning-rate callbacks: set a schedule's rate per batch, or record it.

:class:`ScheduleCallback` takes a plain schedule
(:class:`~davidnet.schedules.ClosedFormSchedule`) into ``fit``.  Before each
training batch it computes the schedule's learning rate for the current
*global* step and assigns it to ``optimizer.learning_rate``; when the
schedule runs in the train step instead (``in_graph``, or the schedule itself
as the optimizer's ``learning_rate``) it only records, once per epoch.  Either
way :attr:`~ScheduleCallback.history` holds ``(global step, lr)`` for every
step, and each epoch's logs get its last ``learning_rate``.

:class:`LearningRateCallback` and its subclasses :class:`PiecewiseLinear`,
:class:`Cyclic` and :class:`OneCycle` are a schedule and its callback in one
object, as they were before the two were split: the callback builds its
schedule from the constructor's arguments and reads its attributes through.

Design notes
------------
**The step is counted in Python.**  The obvious alternative, reading
``optimizer.iterations`` every batch, is a device-to-host transfer: the host
has to wait for the previous train step to finish before it can even launch
the next one, which throws away the asynchronous dispatch that keeps a fast
GPU busy.  So the callbacks read ``optimizer.iterations`` exactly once, in
``on_train_begin`` (which also makes a resumed ``fit`` continue the schedule
where the previous one stopped), and from then on derive the step from the
``batch`` index Keras passes in.  Of the batch hooks only
``on_train_batch_begin`` is overridden: overriding ``on_train_batch_end``
would make Keras turn off its asynchronous dispatch of batch-end callbacks
for the whole callback list.

**JAX needs a state sync before the assignment.**  Keras 3's JAX trainer
threads every variable - including the optimizer's ``learning_rate``
variable - through the jitted train step as an explicit state tuple, and
detaches that state from the ``keras.Variable`` objects for the duration of
an epoch.  Assigning to the variable through a cached optimizer reference
mid-epoch therefore changes nothing the train step sees (it keeps using the
LR carried in its state), and the trainer's end-of-epoch ``jax_state_sync()``
even overwrites the assignment with that stale value.  The trainer only
rebuilds its state from the variables at the start of each epoch, so the LR
set for an epoch's first batch would silently be used for the whole epoch
(measured: a per-batch schedule degrades to a per-epoch staircase).

Going through ``Callback.model`` calls ``model.jax_state_sync()``, which
re-attaches the state to the variables and flags the trainer to rebuild its
state from them before the next step, so the assignment that follows is
picked up.  That is private Keras behaviour (see
``pipelines/keras_private.py``, which checks it).  The order matters: sync first, then assign
(an assignment made before the sync is overwritten by it).  The sync plus
the state rebuild it triggers is Python work proportional to the number of
variables (about 0.3 ms per batch for a 70-variable ResNet-9 on a CPU host)
but no device-to-host transfer, so it does not stall asynchronous dispatch.
On the other backends the cached optimizer reference is used and nothing is
synced.  When the LR is unchanged from the previous batch the assignment
(and, on JAX, the sync) is skipped.
"""

from __future__ import annotations

import keras
import numpy as np

from davidnet.schedules.closed_form import ClosedFormSchedule, PiecewiseLinearSchedule
from davidnet.schedules.cyclic import CyclicSchedule, OneCycleSchedule
from davidnet.schedules.table import TabulatedSchedule

__all__ = ["ScheduleCallback", "LearningRateCallback", "PiecewiseLinear", "Cyclic", "OneCycle"]


class ScheduleCallback(keras.callbacks.Callback):
    """Sets a schedule's learning rate before every train batch, or records it.

    * ``on_train_begin`` resolves the schedule's ``steps_per_epoch`` (from its
      constructor or from ``self.params["steps"]``, which ``fit`` fills in)
      and reads the starting global step once from ``optimizer.iterations``;
    * ``on_train_batch_begin`` assigns ``schedule.lr_at(step + step_offset)``
      for the current global step and appends ``(global_step, lr)`` to
      :attr:`history`;
    * with :attr:`records_only` (the schedule is in the graph) it assigns
      nothing: ``on_epoch_end`` reads the optimizer's step count once and
      appends the epoch's ``(step, lr)`` pairs from the closed form.

    See the module docstring for why the step is counted in Python and why
    the JAX backend needs a state sync before the assignment.

    With ``steps_per_execution=k`` Keras calls batch callbacks once per ``k``
    steps; the LR is then set once per call (the value for its first step)
    and held for the ``k`` steps.

    Args:
        schedule: a :class:`~davidnet.schedules.ClosedFormSchedule`.
        records_only: the schedule runs in the train step (the optimizer's
            ``learning_rate`` is ``schedule`` or ``schedule.in_graph(...)``);
            :meth:`in_graph` sets it too.

    Attributes:
        schedule: the schedule.
        history: List of ``(global_step, lr)`` tuples, one per batch for
            which the callback set (or recorded) the learning rate, over all
            ``fit`` calls.
        records_only: whether the callback only records.

    Example:

    >>> import numpy as np, keras
    >>> from davidnet.schedules import PiecewiseLinearSchedule, ScheduleCallback
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    >>> callback = ScheduleCallback(PiecewiseLinearSchedule([0, 1, 2], [0.0, 0.1, 0.0]))
    >>> x, y = np.ones((32, 4)), np.zeros((32, 1))
    >>> _ = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...               callbacks=[callback])
    >>> [round(lr, 3) for _, lr in callback.history]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.075, 0.05, 0.025]
    """

    def __init__(self, schedule, records_only=False):
        super().__init__()
        if not isinstance(schedule, ClosedFormSchedule):
            raise ValueError(f"schedule must be a ClosedFormSchedule, got {type(schedule).__name__}.")
        self.schedule = schedule
        self.records_only = bool(records_only)
        self.history: list[tuple[int, float]] = []
        self._optimizer = None
        self._sync_before_assign = False
        self._steps_per_call = 1
        self._epoch_start_step = 0
        self._step = 0
        self._last_lr = None

    def in_graph(self, total_steps) -> TabulatedSchedule:
        """The schedule's :meth:`~davidnet.schedules.ClosedFormSchedule.in_graph`
        table for the optimizer; this callback then only records.

        Pass the result as the optimizer's ``learning_rate`` and keep this
        callback in ``fit``: it no longer assigns anything (no per-step Python
        touches the optimizer, and on JAX no per-step state sync), and at each
        epoch's end it appends that epoch's ``(step, lr)`` pairs to
        :attr:`history` from the closed form, for plots and results files.

        Example:

        >>> from davidnet.schedules import PiecewiseLinear
        >>> callback = PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=97)
        >>> optimizer = keras.optimizers.SGD(learning_rate=callback.in_graph(24 * 97))
        >>> # model.compile(optimizer=optimizer, ...); model.fit(..., callbacks=[callback])
        """
        table = self.schedule.in_graph(total_steps)
        self.records_only = True
        return table

    # ------------------------------------------------------------------ #
    # Callback hooks
    # ------------------------------------------------------------------ #
    def on_train_begin(self, logs=None):
        steps_per_epoch = self.schedule.resolve_steps_per_epoch((self.params or {}).get("steps"))
        if steps_per_epoch is None and self.schedule.requires_steps_per_epoch:
            raise ValueError(
                f"{type(self).__name__}: steps_per_epoch was not given and "
                "fit() does not know the number of steps per epoch (e.g. a "
                "dataset of unknown length). Pass steps_per_epoch=... to "
                "the callback (or to fit())."
            )
        # Touching self.model once here is free: the state is in sync at the
        # start of fit.  Reading iterations once (not per batch) is what lets
        # a resumed fit continue the schedule without per-batch host syncs.
        model = self.model
        self._optimizer = model.optimizer
        # convert_to_numpy: under MirroredStrategy `iterations` is a MirroredVariable, which int() refuses.
        self._step = int(keras.ops.convert_to_numpy(self._optimizer.iterations))
        self._epoch_start_step = self._step
        self._steps_per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._sync_before_assign = keras.backend.backend() == "jax"
        self._last_lr = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = self._step

    def on_epoch_end(self, epoch, logs=None):
        if self.records_only:
            # In-graph: the optimizer counted the steps; one read per epoch.
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            steps = np.arange(self._epoch_start_step, self._step)
            values = self.schedule.lr_values(steps + self.schedule.step_offset)
            self.history.extend(zip(steps.tolist(), values.tolist()))
        if logs is not None and self.history:
            # As Keras's LearningRateScheduler: the epoch's last learning rate
            # in the logs, so History, CSVLogger and TensorBoard show it.
            logs["learning_rate"] = float(self.history[-1][1])

    def on_train_batch_begin(self, batch, logs=None):
        if self.records_only:
            return
        if self._optimizer is None:
            raise RuntimeError(
                f"{type(self).__name__}.on_train_batch_begin was called before "
                "on_train_begin; use the callback through model.fit() or call "
                "on_train_begin() first."
            )
        # `batch` is the index within the epoch of the first step of this
        # call, so this stays exact with steps_per_execution > 1.
        step = self._epoch_start_step + int(batch)
        lr = self.schedule.lr_at(step + self.schedule.step_offset)
        if lr != self._last_lr:
            if self._sync_before_assign:
                # JAX: the property syncs the trainer's detached state back
                # into the variables and makes the trainer re-read them before
                # the next step; assigning via self._optimizer alone would be
                # ignored mid-epoch (see module docstring).
                # private Keras behaviour: see pipelines/keras_private.py
                optimizer = self.model.optimizer
            else:
                optimizer = self._optimizer
            optimizer.learning_rate = lr
            self._last_lr = lr
        self.history.append((step, lr))
        steps_in_call = self._steps_per_call
        epoch_steps = (self.params or {}).get("steps")
        if epoch_steps:
            # The last call of an epoch may cover fewer steps.
            steps_in_call = min(steps_in_call, int(epoch_steps) - int(batch))
        self._step = step + max(1, steps_in_call)

    def __repr__(self):
        return f"{type(self).__name__}({self.schedule!r}, records_only={self.records_only!r})"


class _MethodSchedule(ClosedFormSchedule):
    """The closed form of a :class:`LearningRateCallback` subclass that gives
    it itself, in ``_lr`` (and ``requires_steps_per_epoch``)."""

    def __init__(self, callback, steps_per_epoch=None, step_offset=0):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        self._callback = callback

    @property
    def _name(self):
        return type(self._callback).__name__

    @property
    def requires_steps_per_epoch(self):
        return self._callback.requires_steps_per_epoch

    def _lr(self, steps):
        return self._callback._lr(steps)


class LearningRateCallback(ScheduleCallback):
    """A schedule and its callback in one object: the schedules' interface
    from before the split, kept for the names below and for subclasses.

    A subclass that names a ``schedule_class`` (:class:`PiecewiseLinear`,
    :class:`Cyclic`, :class:`OneCycle`) takes that schedule's arguments and
    builds it.  One that does not is its own closed form: it implements
    ``_lr(steps)``, a vectorised NumPy function of float64 global steps (and
    may set ``requires_steps_per_epoch = False``), and the constructor takes
    ``steps_per_epoch=None, step_offset=0``.

    The schedule's attributes and methods read through the callback:
    ``lr_at``, ``lr_values``, ``momentum_in_graph``, ``steps_per_epoch``,
    ``step_offset``, ``get_config`` and each schedule's own (``knots``,
    ``total_steps``, ``momentum_values``, ...).  :meth:`in_graph` also turns
    the callback into a recorder, as in :class:`ScheduleCallback`.

    Example:

    >>> import numpy as np, keras
    >>> from davidnet.schedules import PiecewiseLinear
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    >>> schedule = PiecewiseLinear([0, 1, 2], [0.0, 0.1, 0.0])
    >>> x, y = np.ones((32, 4)), np.zeros((32, 1))
    >>> _ = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...               callbacks=[schedule])
    >>> [round(lr, 3) for _, lr in schedule.history]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.075, 0.05, 0.025]
    """

    # The plain schedule the constructor's arguments build; None: the
    # subclass's own `_lr`.
    schedule_class = None

    def __init__(self, *args, **kwargs):
        if self.schedule_class is None:
            schedule = _MethodSchedule(self, *args, **kwargs)
        else:
            schedule = self.schedule_class(*args, **kwargs)
        super().__init__(schedule)

    def _lr(self, steps):
        """The closed form: the schedule's, or a subclass's own."""
        if self.schedule_class is None:
            raise NotImplementedError(f"{type(self).__name__} must implement _lr(steps), the closed form.")
        return self.schedule._lr(steps)

    @property
    def requires_steps_per_epoch(self):
        """Whether the closed form needs steps_per_epoch (a subclass of its own may set it)."""
        return True if self.schedule_class is None else self.schedule.requires_steps_per_epoch

    @property
    def steps_per_epoch(self):
        """The schedule's steps per epoch in effect (given, or from the last ``fit``)."""
        return self.schedule.steps_per_epoch

    @steps_per_epoch.setter
    def steps_per_epoch(self, value):
        self.schedule.steps_per_epoch = value

    def __getattr__(self, name):
        # Only called for what the callback lacks: the schedule's attributes.
        schedule = self.__dict__.get("schedule")
        if schedule is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(schedule, name)

    def get_config(self) -> dict:
        """Constructor arguments (``cls(**cb.get_config())`` rebuilds it)."""
        return self.schedule.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class PiecewiseLinear(LearningRateCallback):
    """:class:`~davidnet.schedules.PiecewiseLinearSchedule` as a callback
    (:class:`LearningRateCallback`), with the same arguments:
    ``PiecewiseLinear(knots, values, steps_per_epoch=None, step_offset=0)``.

    Example:

    >>> from davidnet.schedules import PiecewiseLinear
    >>> schedule = PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=10)
    >>> [round(schedule.lr_at(s), 6) for s in (0, 25, 50, 145, 240, 1000)]
    [0.0, 0.2, 0.4, 0.2, 0.0, 0.0]
    >>> # model.fit(x, y, epochs=24, callbacks=[schedule])
    """

    schedule_class = PiecewiseLinearSchedule


class Cyclic(LearningRateCallback):
    """:class:`~davidnet.schedules.CyclicSchedule` as a callback
    (:class:`LearningRateCallback`), with the same arguments:
    ``Cyclic(base_lr, max_lr, step_size, mode="triangular", gamma=1.0,
    scale_fn=None, scale_mode="cycle", steps_per_epoch=None, step_offset=0)``.

    Example:

    >>> from davidnet.schedules import Cyclic
    >>> clr = Cyclic(base_lr=0.001, max_lr=0.006, step_size=2000, mode="triangular2")
    >>> [round(clr.lr_at(s), 6) for s in (0, 2000, 4000, 6000)]
    [0.001, 0.006, 0.001, 0.0035]
    >>> # model.fit(x, y, epochs=..., callbacks=[clr])
    """

    schedule_class = CyclicSchedule


class OneCycle(LearningRateCallback):
    """:class:`~davidnet.schedules.OneCycleSchedule` as a callback
    (:class:`LearningRateCallback`), with the same arguments:
    ``OneCycle(max_lr, total_steps=None, epochs=None, pct_start=0.25,
    anneal="cos", div_factor=25.0, final_div_factor=1e4, base_momentum=0.85,
    max_momentum=0.95, steps_per_epoch=None, step_offset=0)``.

    Example:

    >>> from davidnet.schedules import OneCycle
    >>> sched = OneCycle(max_lr=0.01, epochs=8, steps_per_epoch=100, pct_start=0.25)
    >>> sched.total_steps
    800
    >>> # model.compile(optimizer=keras.optimizers.Adam(clipnorm=0.1), ...)
    >>> # model.fit(x, y, epochs=8, callbacks=[sched])
    """

    schedule_class = OneCycleSchedule
