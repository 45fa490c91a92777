"""Smith's cyclical schedules as plain objects: cyclical learning rates and one-cycle.

* :class:`CyclicSchedule` - "Cyclical Learning Rates for Training Neural
  Networks" (triangular, triangular2, exp_range, or a custom scale function);
* :class:`OneCycleSchedule` - the one-cycle policy as PyTorch's
  ``OneCycleLR(three_phase=False)``, with its momentum.

Both are plain :class:`~davidnet.schedules.ClosedFormSchedule` subclasses; their
callbacks are :class:`~davidnet.schedules.Cyclic` and :class:`~davidnet.schedules.OneCycle`.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from davidnet.schedules.closed_form import ClosedFormSchedule
from davidnet.schedules.expressions import _quoted, describe_scale_problem, scale_fn_from_expression, scale_problem
from davidnet.schedules.table import TabulatedSchedule

__all__ = ["CyclicSchedule", "OneCycleSchedule"]


def _apply_elementwise(fn, arr):
    """Call a user scale function on an array, one element at a time if needed."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 0:
        return np.float64(fn(float(arr)))
    try:
        out = np.asarray(fn(arr), dtype=np.float64)
        if out.shape == arr.shape:
            return out
    except Exception:
        # e.g. lambda x: math.sin(x), which only takes scalars.
        pass
    return np.array([fn(float(v)) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)


@keras.saving.register_keras_serializable(package="davidnet")
class CyclicSchedule(ClosedFormSchedule):
    """Cyclical learning rate (Smith, 2017).

    Implements "Cyclical Learning Rates for Training Neural Networks"
    (L. N. Smith, WACV 2017) with the global step ``it`` (iterations)::

        cycle = floor(1 + it / (2 * step_size))
        x     = |it / step_size - 2 * cycle + 1|
        lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale

    where ``scale`` is 1 (``"triangular"``), ``1 / 2**(cycle - 1)``
    (``"triangular2"``), ``gamma**it`` (``"exp_range"``), or, if ``scale_fn``
    is given (which then overrides ``mode``), ``scale_fn(cycle)`` or
    ``scale_fn(it)`` according to ``scale_mode``.  As a callback:
    :class:`~davidnet.schedules.Cyclic`.  It never settles on a last value,
    so the optimizer takes it as ``in_graph(total_steps)``.

    Args:
        base_lr: Lower LR bound (start of each cycle).
        max_lr: Upper LR bound (reached at ``step_size``, ``3*step_size``,
            ...; only exactly for the ``"triangular"`` mode).
        step_size: Iterations in half a cycle (Smith suggests 2-10 epochs'
            worth of steps).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: Per-iteration decay of the amplitude for ``"exp_range"``.
        scale_fn: Custom amplitude scaling: a callable of one argument, or a
            formula string in ``x`` compiled with
            :func:`scale_fn_from_expression` (strings keep ``get_config``
            serialisable).
        scale_mode: ``"cycle"`` (``scale_fn`` gets the cycle number, from 1)
            or ``"iterations"`` (it gets the global step).
        steps_per_epoch: Not needed by the formula (which is in iterations);
            kept for a uniform interface.
        step_offset: 0 or 1, see :class:`ClosedFormSchedule`.

    Example:

    >>> clr = CyclicSchedule(base_lr=0.001, max_lr=0.006, step_size=2000,
    ...                      mode="triangular2")
    >>> [round(clr.lr_at(s), 6) for s in (0, 2000, 4000, 6000)]
    [0.001, 0.006, 0.001, 0.0035]
    >>> sine = CyclicSchedule(0.001, 0.006, 2000,
    ...                       scale_fn="0.5*(1+sin(x*pi/2))", scale_mode="cycle")
    >>> optimizer = keras.optimizers.SGD(learning_rate=sine.in_graph(8000))
    """

    MODES = ("triangular", "triangular2", "exp_range")
    SCALE_MODES = ("cycle", "iterations")
    requires_steps_per_epoch = False

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size: float,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable | str | None = None,
        scale_mode: str = "cycle",
        steps_per_epoch=None,
        step_offset=0,
    ):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        if mode not in self.MODES:
            raise ValueError(
                f"Unknown mode {mode!r}; allowed modes are {', '.join(map(repr, self.MODES))} "
                "(or pass scale_fn for a custom scaling)."
            )
        if scale_mode not in self.SCALE_MODES:
            raise ValueError(
                f"Unknown scale_mode {scale_mode!r}; allowed: {', '.join(map(repr, self.SCALE_MODES))}."
            )
        if not float(step_size) > 0:
            raise ValueError(f"step_size must be > 0 iterations, got {step_size!r}.")
        if not (float(base_lr) >= 0 and float(max_lr) >= 0):
            raise ValueError(f"learning rates must be >= 0, got base_lr={base_lr!r}, max_lr={max_lr!r}.")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}.")
        if scale_fn is not None and not (callable(scale_fn) or isinstance(scale_fn, str)):
            raise ValueError(
                f"scale_fn must be a callable or a formula string, got {type(scale_fn).__name__}."
            )
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.step_size = float(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self._scale_callable = (
            scale_fn_from_expression(scale_fn) if isinstance(scale_fn, str) else scale_fn
        )

    def _lr(self, steps):
        it = steps
        cycle = np.floor(1.0 + it / (2.0 * self.step_size))
        x = np.abs(it / self.step_size - 2.0 * cycle + 1.0)
        if self._scale_callable is not None:
            arg = cycle if self.scale_mode == "cycle" else it
            scale = _apply_elementwise(self._scale_callable, arg)
            found = scale_problem(scale, np.broadcast_to(arg, np.shape(scale)))
            if found:  # a rate of inf, nan or below 0 would poison the run (the table in the graph is every step's)
                name = _quoted(self.scale_fn) if isinstance(self.scale_fn, str) else getattr(self.scale_fn, "__name__", "scale_fn")
                raise ValueError(f"{self._name}: the scale function {name} fails: {describe_scale_problem(*found)}")
        elif self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / 2.0 ** (cycle - 1.0)
        else:  # exp_range
            scale = self.gamma**it
        return self.base_lr + (self.max_lr - self.base_lr) * np.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "scale_fn": self.scale_fn,
            "scale_mode": self.scale_mode,
            **super().get_config(),
        }



@keras.saving.register_keras_serializable(package="davidnet")
class OneCycleSchedule(ClosedFormSchedule):
    """One-cycle learning rate and momentum (Smith), as PyTorch's ``OneCycleLR``.

    With ``T`` total steps and ``W = pct_start * T - 1``: the LR rises from
    ``max_lr / div_factor`` at step 0 to ``max_lr`` at step ``W``, then
    anneals to ``max_lr / (div_factor * final_div_factor)`` at step ``T - 1``
    and stays there.  Both phases use the same annealing curve: cosine
    (``end + (start - end) * (1 + cos(pi * p)) / 2``) or linear, with ``p``
    the fraction of the phase done.  The momentum goes the other way, from
    ``max_momentum`` down to ``base_momentum`` at ``W`` and back up at
    ``T - 1`` (:meth:`momentum_values`; Adam's ``beta_1`` in PyTorch).  This
    is PyTorch's ``OneCycleLR`` (``three_phase=False``) step for step: its
    optimizer step ``k`` (from 0) uses the schedule at ``k``.  As a callback:
    :class:`~davidnet.schedules.OneCycle`.

    Args:
        max_lr: Peak learning rate.
        total_steps: Length of the cycle in optimizer steps.  Give either
            this or ``epochs``.
        epochs: Length of the cycle in epochs (may be fractional); needs
            ``steps_per_epoch``, given here or taken from ``fit``.
        pct_start: Fraction of the cycle spent warming up, in ``[0, 1)``.
        anneal: ``"cos"`` or ``"linear"``.
        div_factor: Initial LR is ``max_lr / div_factor``.
        final_div_factor: Final LR is ``max_lr / (div_factor *
            final_div_factor)``.
        base_momentum, max_momentum: the momentum's range (PyTorch: 0.85
            and 0.95).
        steps_per_epoch: Optimizer steps per epoch (only used with
            ``epochs``); ``None``: taken from ``fit`` by the callback.
        step_offset: 0 or 1, see :class:`ClosedFormSchedule`.

    Example:

    ResNet-9 with Adam and gradient clipping, one cycle over 8 epochs:

    >>> sched = OneCycleSchedule(max_lr=0.01, epochs=8, steps_per_epoch=100,
    ...                          pct_start=0.25)
    >>> sched.total_steps
    800
    >>> [round(sched.lr_at(s), 8) for s in (0, 199, 799)]
    [0.0004, 0.01, 4e-08]
    >>> [round(float(m), 4) for m in sched.momentum_values([0, 199, 799])]
    [0.95, 0.85, 0.95]
    >>> optimizer = keras.optimizers.Adam(learning_rate=sched, clipnorm=0.1)  # in the train step
    """

    ANNEALS = ("cos", "linear")

    def __init__(
        self,
        max_lr: float,
        total_steps: int | None = None,
        epochs: float | None = None,
        pct_start: float = 0.25,
        anneal: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        steps_per_epoch=None,
        step_offset=0,
    ):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        if (total_steps is None) == (epochs is None):
            raise ValueError(
                "OneCycle needs exactly one of total_steps (optimizer steps) or "
                f"epochs (with steps_per_epoch); got total_steps={total_steps!r}, "
                f"epochs={epochs!r}."
            )
        if total_steps is not None and (
            isinstance(total_steps, bool)
            or not float(total_steps).is_integer()
            or int(total_steps) <= 0
        ):
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
        if epochs is not None and not float(epochs) > 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}.")
        if not float(max_lr) > 0:
            raise ValueError(f"max_lr must be > 0, got {max_lr!r}.")
        if not 0.0 <= float(pct_start) < 1.0:
            raise ValueError(f"pct_start must be in [0, 1), got {pct_start!r}.")
        if anneal not in self.ANNEALS:
            raise ValueError(
                f"Unknown anneal {anneal!r}; allowed: {', '.join(map(repr, self.ANNEALS))}."
            )
        if not (float(div_factor) > 0 and float(final_div_factor) > 0):
            raise ValueError(
                "div_factor and final_div_factor must be > 0, got "
                f"{div_factor!r} and {final_div_factor!r}."
            )
        if not 0.0 <= float(base_momentum) <= float(max_momentum) < 1.0:
            raise ValueError(
                f"need 0 <= base_momentum <= max_momentum < 1, got {base_momentum!r} and {max_momentum!r}."
            )
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.max_lr = float(max_lr)
        self._total_steps_arg = None if total_steps is None else int(total_steps)
        self.epochs = None if epochs is None else float(epochs)
        self.pct_start = float(pct_start)
        self.anneal = anneal
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.initial_lr = self.max_lr / self.div_factor
        self.final_lr = self.initial_lr / self.final_div_factor

    @property
    def requires_steps_per_epoch(self):
        return self._total_steps_arg is None

    @property
    def total_steps(self) -> int:
        """Cycle length in optimizer steps (from ``epochs`` if needed)."""
        if self._total_steps_arg is not None:
            return self._total_steps_arg
        return max(1, int(round(self.epochs * self._require_steps_per_epoch())))

    def _anneal(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1.0)
        return start + (end - start) * pct

    def _phases(self, steps, start, middle, end):
        """``start`` -> ``middle`` over steps 0 .. W, ``middle`` -> ``end`` over
        W .. T - 1, as PyTorch's ``get_lr``; ``end`` after T - 1."""
        steps = np.asarray(steps, dtype=np.float64)
        peak = self.pct_start * self.total_steps - 1.0
        last = self.total_steps - 1.0
        # Guarded divisions: a warm-up of at most one step is no warm-up.
        up = self._anneal(start, middle, np.clip(steps / max(peak, 1e-12), 0.0, 1.0))
        down = self._anneal(middle, end, np.clip((steps - peak) / max(last - peak, 1e-12), 0.0, 1.0))
        return np.where(steps <= peak, up, down) if peak > 0 else down

    def _lr(self, steps):
        return self._phases(steps, self.initial_lr, self.max_lr, self.final_lr)

    def settles_at(self):
        """The cycle's last step: the final learning rate from there on."""
        return self.total_steps - 1.0

    def momentum_values(self, steps) -> np.ndarray:
        """The momentum (Adam's ``beta_1``) at each global step: max -> base -> max."""
        return self._phases(steps, self.max_momentum, self.base_momentum, self.max_momentum)

    def momentum_in_graph(self, total_steps) -> TabulatedSchedule:
        """:meth:`momentum_values` in the graph (SGD's momentum, Adam's ``beta_1``)."""
        return self._tabulated(self.momentum_values, total_steps)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self._total_steps_arg,
            "epochs": self.epochs,
            "pct_start": self.pct_start,
            "anneal": self.anneal,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            **super().get_config(),
        }
