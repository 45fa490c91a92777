"""`plot_schedules`: several schedules' learning rate against the step, in one PNG."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from davidnet.schedules.callback import ScheduleCallback
from davidnet.schedules.closed_form import ClosedFormSchedule, _check_total_steps

__all__ = ["plot_schedules"]


def plot_schedules(
    callbacks: Mapping[str, ClosedFormSchedule | ScheduleCallback], total_steps: int, path
) -> str:
    """Plot several schedules' LR against the global step into one PNG.

    Args:
        callbacks: Mapping from legend label to schedule (a plain schedule or
            a schedule's callback).  Schedules defined in epochs must know
            their ``steps_per_epoch``.
        total_steps: Plot steps ``0 .. total_steps - 1``.
        path: Output file (PNG); parent directories are created.

    Returns:
        ``path`` as a string.

    Example:

    >>> from davidnet.schedules import PiecewiseLinear, OneCycle, plot_schedules
    >>> plot_schedules(
    ...     {"davidnet": PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=98),
    ...      "one-cycle": OneCycle(0.4, total_steps=24 * 98)},
    ...     total_steps=24 * 98, path="/tmp/schedules.png")
    '/tmp/schedules.png'
    """
    if not callbacks:
        raise ValueError("plot_schedules needs at least one schedule.")
    _check_total_steps(total_steps)
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    steps = np.arange(int(total_steps))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for label, callback in callbacks.items():
            schedule = callback.schedule if isinstance(callback, ScheduleCallback) else callback
            ax.plot(steps, schedule.lr_values(steps), label=str(label))
        ax.set_xlabel("global step")
        ax.set_ylabel("learning rate")
        ax.set_xlim(0, max(int(total_steps) - 1, 1))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path
