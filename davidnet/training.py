"""Training a CIFAR-10 classifier from a `Config`: the shared engine of the experiments.

`train(config, data, results_dir)` assembles the run (`davidnet.builders.
assemble_run`: model, feed, optimizer, schedule), runs `model.fit` with the
timer and the report (`davidnet.callbacks`), and writes the results folder
after every epoch (so an interrupted run keeps its history) and in full at the
end (`davidnet.results`).
"""

import contextlib
import dataclasses
from pathlib import Path

import keras
import numpy as np

from davidnet import distribute, hardware, interrupts, run_folder, scan
from davidnet.builders import assemble_run, set_precision
from davidnet.callbacks import EpochReport, ProgressBar
from davidnet.config import Config
from davidnet.precompile import feed_example, precompile
from davidnet.results import WriteError, collect_results, write_bytes_atomic, write_results
from davidnet.run_folder import ResumeError, RunFolderError  # noqa: F401  (raised by train; imported from here)
from davidnet.timing import TimeToAccuracy
from davidnet.tta import tta_model
from pipelines import keras_private
from pipelines.dataset import first_line
from pipelines.cifar10 import resolve_target as resolve_data_target
from pipelines.feeds import DeviceFeed

EVAL_BATCH = 1000  # test images per evaluation step


def train(config, data, results_dir, host_augment=None, resume=False, callbacks=(), overwrite=False):
    """Trains per `config` on `data` and writes `results_dir`.

    Args:
        config: a `Config`.
        data: a `pipelines.cifar10.Cifar10`.
        results_dir: the run's folder (created if missing).
        host_augment: optional `f(uint8 images NHWC) -> uint8 images` applied
            to each training batch on the host in the tf.data feed (an imgaug
            `Sequential`, an albumentations pipeline over a batch, NumPy code).
        resume: continue the run in `results_dir` from its last checkpoint
            (model, optimizer, schedule position, history and timings). The
            run must be the same: `config` equal to its saved settings (but
            for `run_folder.MAY_CHANGE_ON_RESUME`), the same backend and data.
        callbacks: more Keras callbacks for `fit` (e.g. `keras.callbacks.TensorBoard`).
        overwrite: replace the run that `results_dir` holds, if any (without
            it, such a folder is refused).

    The run holds `results_dir` (`davidnet.run_folder.holding`) while it
    lives; SIGTERM stops it as Ctrl-C does (`davidnet.interrupts`).

    In a multi-process run (`davidnet.distribute.join_processes`: the
    environment says so, and `config.devices` is "all") every process calls
    `train` alike and takes part in every step and evaluation; process 0 alone
    holds and writes `results_dir`. To resume, every process reads process 0's
    checkpoint there, so on several hosts it must be a shared folder.

    Returns:
        The results dict (also in results.json). Its status is "completed",
        "diverged", or "interrupted" (Ctrl-C or SIGTERM; the checkpoint of the
        last finished epoch stays for --resume; "signal" says which).

    Raises:
        MemoryError: the data or a batch does not fit the accelerator (the
            message names the sizes; results so far are written first).
        RunFolderError: `results_dir` is in use, or holds another run.
        ResumeError: nothing to resume, a damaged checkpoint, or other
            settings, backend or data than the run being resumed.
        WriteError: a file of the run could not be written (a full disk);
            the files written before it are whole.
        davidnet.distribute.PeerLost: another process of a multi-process run
            stopped (an OSError, as a lost connection is).
        KeyboardInterrupt: stopped before training began (nothing written).
        ValueError: among others, more `config.devices` than exist, or a batch
            size that does not split across them.
    """
    # The processes join before the folder is touched: only process 0 holds it.
    processes = distribute.join_processes(config.devices)
    writes = processes.index == 0
    held = run_folder.holding(results_dir) if writes else contextlib.nullcontext(Path(results_dir))
    with held as folder, interrupts.stoppable():
        state = _resumed_state(config, data, folder) if resume else None
        if not resume and writes:
            run_folder.check_fresh(folder, overwrite, held=True)
            run_folder.clear_run(folder)
        # Model, optimizer, feed and fit all inside the distribution (devices "1": none).
        try:
            with distribute.data_parallel(config.devices, config.batch_size) as devices:
                return _train(config, data, folder, host_augment, state, callbacks, devices, processes)
        except Exception as e:
            lost = distribute.peer_lost(e, processes, folder)
            if lost is None:
                raise
            raise lost from None


def _resumed_state(config, data, folder):
    """The checkpoint to resume from, after checking that this is the same run."""
    state = run_folder.read_state(folder)
    changed = run_folder.changed_settings(run_folder.saved_config(state, Config), config)
    if changed:
        raise ResumeError(f"cannot resume {folder} with other settings: {'; '.join(changed)}")
    previous = state["results"]
    if previous.get("backend") not in (None, keras.backend.backend()):
        raise ResumeError(
            f"{folder} was trained on the {previous['backend']} backend, this is {keras.backend.backend()}: "
            f"resume with KERAS_BACKEND={previous['backend']}"
        )
    saved = previous.get("data") or {}
    where = saved.get("location")
    if where and data.location and where != data.location:
        raise ResumeError(f"{folder} was trained on the data in {where}, not {data.location}: resume with --data-dir {where}")
    if saved.get("image_format") not in (None, data.image_format):
        raise ResumeError(f"{folder} was trained on {saved['image_format']} data, this is {data.image_format}: resume on the run's own data")
    return state


def _train(config, data, results_dir, host_augment, state, callbacks, devices, processes=distribute.ONE_PROCESS):
    writes = processes.index == 0  # the other processes of a multi-process run write nothing
    keras_private.set_random_seed(config.seed)
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
    model, feed, lr_callback, x_train = run.model, distribute.shard_per_worker(run.feed), run.lr_callback, run.x_train
    if config.sync_batch_norm:
        distribute.synchronize_batch_norm(model)
    timer = TimeToAccuracy(target=target)
    run_info = {
        "config": dataclasses.asdict(config),
        "precision": precision,
        **hardware.describe(),
        "devices": devices,  # used for data parallelism (device_count: all there are)
        "processes": processes.count,
        "data": {
            "source": data.source,
            "location": data.location,
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
        initial_epoch = _restore(model, state, timer, lr_callback, run_info, results_dir)
        print(f"resuming {results_dir} after epoch {initial_epoch} of {config.epochs}")
    report = EpochReport(timer, lr_callback, run_info, results_dir, config.epochs, config.checkpoint, writes=writes)
    if processes.count > 1:
        # Several processes stop together, after the same epoch: a signal waits
        # for the epoch's end, where they agree (one process stopping in the
        # middle of a step would leave the others waiting in its collectives).
        report.agreed_stop = lambda: distribute.agreed_stop(interrupts.received(), processes)
    report.checkpointed = initial_epoch
    y_test = np.eye(num_classes, dtype="float32")[data.y_test]
    if loop == "scan":
        scan.install(model, feed)
    tta = tta_model(model, config.tta) if config.tta else None
    if config.precompile and keras.backend.backend() != "jax":
        print(f"note: --precompile compiles JAX steps; on {keras.backend.backend()} compile_s is the first step's time instead")
    elif config.precompile:
        if keras_private.fit_builds_on_a_batch(model):
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
        with interrupts.deferred(raise_after=False) if processes.count > 1 else contextlib.nullcontext():
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
        if report.stopped_by and len(timer.epochs) < config.epochs:  # several processes, stopped by a signal to one
            status = "interrupted"
            resume = f"continue with --resume --results-dir {results_dir}" if report.checkpointed else "no checkpoint to resume from"
            print(f"\ninterrupted after epoch {len(timer.epochs)}; {resume}")
    except WriteError as e:
        done = len(timer.epochs) - 1  # the epoch whose files failed was not saved
        raise WriteError(
            e.errno, f"{e}; the results up to epoch {done} are whole in {results_dir}: "
            f"free some space, then continue with --resume --results-dir {results_dir}"
        ) from None
    except BaseException as e:
        if interrupts.received() or isinstance(e, KeyboardInterrupt):
            # A signal that landed in a C extension can surface as another
            # exception (SystemError): the run was still told to stop.
            status = "interrupted"
            if report.checkpointed:
                print(f"\ninterrupted after epoch {report.checkpointed}; continue with --resume --results-dir {results_dir}")
            else:
                print("\ninterrupted before the first epoch ended: nothing to resume; run the same command again")
        elif isinstance(e, Exception) and hardware.is_out_of_memory(e):
            _out_of_memory(e, config, run_info, timer, lr_callback, report, results_dir if writes else None)
        else:
            raise
    # From here the run finishes whatever signal comes: its last seconds are writes.
    with interrupts.deferred(raise_after=False):
        if status is None:
            # Lookahead ends fit by loading its slow weights, after fit's last evaluation.
            if timer.epochs and ("val_accuracy" not in timer.epochs[-1] or config.lookahead):
                _evaluate_last_epoch(model, timer, data.x_test, y_test)
            status = "diverged" if report.diverged else "completed"
        results = collect_results(run_info, timer, lr_callback, status, report.diverged)
        if status == "interrupted":
            results["signal"] = interrupts.received() or report.stopped_by or "SIGINT"
        if tta is not None and status == "completed":
            results.update(evaluate_with_tta(tta, config.tta, data.x_test, data.y_test, timer.clock))
        # Every process serializes the model (that takes collectives, see
        # save_checkpoint); process 0 alone writes.
        model_file = keras_private.model_bytes(model) if status == "completed" and config.save_model else None
        if not writes:
            return results
        try:
            # The model before the results: if it cannot be written, results.json
            # still says "running" beside a whole checkpoint, and --resume finishes.
            if model_file is not None:
                write_bytes_atomic(results_dir / "model.keras", model_file)
            write_results(results_dir, results)
        except WriteError as e:
            resumable = run_folder.describe_run(results_dir) or ""
            advice = "free some space, then finish it with --resume" if "resumable" in resumable else "free some space and run it again"
            raise WriteError(e.errno, f"{e}; {advice} --results-dir {results_dir}") from None
        if status != "interrupted":
            run_folder.remove_checkpoint(results_dir)  # finished: model.keras and results.json hold it
    return results


def _out_of_memory(error, config, run_info, timer, lr_callback, report, results_dir):
    per_step = config.batch_size * config.copies
    results = collect_results(run_info, timer, lr_callback, "out_of_memory", report.diverged)
    if results_dir is not None:  # None: not the process that writes
        write_results(results_dir, {**results, "error": str(error).splitlines()[0][:500]})
    raise MemoryError(
        f"out of memory on the accelerator at batch size {config.batch_size}"
        + (f" x {config.copies} copies = {per_step} images per step" if config.copies > 1 else "")
        + ": lower --batch-size (results so far are in the results folder)"
    ) from None


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


def _restore(model, state, timer, lr_callback, run_info, results_dir):
    """Loads a checkpoint into a freshly compiled run; returns the epoch to start at."""
    model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
    try:
        model.load_weights(state["weights_path"])
    except Exception as e:  # noqa: BLE001 - h5py and Keras raise OSError, ValueError, KeyError... on a bad file
        first = first_line(e)
        raise ResumeError(
            f"the checkpoint in {results_dir} is damaged: {Path(state['weights_path']).name} does not load "
            f"into this run's model ({type(e).__name__}: {first}); start the run again (--overwrite)"
        ) from None
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
    timer.record_final_evaluation(logs, timer.clock() - start)
