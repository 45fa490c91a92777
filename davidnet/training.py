"""Training a CIFAR-10 classifier from a `Config`: the shared engine of the experiments.

`train(config, data, results_dir)` builds the model, the feed, the optimizer
and the callbacks from the config, runs `model.fit`, and writes the results
folder after every epoch (so an interrupted run keeps its history) and in full
at the end.

Weight decay is PyTorch's, coupled: `config.weight_decay * w` is added to
the gradient before the momentum (and Adam's moments), as in every reference
here. DavidNet (cifar10-fast) used 5e-4 x batch size on a summed loss with the
LR divided by the batch size; on Keras's mean loss the batch-size factors
cancel, leaving 5e-4. The optimizers are `davidnet.torch_optimizers`' TorchSGD
and TorchAdam: PyTorch's update rules (see there), which Keras's SGD (decoupled
decay) and Adam (epsilon inside the square root's correction, fixed beta_1)
only approximate.
"""

import dataclasses
import re
import threading
import time

import keras
import numpy as np

from davidnet import hardware, models, optimizers, scan, schedules, torch_optimizers
from davidnet.fastnet import fastnet, patch_whitening_kernel
from davidnet.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from davidnet.config import CHOICES, FASTNET_ONLY, NON_NEGATIVE, POSITIVE, SCHEDULES, Config  # noqa: F401  (their home before config.py)
from davidnet.distribute import data_parallel, process_share
from davidnet.results import check_writable, write_results
from davidnet.timing import TimeToAccuracy
from davidnet.tta import tta_model
from pipelines.augment import normalize
from pipelines.cifar10 import equivalent_target, target_note
from pipelines.feeds import DeviceFeed, make_feed

EVAL_BATCH = 1000  # test images per evaluation step
FASTNET_WIDTHS = (64, 256, 256)  # airbench94's, before --width


def build_model(config, x_train=None):
    """The model the config names. `x_train` (uint8 training images) is needed
    for fastnet's whitening initialisation (`config.whiten`)."""
    augmentation = {
        "crop_padding": config.crop_padding,
        "crop_mode": config.crop_mode,
        "flip": config.flip and not config.alternating_flip,  # the feed flips instead
        "cutout_size": config.cutout,
        "cutout_mode": config.cutout_mode,
        "seed": config.seed,
    }
    if config.model == "fastnet":
        kernel = None
        if config.whiten:
            if x_train is None:
                raise ValueError("the whitening initialisation needs the training images: build_model(config, x_train)")
            # airbench whitens with 5000 training images.
            kernel = patch_whitening_kernel(keras.ops.convert_to_numpy(normalize(x_train[:5000])))
        return fastnet(
            widths=tuple(models.scaled(channels, config.width) for channels in FASTNET_WIDTHS),
            augmentation=augmentation,
            whitening_kernel=kernel,
            activation=config.activation,
            dirac=config.dirac,
            frozen_bn_scale=config.frozen_bn_scale,
        )
    builder = models.MODELS[config.model]
    options = {"zero_init_residual": True} if config.zero_init_residual else {}
    return builder(
        width=config.width,
        augmentation=augmentation,
        batch_norm=config.batch_norm,
        l1=config.l1,
        l2=config.l2,
        dropout=config.dropout,
        **options,
    )


BIASES = r".*/(bias|beta)"  # variable paths of biases and batch-norm betas
NOT_KERNELS = ["bias", "gamma", "beta"]  # variable names that --weight-decay-kernels-only exempts


def build_optimizer(config, learning_rate=0.0, model=None, momentum=None):
    """The optimizer the config names.

    Args:
        config: a `Config`.
        learning_rate: a float, or the schedule in the graph
            (`LearningRateCallback.in_graph`, a `TabulatedSchedule`).
        model: the model (needed by muon, whose conv filters are found in it).
        momentum: a schedule of SGD's momentum / Adam's beta_1 (one-cycle's,
            `momentum_schedule`), or None for `config.momentum` / 0.9.

    sgd and adam are one optimizer (PyTorch's SGD and Adam,
    `davidnet.torch_optimizers`). Some variables can get their own SGD, each
    with the same product of learning rate and weight decay as the rest (as
    airbench's groups): the biases and batch-norm betas at `bias_lr_scale`
    times the learning rate, the classifier's kernel at `head_lr`, fastnet's
    whitening bias on its own schedule (`whiten_bias_epochs`). With those, or
    with muon (Muon for the conv filters), the result is a
    `keras.optimizers.MultiOptimizer`. `lookahead` wraps it in
    `davidnet.optimizers.Lookahead` with airbench's alpha schedule.
    """
    optimizer = _base_optimizer(config, learning_rate, model, momentum)
    if config.lookahead:
        total_steps = len(learning_rate.values) if isinstance(learning_rate, schedules.TabulatedSchedule) else None
        if total_steps is None:
            raise ValueError("lookahead's alpha schedule needs the run's schedule in the graph (a TabulatedSchedule)")
        return optimizers.Lookahead(optimizer, sync_period=config.lookahead, alpha=optimizers.AirbenchAlphaSchedule(total_steps))
    return optimizer


def _scaled(learning_rate, factor):
    if isinstance(learning_rate, schedules.TabulatedSchedule):
        return schedules.TabulatedSchedule([value * factor for value in learning_rate.values])
    return learning_rate * factor


def _sgd(config, learning_rate, factor=1.0, momentum=None, **kwargs):
    """A TorchSGD at `factor` times the run's learning rate, weight decay
    divided by it (the same product lr * weight_decay as the main group)."""
    optimizer = torch_optimizers.TorchSGD(
        _scaled(learning_rate, factor) if factor != 1.0 else learning_rate,
        momentum=config.momentum if momentum is None else momentum,
        nesterov=config.nesterov,
        weight_decay=(config.weight_decay / factor if factor else 0.0) or None,
        lr_in_buffer=config.lr_in_buffer,
        **kwargs,
    )
    if config.weight_decay_kernels_only:
        optimizer.exclude_from_weight_decay(var_names=NOT_KERNELS)
    return optimizer


def _whiten_bias_schedule(config, learning_rate):
    """airbench94_muon's whitening bias: lr * (1 - step / (epochs * steps per epoch)), then 0.
    A constant learning rate (no schedule: the step benchmark) stays as it is."""
    if not isinstance(learning_rate, schedules.TabulatedSchedule):
        return learning_rate
    values = learning_rate.values
    steps = config.whiten_bias_epochs * len(values) / config.epochs
    return schedules.TabulatedSchedule([config.lr * max(0.0, 1.0 - step / steps) for step in range(len(values))])


def _groups(config, learning_rate, model):
    """Variable path (exact, or a full-match regular expression) -> that group's SGD."""
    groups = {}
    if config.bias_lr_scale != 1:
        groups[BIASES] = _sgd(config, learning_rate, config.bias_lr_scale)
    if config.head_lr is not None or config.whiten_bias_epochs:
        if model is None:
            raise ValueError("--head-lr and --whiten-bias-epochs need the model: build_optimizer(config, lr, model)")
    if config.head_lr is not None:
        head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
        groups[head.kernel.path] = _sgd(config, learning_rate, config.head_lr / config.lr if config.lr else 0.0)
    if config.whiten_bias_epochs:
        groups[model.get_layer("whiten").bias.path] = _sgd(config, _whiten_bias_schedule(config, learning_rate))
    # Exact paths win over the patterns in Keras's OptimizerMap; escape them so
    # that a pattern reading of them can match nothing else either.
    return {key if key == BIASES else re.escape(key): value for key, value in groups.items()}


def momentum_schedule(config, lr_callback, total_steps):
    """The schedule's own momentum in the graph (one-cycle's: PyTorch's OneCycleLR
    cycles SGD's momentum and Adam's beta_1 against the LR), or None."""
    return lr_callback.momentum_in_graph(total_steps) if config.cycle_momentum else None


def _base_optimizer(config, learning_rate, model, momentum):
    groups = _groups(config, learning_rate, model)
    if config.optimizer == "muon":
        if model is None:
            raise ValueError("the muon optimizer needs the model, to find its conv filters: build_optimizer(config, lr, model)")
        return optimizers.muon_sgd(
            model, muon_lr=_scaled(learning_rate, config.muon_lr / config.lr if config.lr else 0.0),
            sgd_lr=learning_rate, nesterov=config.nesterov, ns_steps=config.ns_steps, groups=groups,
            default=_sgd(config, learning_rate, momentum=momentum),
        )
    if groups:
        default = _sgd(config, learning_rate, momentum=momentum)
        return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(default, groups))
    if config.optimizer == "sgd":
        return _sgd(config, learning_rate, momentum=momentum, clipnorm=config.clipnorm, clipvalue=config.clipvalue)
    if config.optimizer == "adam":
        optimizer = torch_optimizers.TorchAdam(
            learning_rate=learning_rate,
            beta_1=momentum if momentum is not None else 0.9,
            weight_decay=config.weight_decay or None,
            clipnorm=config.clipnorm,
            clipvalue=config.clipvalue,
        )
        if config.weight_decay_kernels_only:
            optimizer.exclude_from_weight_decay(var_names=NOT_KERNELS)
        return optimizer
    raise ValueError(f"optimizer must be sgd, adam or muon. Got: {config.optimizer!r}")


def build_schedule(config, steps_per_epoch):
    """The learning-rate callback the config names; peaks at `config.lr`."""
    offset = config.lr_step_offset
    if config.schedule == "piecewise":
        peak = config.warmup_epochs if config.warmup_epochs is not None else config.epochs * 5 / 24
        if not 0 <= peak <= config.epochs:
            raise ValueError(f"warmup epochs must be between 0 and the {config.epochs} epochs. Got: {peak}")
        start = config.lr * config.lr_start
        end = config.lr * config.lr_end
        return schedules.PiecewiseLinear([0, peak, config.epochs], [start, config.lr, end], steps_per_epoch, offset)
    if config.schedule == "step":
        # He et al.'s regime: constant, divided at each milestone. Repeated knots
        # make PiecewiseLinear jump there.
        milestones = parse_milestones(config.milestones, config.epochs)
        knots, values = [0.0], [config.lr]
        for i, epoch in enumerate(milestones):
            knots += [epoch, epoch]
            values += [config.lr * config.decay**i, config.lr * config.decay ** (i + 1)]
        knots.append(float(config.epochs))
        values.append(values[-1])
        return schedules.PiecewiseLinear(knots, values, steps_per_epoch, offset)
    if config.schedule in ("triangular", "triangular2", "exp_range"):
        scale_fn = schedules.scale_fn_from_expression(config.scale_fn) if config.scale_fn else None
        return schedules.Cyclic(
            config.base_lr,
            config.lr,
            config.step_size or 2 * steps_per_epoch,
            mode=config.schedule,
            gamma=config.gamma,
            scale_fn=scale_fn,
            steps_per_epoch=steps_per_epoch,
            step_offset=offset,
        )
    if config.schedule == "onecycle":
        return schedules.OneCycle(
            config.lr,
            total_steps=config.epochs * steps_per_epoch,
            pct_start=config.pct_start,
            anneal=config.anneal,
            steps_per_epoch=steps_per_epoch,
            step_offset=offset,
        )
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}. Got: {config.schedule!r}")


def parse_milestones(text, epochs):
    """'82,123' -> [82.0, 123.0]: increasing epochs inside the run."""
    try:
        milestones = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"milestones must be epochs separated by commas, e.g. '82,123'. Got: {text!r}") from None
    if milestones != sorted(milestones) or any(not 0 < m < epochs for m in milestones):
        raise ValueError(f"milestones must increase and lie between 0 and the {epochs} epochs. Got: {text!r}")
    return milestones


def set_precision(precision):
    """Applies the dtype policy; "auto" is mixed bf16 on a GPU, float32 elsewhere."""
    if precision == "auto":
        precision = "mixed_bfloat16" if hardware.has_gpu() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision


class EpochReport(keras.callbacks.Callback):
    """After every epoch: prints its line, stops a diverged run, checkpoints
    the model (unless that is off or the weights are NaN) and rewrites the
    results folder, so a run killed at any point keeps its history."""

    def __init__(self, timer, lr_callback, run_info, results_dir, epochs, checkpoint=True, verbose=True):
        super().__init__()
        self.timer = timer
        self.lr_callback = lr_callback
        self.run_info = run_info
        self.results_dir = results_dir
        self.total_epochs = epochs
        self.checkpoint = checkpoint
        self.verbose = verbose
        self.diverged = None

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
        if self.checkpoint and not self.diverged:
            save_checkpoint(self.model, self.results_dir, epoch + 1, results)
        write_results(self.results_dir, results, plots=False)


def collect_results(run_info, timer, lr_callback, status, diverged=None):
    accuracies = [r.get("val_accuracy") for r in timer.epochs]
    final = accuracies[-1] if accuracies and isinstance(accuracies[-1], float) else None
    return {
        "status": status,
        **run_info,
        **timer.summary(),
        "final_accuracy": final,
        "epochs_completed": len(timer.epochs),
        "diverged": diverged,
        "history": timer.epochs,
        "lr_history": [[int(step), float(lr)] for step, lr in lr_callback.history],
    }


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
    x_train, y_train = data.x_train, data.y_train
    if config.subset:
        x_train, y_train = x_train[: config.subset], y_train[: config.subset]
    num_classes = len(data.class_names)

    feed = make_feed(
        config.pipeline, x_train, y_train, config.batch_size,
        num_classes=num_classes, seed=config.seed, mixup_alpha=config.mixup, copies=config.copies,
        host_augment=host_augment, free_bytes=hardware.device_memory_free(), process=process_share(),
        scan=loop == "scan", alternating_flip=config.alternating_flip,
    )
    steps_per_epoch = len(x_train) // config.batch_size
    model = build_model(config, x_train)
    lr_callback = build_schedule(config, steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch
    model.compile(
        # The schedule runs in the train step; the callback only records it.
        optimizer=build_optimizer(
            config, lr_callback.in_graph(total_steps), model, momentum_schedule(config, lr_callback, total_steps)
        ),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
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
        "steps_per_epoch": steps_per_epoch,
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
            model._symbolic_build(data_batch=feed_example(feed))
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
    given = config.target is not None
    target = config.target if given else equivalent_target(data.image_format)
    return target, target_note(data.image_format, target, given)


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, made safe for asynchronous dispatch.

    A callback with its own `on_train_batch_end` makes Keras convert every
    step's logs to Python floats on the main thread before the next step is
    dispatched: the host then waits for the accelerator at every step. Marked
    `async_safe`, the bar is updated from Keras's worker threads instead,
    while the main thread keeps queueing steps; the lock and the step check
    keep the updates in order.
    """

    async_safe = True

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


def feed_example(feed):
    """Zeros shaped and typed as one item of `feed`, drawing nothing from it."""
    if hasattr(feed, "example"):
        return feed.example()
    # A tf.data feed: Keras hands the step NumPy arrays of its element spec.
    return tuple(np.zeros(spec.shape, spec.dtype.as_numpy_dtype) for spec in feed.element_spec)


def precompile(model, feed, x_test, y_test, tta=None):
    """Compiles the train and test steps (and the TTA model's predict, if
    given) before the run, on zeros shaped like the feed's items and the test
    batches, and returns the seconds it took.

    JAX only: the compiled steps are run on a copy of the model's state, so
    the run that follows starts from exactly the same weights, optimizer and
    random state, and finds its steps compiled (the same functions, the same
    shapes). With a persistent compilation cache a second run loads them.
    """
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    example = feed_example(feed)
    model.make_train_function()
    state = jax.tree.map(jnp.copy, model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True, optimizer_variables=True, metrics_variables=True,
    ))
    logs, _ = model.train_function(state, iter([example]))
    model.make_test_function()
    state = jax.tree.map(jnp.copy, model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True, metrics_variables=True,
    ))
    test_logs, _ = model.test_function(state, iter([(np.zeros_like(x_test), np.zeros_like(y_test))]))
    jax.block_until_ready((logs, test_logs))
    if tta is not None:  # predict changes no state
        tta.predict(np.zeros_like(x_test), batch_size=len(x_test), verbose=0)
    return time.perf_counter() - start


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


def summary_line(results):
    """The one final line a run prints."""
    target = results["target"]
    final = results["final_accuracy"]
    final_text = f"{final:.4f}" if final is not None else "n/a"
    if results.get("tta_accuracy") is not None:
        final_text += f" ({results['tta_accuracy']:.4f} with TTA level {results['tta_level']}, {results['tta_s']:.2f}s)"
    times = f"train {results['train_s']:.2f}s, compile {results['compile_s'] or 0:.2f}s, wall {results['wall_s']:.2f}s"
    if results.get("devices", 1) > 1:
        times += f" on {results['devices']} devices"
    if results["status"] == "diverged":
        d = results["diverged"]
        return f"diverged at epoch {d['epoch']} (learning rate {d['lr']:.4g}); {times}"
    if results["target_epoch"] is not None:
        return (
            f"target {target:.4f} reached at epoch {results['target_epoch']} in "
            f"{results['seconds_to_target']:.2f}s train time ({results['wall_to_target_s']:.2f}s wall); "
            f"final test accuracy {final_text}; {times}"
        )
    return f"target {target:.4f} not reached in {results['epochs_completed']} epochs; final test accuracy {final_text}; {times}"

