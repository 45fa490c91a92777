"""Learning-rate schedules: plain closed-form schedules, and callbacks that set or record them.

Three jobs, in three places:

* **The schedule** (:mod:`~davidnet.schedules.closed_form`,
  :mod:`~davidnet.schedules.cyclic`): a plain object, the learning rate in
  closed form of the global step (NumPy, float64):
  :meth:`~ClosedFormSchedule.lr_at` for one step,
  :meth:`~ClosedFormSchedule.lr_values` for any array of steps (what is
  plotted is exactly what is trained with).  Each is also a Keras
  ``LearningRateSchedule``: ``keras.optimizers.SGD(learning_rate=schedule)``
  computes the rate in the train step.

  * :class:`PiecewiseLinearSchedule` - linear interpolation between (epoch,
    LR) knots; DavidNet uses ``[0, 5, 24], [0, 0.4, 0]``.
  * :class:`CyclicSchedule` - Smith's cyclical learning rates (triangular,
    triangular2, exp_range or a custom amplitude scaling).
  * :class:`OneCycleSchedule` - Smith's one-cycle policy as in fastai /
    PyTorch ``OneCycleLR(three_phase=False)``, with its momentum.

* **The table in the graph** (:mod:`~davidnet.schedules.table`):
  :meth:`~ClosedFormSchedule.in_graph` gives the rate of every step of a run
  as a :class:`TabulatedSchedule`, which the optimizer evaluates inside the
  compiled train step; saved models name it.

* **The callback** (:mod:`~davidnet.schedules.callback`):
  :class:`ScheduleCallback` sets the schedule's rate on the optimizer before
  every batch, or, when the schedule is in the graph, only records it; its
  ``history`` has every step's rate and the epoch logs the epoch's last.
  :class:`PiecewiseLinear`, :class:`Cyclic` and :class:`OneCycle` are the
  schedules and their callbacks in one object (subclasses of
  :class:`LearningRateCallback`), as ``fit(callbacks=[...])`` and the
  training engine use them.

:func:`scale_fn_from_expression` (:mod:`~davidnet.schedules.expressions`)
safely turns a command-line string such as ``"0.5*(1+sin(x*pi/2.5))"`` into
a scale function for :class:`Cyclic`, and :func:`plot_schedules`
(:mod:`~davidnet.schedules.plot`) draws several schedules into one PNG.
"""

import importlib

# Name -> the submodule that defines it, imported on first use (PEP 562): the
# formulas of `expressions` are NumPy only, so the command line checks a
# --scale-fn before Keras loads.
_WHERE = {
    "LearningRateCallback": "callback",
    "ScheduleCallback": "callback",
    "PiecewiseLinear": "callback",
    "Cyclic": "callback",
    "OneCycle": "callback",
    "ClosedFormSchedule": "closed_form",
    "PiecewiseLinearSchedule": "closed_form",
    "CyclicSchedule": "cyclic",
    "OneCycleSchedule": "cyclic",
    "scale_fn_from_expression": "expressions",
    "plot_schedules": "plot",
    "TabulatedSchedule": "table",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'davidnet.schedules' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"davidnet.schedules.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
