"""Seconds-to-target: the `TimeToAccuracy` callback.

What is timed, and why so:
- `compile_s`: the first train step of the run, which on every backend is
  tracing plus XLA/graph compilation plus one step. Kept apart because it is
  a per-process cost (a persistent compilation cache removes most of it).
- `train_s`: the rest of the training time, evaluation excluded, as
  cifar10-fast and DAWNBench's fastest entries report it.
- `eval_s`: the test evaluations (the first includes compiling the test step).
- `wall_s`: everything from `on_train_begin` to `on_train_end`.
Accelerators run asynchronously, so before the train clock stops the callback
waits for the device once per epoch (reading a variable); per step it reads
nothing, so the device pipeline stays full. It has no `on_train_batch_end`:
Keras dispatches batch-end callbacks asynchronously only when none of them
overrides it, and otherwise converts every step's logs to floats, a
device-to-host wait per step. The first step is timed at the start of the
second (or at the end of the epoch, for an epoch of one step).

A run warmed up before `fit` (compiled on dummy data, see
`davidnet.training.warm_up`) reports that time through `set_compile_time`,
and its first step then counts as training.
"""

import math
import time

import keras
from keras import ops


class TimeToAccuracy(keras.callbacks.Callback):
    """Records per-epoch timings and the first epoch at which test accuracy
    reaches `target`.

    Use it with `model.fit(..., validation_data=test_set)`: Keras's validation
    pass is the test evaluation, and this callback times it separately.

    Args:
        target: the accuracy to reach (0.94 for DAWNBench).
        monitor: the log key holding test accuracy.
        clock: a function returning seconds (for tests).

    Attributes after training:
        epochs: one dict per epoch: epoch (1-based), train_s (this epoch),
            eval_s, train_s_total (cumulative), wall_s (since train begin),
            and the epoch's Keras logs (loss, accuracy, val_accuracy, ...).
        compile_s, train_s, eval_s, wall_s: totals.
        target_epoch, seconds_to_target, wall_to_target_s: None until reached.

    Example:
    ```python
    timer = TimeToAccuracy(target=0.94)
    model.fit(feed, epochs=24, validation_data=(x_test, y_test), callbacks=[timer])
    print(timer.target_epoch, timer.seconds_to_target)
    ```
    """

    def __init__(self, target=0.94, monitor="val_accuracy", clock=time.perf_counter):
        super().__init__()
        self.target = target
        self.monitor = monitor
        self.clock = clock
        self.epochs = []
        self.compile_s = None
        self.train_s = 0.0
        self.eval_s = 0.0
        self.wall_s = 0.0
        self.target_epoch = None
        self.seconds_to_target = None
        self.wall_to_target_s = None
        self._in_epoch = False
        self._previous_compile_s = 0.0
        self._first_step_begin = None

    def on_train_begin(self, logs=None):
        self._train_begin = self.clock() - self.wall_s  # a resumed fit continues the clock

    def on_epoch_begin(self, epoch, logs=None):
        self._in_epoch = True
        self._epoch_begin = self.clock()
        self._epoch_eval_s = 0.0
        self._epoch_compile_s = 0.0

    def set_compile_time(self, seconds):
        """Compilation done before `fit` (a warm-up): recorded as `compile_s`,
        and the first step of `fit` is then timed as training."""
        self.compile_s = self._previous_compile_s + seconds
        self._first_step_begin = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.compile_s is not None:
            return
        if self._first_step_begin is None:
            self._first_step_begin = self.clock()
        else:
            self._end_first_step()

    def _end_first_step(self):
        self._wait_for_device()
        self._epoch_compile_s = self.clock() - self._first_step_begin
        self.compile_s = self._previous_compile_s + self._epoch_compile_s

    def on_test_begin(self, logs=None):
        if self._in_epoch and self.compile_s is None and self._first_step_begin is not None:
            self._end_first_step()  # an epoch of one step
        if self._in_epoch:
            self._wait_for_device()  # training must not leak into the eval clock
        self._test_begin = self.clock()

    def on_test_end(self, logs=None):
        if self._in_epoch:
            self._epoch_eval_s += self.clock() - self._test_begin

    def on_epoch_end(self, epoch, logs=None):
        if self.compile_s is None and self._first_step_begin is not None:
            self._end_first_step()  # an epoch of one step
        self._wait_for_device()
        now = self.clock()
        self._in_epoch = False
        train_s = now - self._epoch_begin - self._epoch_eval_s - self._epoch_compile_s
        self.train_s += train_s
        self.eval_s += self._epoch_eval_s
        self.wall_s = now - self._train_begin
        record = {
            "epoch": epoch + 1,
            "train_s": train_s,
            "eval_s": self._epoch_eval_s,
            "train_s_total": self.train_s,
            "wall_s": self.wall_s,
            **{key: _to_float(value) for key, value in (logs or {}).items()},
        }
        self.epochs.append(record)
        accuracy = record.get(self.monitor)
        if self.target_epoch is None and isinstance(accuracy, float) and accuracy >= self.target:
            self.target_epoch = epoch + 1
            self.seconds_to_target = self.train_s
            self.wall_to_target_s = self.wall_s

    def on_train_end(self, logs=None):
        self.wall_s = self.clock() - self._train_begin

    def record_final_evaluation(self, logs, eval_s):
        """Puts an evaluation made after `fit` (`logs`: Keras's evaluate dict,
        `eval_s`: its seconds) in the last epoch's record, replacing fit's
        own if there was one (lookahead's slow weights), and times the target
        on it: reached there, or no longer reached there."""
        record = self.epochs[-1]
        record.update({f"val_{key}": _to_float(value) for key, value in logs.items()}, eval_s=record["eval_s"] + eval_s)
        self.eval_s += eval_s
        accuracy = record.get(self.monitor)
        reached = isinstance(accuracy, float) and accuracy >= self.target
        if self.target_epoch == record["epoch"] and not reached:
            self.target_epoch = self.seconds_to_target = self.wall_to_target_s = None  # the slow weights fell short
        if self.target_epoch is None and reached:
            self.target_epoch = record["epoch"]
            self.seconds_to_target = self.train_s
            self.wall_to_target_s = record["wall_s"]

    def restore(self, results):
        """Continues the timings of an interrupted run (its results dict): the
        history, totals and target carry over, and this session's first step,
        compiled again, adds to `compile_s`. Downtime between the sessions is
        counted nowhere."""
        self.epochs = [dict(record) for record in results["history"]]
        for key in ("train_s", "eval_s", "wall_s", "target_epoch", "seconds_to_target", "wall_to_target_s"):
            setattr(self, key, results[key])
        self._previous_compile_s = results["compile_s"] or 0.0
        self.compile_s = None
        self._first_step_begin = None

    def _wait_for_device(self):
        # Reading a value back blocks until the steps that produce it are done.
        ops.convert_to_numpy(self.model.optimizer.iterations)

    def summary(self):
        """The totals and the target, as a dict for results files."""
        return {
            "target": self.target,
            "target_epoch": self.target_epoch,
            "seconds_to_target": self.seconds_to_target,
            "wall_to_target_s": self.wall_to_target_s,
            "compile_s": self.compile_s,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            "wall_s": self.wall_s,
        }


def _to_float(value):
    value = float(ops.convert_to_numpy(value))
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf
