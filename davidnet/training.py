"""Training a CIFAR-10 classifier from a `Config`: the shared engine of the experiments.

`train(config, data, results_dir)` assembles the run (`davidnet.builders.
assemble_run`: model, feed, optimizer, schedule), runs `model.fit` with the
timer and the report (`davidnet.callbacks`), and writes the results folder
after every epoch (so an interrupted run keeps its history) and in full at the
end (`davidnet.results`).
"""

import dataclasses

import keras
import numpy as np

from davidnet import hardware, scan
from davidnet.builders import assemble_run, set_precision
from davidnet.callbacks import EpochReport, ProgressBar
from davidnet.checkpoint import load_checkpoint, remove_checkpoint
from davidnet.config import Config  # noqa: F401  (train's argument; imported from here by older code)
from davidnet.distribute import data_parallel
from davidnet.precompile import feed_example, precompile
from davidnet.results import check_writable, collect_results, write_results
from davidnet.timing import TimeToAccuracy
from davidnet.tta import tta_model
from pipelines import keras_private
from pipelines.cifar10 import resolve_target as resolve_data_target
from pipelines.feeds import DeviceFeed

EVAL_BATCH = 1000  # test images per evaluation step


class ResumeError(ValueError):
    """Nothing to resume, or a run that cannot be resumed; one line."""


def train(config, data, results_dir, host_augment=None, resume=False, callbacks=()):
    """Trains per `config` on `data` and writes `results_dir`.

    Args:
        config: a `Config`.
        data: a `pipelines.cifar10.Cifar10`.
        results_dir: the run's folder (created if missing).
        host_augment: optional `f(uint8 images NHWC) -> uint8 images` applied
            to each training batch on the host in the tf.data feed (an imgaug
            `Sequential`, an albumentations pipeline over a batch, NumPy code).
        resume: continue the run in `results_dir` from its last checkpoint
            (model, optimizer, schedule position, history and timings).
        callbacks: more Keras callbacks for `fit` (e.g. `keras.callbacks.TensorBoard`).

    Returns:
        The results dict (also in results.json). Its status is "completed",
        "diverged", or "interrupted" (Ctrl-C; the checkpoint stays for --resume).

    Raises:
        MemoryError: the data or a batch does not fit the accelerator (the
            message names the sizes; results so far are written first).
        ValueError: among others, more `config.devices` than exist, or a batch
            size that does not split across them.
    """
    # Model, optimizer, feed and fit all inside the distribution (devices "1": none).
    with data_parallel(config.devices, config.batch_size) as devices:
        return _train(config, data, results_dir, host_augment, resume, callbacks, devices)


def _train(config, data, results_dir, host_augment, resume, callbacks, devices):
    results_dir = check_writable(results_dir)  # before any training, not after it
    state = load_checkpoint(results_dir) if resume else None
    if resume and state is None:
        raise ResumeError(
            f"nothing to resume in {results_dir}: no checkpoint there (runs save one after "
            "each epoch unless --no-checkpoint); start the run without --resume"
        )
    keras.utils.set_random_seed(config.seed)
    precision = set_precision(config.precision)
    print(hardware.device_line(precision, devices))
    warning = hardware.unseen_gpu_warning()
    if warning:
        print(warning)
    target, target_line = resolve_target(config, data)
    print(target_line)
    loop = resolve_loop(config)
    num_classes = len(data.class_names)
    run = assemble_run(config, data, host_augment=host_augment, scan=loop == "scan")
    model, feed, lr_callback, x_train = run.model, run.feed, run.lr_callback, run.x_train
    timer = TimeToAccuracy(target=target)
    run_info = {
        "config": dataclasses.asdict(config),
        "precision": precision,
        **hardware.describe(),
        "devices": devices,  # used for data parallelism (device_count: all there are)
        "data": {
            "source": data.source,
            "image_format": data.image_format,
            "train_images": len(x_train),
            "test_images": len(data.x_test),
            "jpeg_copy": data.image_format == "jpeg",
        },
        "target_note": target_line,  # which accuracy is timed, and why (results' "target" is the value)
        "model_params": model.count_params(),
        "loop": loop,
        "steps_per_epoch": run.steps_per_epoch,
        "resumed": [],
    }
    initial_epoch = 0
    if state is not None:
        initial_epoch = _restore(model, state, timer, lr_callback, run_info)
        print(f"resuming {results_dir} after epoch {initial_epoch} of {config.epochs}")
    report = EpochReport(timer, lr_callback, run_info, results_dir, config.epochs, config.checkpoint)
    y_test = np.eye(num_classes, dtype="float32")[data.y_test]
    if loop == "scan":
        scan.install(model, feed)
    tta = tta_model(model, config.tta) if config.tta else None
    if config.precompile and keras.backend.backend() != "jax":
        print(f"note: --precompile compiles JAX steps; on {keras.backend.backend()} compile_s is the first step's time instead")
    elif config.precompile:
        if not model.optimizer.built:
            # Compiling needs the model built. fit would build it on a batch
            # drawn from the feed, which starts an epoch of it: the device feed
            # draws that permutation here too, so a precompiled run trains on
            # the same batches as a plain one.
            keras_private.build_on_batch(model, feed_example(feed))
            if isinstance(feed, DeviceFeed):
                feed.on_epoch_begin()
        timer.set_compile_time(precompile(model, feed, data.x_test[:EVAL_BATCH], y_test[:EVAL_BATCH], tta))
    # Our own progress bar, listed before the report, so the bar's line is
    # finished before the epoch line is printed.
    progress = [ProgressBar()] if config.verbose else []
    status = None
    try:
        model.fit(
            feed,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            validation_data=(data.x_test, y_test) if config.eval_every else None,
            validation_freq=config.eval_every or 1,
            validation_batch_size=EVAL_BATCH,
            shuffle=False,  # the feeds shuffle once per epoch themselves
            callbacks=[lr_callback, timer, *progress, report, *callbacks],
            verbose=config.verbose,
        )
    except KeyboardInterrupt:
        status = "interrupted"
        print(f"\ninterrupted after epoch {len(timer.epochs)}; continue with --resume --results-dir {results_dir}")
    except Exception as e:
        if not hardware.is_out_of_memory(e):
            raise
        per_step = config.batch_size * config.copies
        results = collect_results(run_info, timer, lr_callback, "out_of_memory", report.diverged)
        write_results(results_dir, {**results, "error": str(e).splitlines()[0][:500]})
        raise MemoryError(
            f"out of memory on the accelerator at batch size {config.batch_size}"
            + (f" x {config.copies} copies = {per_step} images per step" if config.copies > 1 else "")
            + ": lower --batch-size (results so far are in the results folder)"
        ) from None
    if status is None:
        # Lookahead ends fit by loading its slow weights, after fit's last evaluation.
        if timer.epochs and ("val_accuracy" not in timer.epochs[-1] or config.lookahead):
            _evaluate_last_epoch(model, timer, data.x_test, y_test)
        status = "diverged" if report.diverged else "completed"
    results = collect_results(run_info, timer, lr_callback, status, report.diverged)
    if tta is not None and status == "completed":
        results.update(evaluate_with_tta(tta, config.tta, data.x_test, data.y_test, timer.clock))
    write_results(results_dir, results)
    if status == "completed" and config.save_model:
        model.save(results_dir / "model.keras")
    if status != "interrupted":
        remove_checkpoint(results_dir)  # finished: model.keras and results.json hold it
    return results


def resolve_target(config, data):
    """(the accuracy to time, the line that says which and why): `config.target`,
    or when None the data's equivalent of DAWNBench's 94% (0.91 on the JPEG copy)."""
    return resolve_data_target(config.target, data.image_format)


def resolve_loop(config):
    """--loop auto: the scanned loop on JAX with a GPU and the device feed
    (on a CPU XLA runs it slower, see `davidnet.scan`), Keras's fit elsewhere."""
    if config.loop != "auto":
        return config.loop
    device_feed = config.pipeline == "device" or (config.pipeline == "auto" and keras.backend.backend() != "tensorflow")
    scannable = device_feed and config.mixup == 0 and config.copies == 1 and config.devices == "1"
    return "scan" if keras.backend.backend() == "jax" and hardware.has_gpu() and scannable else "fit"


def evaluate_with_tta(tta, level, x_test, y_test, clock):
    """The final test accuracy through `tta` (a `davidnet.tta.tta_model`), and
    its seconds: airbench counts this evaluation in its time."""
    start = clock()
    logits = tta.predict(x_test, batch_size=EVAL_BATCH, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.asarray(y_test)))
    return {"tta_level": level, "tta_accuracy": accuracy, "tta_s": clock() - start}


def _restore(model, state, timer, lr_callback, run_info):
    """Loads a checkpoint into a freshly compiled run; returns the epoch to start at."""
    model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
    model.load_weights(state["weights_path"])
    previous = state["results"]
    timer.restore(previous)
    lr_callback.history = [tuple(pair) for pair in previous["lr_history"]]
    run_info["resumed"] = previous.get("resumed", []) + [{"after_epoch": state["epoch"]}]
    return state["epoch"]


def _evaluate_last_epoch(model, timer, x_test, y_test):
    """With --eval-every k (or 0), the last epoch is evaluated after fit if k
    did not land on it, so every run ends with its final accuracy; with
    lookahead it is evaluated again, on the final (slow) weights, and that
    replaces fit's evaluation of the fast ones."""
    start = timer.clock()
    logs = model.evaluate(x_test, y_test, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    eval_s = timer.clock() - start
    record = timer.epochs[-1]
    record.update({f"val_{k}": float(v) for k, v in logs.items()}, eval_s=record["eval_s"] + eval_s)
    if timer.target_epoch == record["epoch"] and record["val_accuracy"] < timer.target:
        timer.target_epoch = timer.seconds_to_target = timer.wall_to_target_s = None  # the slow weights fell short
    timer.eval_s += eval_s
    if timer.target_epoch is None and record["val_accuracy"] >= timer.target:
        timer.target_epoch = record["epoch"]
        timer.seconds_to_target = timer.train_s
        timer.wall_to_target_s = record["wall_s"]


