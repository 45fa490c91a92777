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

from davidnet.schedules.callback import Cyclic, LearningRateCallback, OneCycle, PiecewiseLinear, ScheduleCallback
from davidnet.schedules.closed_form import ClosedFormSchedule, PiecewiseLinearSchedule
from davidnet.schedules.cyclic import CyclicSchedule, OneCycleSchedule
from davidnet.schedules.expressions import scale_fn_from_expression
from davidnet.schedules.plot import plot_schedules
from davidnet.schedules.table import TabulatedSchedule

__all__ = [
    "LearningRateCallback",
    "TabulatedSchedule",
    "PiecewiseLinear",
    "Cyclic",
    "OneCycle",
    "scale_fn_from_expression",
    "plot_schedules",
    "ClosedFormSchedule",
    "PiecewiseLinearSchedule",
    "CyclicSchedule",
    "OneCycleSchedule",
    "ScheduleCallback",
]
