"""`TabulatedSchedule`: a learning rate looked up per step from a table, in the graph.

What the optimizer gets from a schedule's ``in_graph(total_steps)``; saved
models name it (``davidnet>TabulatedSchedule``), so its registered name and
config stay as they are.
"""

import math

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="davidnet")
class TabulatedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate looked up per optimizer step from a table, in the graph.

    Any of our schedules becomes one through
    :meth:`~davidnet.schedules.ClosedFormSchedule.in_graph`, so the train
    step computes its own learning rate: the host never assigns it between
    steps, which keeps steps queued back to back on an accelerator (and lets
    a whole epoch run as one compiled loop). A table, not the formula in
    ``keras.ops``, so that every schedule (custom scale functions included)
    is exactly what its ``lr_at`` says; a 24-epoch run is a few thousand
    floats.

    Args:
        values: the learning rate at steps 0, 1, ...; steps past the end keep
            the last value.

    Example:

    >>> schedule = TabulatedSchedule([0.0, 0.1, 0.2])
    >>> [round(float(schedule(step)), 6) for step in (0, 2, 9)]
    [0.0, 0.2, 0.2]
    """

    def __init__(self, values):
        values = [float(v) for v in values]
        if not values or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"values must be a non-empty list of finite learning rates >= 0. Got: {values[:5]}...")
        self.values = values
        self._table = np.asarray(values, np.float32)

    def __call__(self, step):
        # A NumPy constant, converted in each trace: a cached backend tensor
        # would leak from one traced function into the next.
        index = keras.ops.clip(keras.ops.cast(step, "int32"), 0, len(self.values) - 1)
        return keras.ops.take(keras.ops.convert_to_tensor(self._table), index)

    def get_config(self):
        return {"values": self.values}
