"""The run's own callbacks: the per-epoch report (line, divergence, checkpoint,
results folder) and the progress bar that keeps dispatch asynchronous."""

import threading

import keras

from davidnet import interrupts
from davidnet.checkpoint import save_checkpoint
from davidnet.results import collect_results, write_results
from pipelines import keras_private


class EpochReport(keras.callbacks.Callback):
    """After every epoch: prints its line, stops a diverged run, checkpoints
    the model (unless that is off or the weights are NaN) and rewrites the
    results folder, so a run killed at any point keeps its history.

    `writes=False` (the processes of a multi-process run but process 0):
    the same lines and the same decisions, no files. `agreed_stop` (a
    multi-process run): called by every process after each epoch, returns the
    signal that any of them received, if any; then they all stop there."""

    def __init__(self, timer, lr_callback, run_info, results_dir, epochs, checkpoint=True, verbose=True, writes=True):
        super().__init__()
        self.timer = timer
        self.lr_callback = lr_callback
        self.run_info = run_info
        self.results_dir = results_dir
        self.total_epochs = epochs
        self.checkpoint = checkpoint
        self.verbose = verbose
        self.writes = writes
        self.agreed_stop = None
        self.stopped_by = None  # the signal that stopped a multi-process run after this epoch
        self.diverged = None
        self.checkpointed = 0  # the last epoch whose checkpoint is on disk

    def on_epoch_end(self, epoch, logs=None):
        record = self.timer.epochs[-1]
        lr = self.lr_callback.history[-1][1] if self.lr_callback.history else float("nan")
        loss = record.get("loss")
        if not isinstance(loss, float):  # NaN or inf were stored as strings
            self.diverged = {"epoch": epoch + 1, "lr": lr, "loss": loss}
            self.model.stop_training = True
            print(f"diverged: training loss is {loss} at epoch {epoch + 1} (learning rate {lr:.4g}); stopping this run")
        elif self.verbose:
            test = record.get("val_accuracy")
            test = f"{test:.4f}" if isinstance(test, float) else "  -   "
            print(
                f"epoch {epoch + 1:3d}/{self.total_epochs}  lr {lr:.4f}  "
                f"train loss {loss:.4f} acc {record.get('accuracy', float('nan')):.4f}  "
                f"test acc {test}  train {self.timer.train_s:7.2f}s  wall {record['wall_s']:7.2f}s",
                flush=True,
            )
        results = collect_results(self.run_info, self.timer, self.lr_callback, "running", self.diverged)
        with interrupts.deferred():  # Ctrl-C and SIGTERM wait until the files are whole
            if self.checkpoint and not self.diverged:
                # Process 0's checkpoint is the run's: the others resume from it too.
                save_checkpoint(self.model, self.results_dir, epoch + 1, results, write=self.writes)
                self.checkpointed = epoch + 1
            if self.writes:
                write_results(self.results_dir, results, plots=False)
        if self.agreed_stop is not None and not self.diverged:
            self.stopped_by = self.agreed_stop()
            self.model.stop_training = self.model.stop_training or bool(self.stopped_by)



@keras_private.async_safe
class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, made safe for asynchronous dispatch.

    A callback with its own `on_train_batch_end` makes Keras convert every
    step's logs to Python floats on the main thread before the next step is
    dispatched: the host then waits for the accelerator at every step. Marked
    `async_safe`, the bar is updated from Keras's worker threads instead,
    while the main thread keeps queueing steps; the lock and the step check
    keep the updates in order.
    """

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._shown = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._shown = -1
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        with self._lock:
            if batch > self._shown:  # a later step's update may have come first
                self._shown = batch
                super().on_train_batch_end(batch, logs)
