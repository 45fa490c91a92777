"""Learning-rate schedules as plain objects: a closed form of the global step.

:class:`ClosedFormSchedule` is the base: a subclass gives the learning rate as
a vectorised NumPy function of the global step (``_lr``), and gets

* :meth:`~ClosedFormSchedule.lr_at` (one step) and
  :meth:`~ClosedFormSchedule.lr_values` (any array of steps): the closed form
  itself, for plots, results files and tests;
* :meth:`~ClosedFormSchedule.in_graph`: the rate of every optimizer step of a
  run as a :class:`~davidnet.schedules.TabulatedSchedule`, for the optimizer;
* Keras's ``LearningRateSchedule`` interface: ``schedule(step)`` in the train
  step, so the object itself can be an optimizer's ``learning_rate``.

A schedule sets nothing by itself; :class:`~davidnet.schedules.ScheduleCallback`
sets it on the optimizer per batch, or records it when it is in the graph.

:class:`PiecewiseLinearSchedule` is here; the cyclical ones are in
:mod:`davidnet.schedules.cyclic`.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from davidnet.schedules.table import TabulatedSchedule

__all__ = ["ClosedFormSchedule", "PiecewiseLinearSchedule"]


def _check_steps_per_epoch(steps_per_epoch):
    if steps_per_epoch is None:
        return None
    if isinstance(steps_per_epoch, bool) or not float(steps_per_epoch).is_integer():
        raise ValueError(
            f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}."
        )
    steps_per_epoch = int(steps_per_epoch)
    if steps_per_epoch <= 0:
        raise ValueError(
            f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}."
        )
    return steps_per_epoch


def _check_total_steps(total_steps):
    if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")


class ClosedFormSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base class: the learning rate in closed form of the global step.

    Subclasses implement :meth:`_lr`, a vectorised closed form of the
    learning rate as a function of the global step (a float64 NumPy array of
    any shape, 0-d included), and ``get_config`` (their constructor's
    arguments). What is plotted (:meth:`lr_values`), trained with
    (:meth:`in_graph`, or the schedule itself as Keras's
    ``LearningRateSchedule``) and recorded by the callback is the same closed
    form.

    Args:
        steps_per_epoch: Optimizer steps per epoch, used by schedules defined
            in epochs.  ``None`` (default): not known yet;
            :class:`~davidnet.schedules.ScheduleCallback` takes it from ``fit``
            at the start of training.
        step_offset: 0: optimizer step ``k`` (from 0) trains with the closed
            form at ``k`` (PyTorch's schedulers, airbench); 1: at ``k + 1``
            (cifar10-fast, whose optimizer counts the step before it reads
            the schedule).  :meth:`lr_at` is always the closed form itself.

    Attributes:
        steps_per_epoch: The steps per epoch in effect (given, or learned
            from the last ``fit``), or ``None`` if not known yet.
        step_offset: 0 or 1, as given.
    """

    # Whether the closed form needs steps_per_epoch (schedules defined in
    # epochs).  Subclasses may override with a property.
    requires_steps_per_epoch = True

    def __init__(self, steps_per_epoch=None, step_offset=0):
        if step_offset not in (0, 1):
            raise ValueError(f"step_offset must be 0 or 1, got {step_offset!r}.")
        self.step_offset = int(step_offset)
        self._steps_per_epoch_arg = _check_steps_per_epoch(steps_per_epoch)
        self.steps_per_epoch = self._steps_per_epoch_arg
        self._call_table = None  # (key, TabulatedSchedule) behind __call__

    @property
    def _name(self) -> str:
        """The name the error messages give."""
        return type(self).__name__

    # ------------------------------------------------------------------ #
    # Closed form
    # ------------------------------------------------------------------ #
    def _lr(self, steps: np.ndarray) -> np.ndarray:
        """Vectorised LR for float64 global steps (any shape, 0-d included)."""
        raise NotImplementedError

    def _require_steps_per_epoch(self) -> int:
        if self.steps_per_epoch is None:
            raise ValueError(
                f"{self._name} needs steps_per_epoch: pass "
                "steps_per_epoch=... to the constructor, or use the callback "
                "in model.fit() on data of known length so it can be taken "
                "from fit's params['steps']."
            )
        return self.steps_per_epoch

    def resolve_steps_per_epoch(self, fit_steps):
        """Sets :attr:`steps_per_epoch` for a ``fit``: the one given to the
        constructor, else ``fit_steps`` (``fit``'s ``params["steps"]``, None
        when the data's length is unknown). Returns the value in effect."""
        if self._steps_per_epoch_arg is not None:
            self.steps_per_epoch = self._steps_per_epoch_arg
        else:
            self.steps_per_epoch = _check_steps_per_epoch(fit_steps) if fit_steps else None
        return self.steps_per_epoch

    def lr_at(self, step) -> float:
        """Learning rate at global step ``step`` (0 = first batch), as a float."""
        step = float(step)
        if not step >= 0:
            raise ValueError(f"step must be >= 0, got {step!r}.")
        return float(self._lr(np.asarray(step, dtype=np.float64)))

    def lr_values(self, steps) -> np.ndarray:
        """Learning rates for an array of global steps (same shape, float64).

        Equal elementwise to :meth:`lr_at`, since both evaluate the same
        closed form; meant for plots and results files.
        """
        steps = np.asarray(steps, dtype=np.float64)
        if steps.size and not np.all(steps >= 0):
            raise ValueError("steps must all be >= 0.")
        return np.asarray(self._lr(steps), dtype=np.float64).reshape(steps.shape)

    # ------------------------------------------------------------------ #
    # In the graph
    # ------------------------------------------------------------------ #
    def in_graph(self, total_steps) -> TabulatedSchedule:
        """The schedule as a Keras ``LearningRateSchedule`` for the optimizer,
        evaluated inside the compiled train step.

        The table holds ``lr_at(step + step_offset)`` for steps
        ``0 .. total_steps - 1``; later steps keep the last value.  Used in
        ``fit`` with a :class:`~davidnet.schedules.ScheduleCallback` that only
        records (the callbacks' own ``in_graph`` switches them to that).

        Args:
            total_steps: the optimizer steps of the whole run.

        Example:

        >>> schedule = PiecewiseLinearSchedule([0, 5, 24], [0, 0.4, 0], steps_per_epoch=97)
        >>> optimizer = keras.optimizers.SGD(learning_rate=schedule.in_graph(24 * 97))
        """
        _check_total_steps(total_steps)
        return self._tabulated(self.lr_values, total_steps)

    def momentum_in_graph(self, total_steps) -> TabulatedSchedule | None:
        """The momentum the schedule sets with the learning rate, as a schedule
        of the step for the optimizer (SGD's momentum, Adam's ``beta_1``), or
        None: only one-cycle has one."""
        return None

    def _tabulated(self, values, total_steps):
        """``values(step + step_offset)`` for steps ``0 .. total_steps - 1``, as a table in the graph."""
        return TabulatedSchedule(values(np.arange(int(total_steps)) + self.step_offset).tolist())

    def settles_at(self) -> float | None:
        """The global step from which the learning rate stays constant, or
        None if it never does (then only :meth:`in_graph`, with the run's
        length, puts the schedule in the graph)."""
        return None

    def __call__(self, step):
        """Keras's ``LearningRateSchedule``: the learning rate of optimizer step
        ``step`` in the train step, ``lr_at(step + step_offset)``.

        Looked up in :meth:`in_graph`'s table up to :meth:`settles_at`, so it
        is exactly that table's value at every step.  A schedule that never
        settles (``Cyclic``) raises a ValueError: give the optimizer
        ``in_graph(total_steps)`` instead.
        """
        end = self.settles_at()
        if end is None:
            raise ValueError(
                f"{self._name} never settles on a last learning rate, so as the optimizer's "
                "learning rate it needs the run's length: pass in_graph(total_steps) instead."
            )
        # Up to the first whole step past `end` (a float, perhaps rounded).
        total_steps = max(1, math.floor(end) + 2 - self.step_offset)
        key = (total_steps, self.step_offset, self.steps_per_epoch)
        if self._call_table is None or self._call_table[0] != key:
            self._call_table = (key, self.in_graph(total_steps))
        return self._call_table[1](step)

    # ------------------------------------------------------------------ #
    # Config
    # ------------------------------------------------------------------ #
    def get_config(self) -> dict:
        """Constructor arguments (``cls(**schedule.get_config())`` rebuilds it)."""
        return {"steps_per_epoch": self._steps_per_epoch_arg, "step_offset": self.step_offset}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="davidnet")
class PiecewiseLinearSchedule(ClosedFormSchedule):
    """Piecewise-linear learning rate through (epoch, LR) knots.

    ``lr_at(step) = np.interp(step / steps_per_epoch, knots, values)``: linear
    between knots, constant beyond the first and last knot.  Knots may be
    fractional epochs; a repeated knot gives a step change.  As a callback:
    :class:`~davidnet.schedules.PiecewiseLinear`.

    Args:
        knots: Non-decreasing epochs (at least 2).
        values: Learning rates (>= 0) at the knots, same length as ``knots``.
        steps_per_epoch: Optimizer steps per epoch; ``None``: taken from
            ``fit`` by the callback.
        step_offset: 0 or 1, see :class:`ClosedFormSchedule`.

    Example:

    DavidNet's schedule: linear warm-up from 0 to 0.4 over 5 epochs, then
    linear decay to 0 at epoch 24.

    >>> schedule = PiecewiseLinearSchedule([0, 5, 24], [0, 0.4, 0], steps_per_epoch=10)
    >>> [round(schedule.lr_at(s), 6) for s in (0, 25, 50, 145, 240, 1000)]
    [0.0, 0.2, 0.4, 0.2, 0.0, 0.0]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)  # in the train step
    """

    def __init__(self, knots: Sequence[float], values: Sequence[float], steps_per_epoch=None, step_offset=0):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        knots_a = np.asarray(knots, dtype=np.float64)
        values_a = np.asarray(values, dtype=np.float64)
        if knots_a.ndim != 1 or values_a.ndim != 1:
            raise ValueError("knots and values must be 1-D sequences of numbers.")
        if len(knots_a) != len(values_a):
            raise ValueError(
                f"knots and values must have the same length, got "
                f"{len(knots_a)} knots and {len(values_a)} values."
            )
        if len(knots_a) < 2:
            raise ValueError(f"need at least 2 knots, got {len(knots_a)}.")
        if not (np.all(np.isfinite(knots_a)) and np.all(np.isfinite(values_a))):
            raise ValueError("knots and values must be finite numbers.")
        if np.any(np.diff(knots_a) < 0):
            raise ValueError(f"knots must be non-decreasing, got {list(knots)}.")
        if np.any(values_a < 0):
            raise ValueError(f"learning rates must be >= 0, got {list(values)}.")
        self.knots = [float(k) for k in knots_a]
        self.values = [float(v) for v in values_a]
        self._knots_a = knots_a
        self._values_a = values_a

    def _lr(self, steps):
        epochs = steps / self._require_steps_per_epoch()
        return np.interp(epochs, self._knots_a, self._values_a)

    def settles_at(self):
        """The last knot's step: the last value from there on."""
        return max(0.0, self.knots[-1]) * self._require_steps_per_epoch()

    def get_config(self):
        return {"knots": list(self.knots), "values": list(self.values), **super().get_config()}
