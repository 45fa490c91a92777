"""How fast DavidNet trains here: the train step, and full runs over several seeds.

    python -m benchmarks.davidnet --data-dir ~/cifar10 --seeds 5     # on a GPU: the full benchmark
    python -m benchmarks.davidnet --synthetic --small                # any CPU, about a minute (what CI keeps working)

Two measurements, one JSON (the machine, backend, versions and every figure):

1. The train step, through `model.fit` as a user runs it (verbose 0), at the
   run's width, batch size and precision, in three settings:
   (a) no augmentation, the same device batch every step;
   (b) augmentation on (crop, flip, cutout inside the model), the same batch;
   (c) augmentation plus the real data path (a `DeviceFeed` gather per step);
   (d) with --scan-step (JAX): (c) in the scanned loop of `--loop scan`, the
       --steps steps as one compiled call.
   Each runs one epoch of --warmup-steps steps first (compilation, reported
   apart; (d): one call of --steps), then --repeats timed epochs of --steps steps; each epoch's clock
   stops after the device has finished (a variable is read back), and the
   median epoch makes the figures (robust to a busy machine). On TensorFlow,
   Keras reads any PyDataset through tf.data's `from_generator`, so there
   every batch, even the fixed one, makes a trip through the host. Reported:
   ms/step, images/s,
   TFLOP/s from the model's FLOP count (`davidnet.flops.train_flops`: 3x the
   forward pass, convolutions and the classifier only), the overhead of
   augmentation (b vs a) and of the data path (c vs b), and the share of the
   step spent on both ((c - a) / c); with (d), the scanned loop's gain over
   Keras's (d vs c) and the faster of the two loops.
2. --seeds full training runs (`davidnet.training.train`, seeds 0..N-1):
   compile, train, eval and wall seconds, final accuracy and seconds to the
   target of each; then n, mean, std, min and max over the seeds.

Targets on an NVIDIA H200 (DavidNet at width 1, batch 512, bf16): the train
step with augmentation on at >= 140,000 images/s, and data path plus
augmentation <= 5% of the step time. Without a GPU the benchmark runs in its
small mode (width 0.125, 2,048 images, 2 epochs), which measures this
machine, not the targets.
"""

import argparse
import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

import keras  # noqa: E402  (after the env var)
from keras import ops  # noqa: E402

from davidnet import cli  # noqa: E402
from davidnet.config import CHOICES, Config  # noqa: E402
from davidnet.studies import check_batch_size, print_data  # noqa: E402

# The two sizes of the benchmark; a flag given on the command line wins over either.
FULL = dict(width=1.0, batch_size=512, epochs=24, subset=None, seeds=5, steps=200, warmup_steps=20, repeats=5)
SMALL = dict(width=0.125, batch_size=256, epochs=2, subset=2048, seeds=2, steps=5, warmup_steps=2, repeats=3)

TARGETS = {"images_per_s": 140_000, "input_share_pct": 5.0}  # on an H200, batch 512, width 1
SETTINGS = {
    "no_augmentation": "(a) fixed batch, no augmentation",
    "augmentation": "(b) fixed batch, augmentation",
    "augmentation_and_data_path": "(c) augmentation + DeviceFeed",
}
SCANNED = "scanned"  # setting (d), with --scan-step
SCANNED_LABEL = "(d) augmentation + data path, scanned"
RUN_KEYS = ("seed", "status", "target", "final_accuracy", "compile_s", "train_s", "eval_s", "wall_s",
            "target_epoch", "seconds_to_target", "epochs_completed")
STAT_KEYS = ("final_accuracy", "train_s", "seconds_to_target", "compile_s", "eval_s", "wall_s")


# ---------------------------------------------------------------- the command line


def build_parser():
    parser = cli.ArgumentParser(prog="python -m benchmarks.davidnet", description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data and output")
    data.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, the Keras cache, then tensorflow-datasets)")
    data.add_argument("--synthetic", action="store_true", help="synthetic class-coloured noise instead of CIFAR-10 (speed figures only: its accuracies mean nothing)")
    data.add_argument("--out", help="the benchmark's JSON file (default runs/benchmark-<time>.json)")
    data.add_argument("--results-dir", help="folder for the per-seed run folders (default runs/benchmark-<time>/)")
    data.add_argument("--compile-cache", default="", help="JAX persistent compilation cache folder (default: off, so compile_s is a cold compile)")
    size = parser.add_argument_group("size (defaults: full size on a GPU, --small without one)")
    size.add_argument("--small", action=argparse.BooleanOptionalAction, default=None,
                      help=f"small mode ({_describe(SMALL)}); --no-small: the full size ({_describe(FULL)})")
    size.add_argument("--width", type=_number(float), help="channel multiplier")
    size.add_argument("--batch-size", type=_number(int), help="batch size of the step benchmark and the runs")
    size.add_argument("--epochs", type=_number(int), help="epochs of each training run")
    size.add_argument("--subset", type=_number(int), help="train on the first N training images")
    size.add_argument("--seeds", type=_number(int), help="training runs, seeds 0..N-1")
    size.add_argument("--steps", type=_number(int), help="timed train steps per setting")
    size.add_argument("--warmup-steps", type=_number(int), help="untimed steps first (compilation)")
    size.add_argument("--repeats", type=_number(int), help="timed epochs of --steps per setting (the median counts)")
    recipe = parser.add_argument_group("recipe (DavidNet's DAWNBench entry otherwise)")
    recipe.add_argument("--target", type=_number(float), default=Config.target, help="test accuracy to time (default: the data's equivalent of DAWNBench's 94%%: 0.91 on the JPEG copy, 0.94 elsewhere)")
    recipe.add_argument("--precision", choices=CHOICES["precision"], default="auto", help="auto (mixed bf16 on a GPU, float32 elsewhere), float32, mixed_bfloat16")
    recipe.add_argument("--pipeline", choices=CHOICES["pipeline"], default="auto", help="the training runs' feed: auto (tf.data on TensorFlow, device elsewhere), device, tfdata")
    recipe.add_argument("--loop", choices=CHOICES["loop"], default="fit", help="the training runs' loop: fit (Keras's), scan (an epoch per compiled call, JAX), auto (scan on JAX with a GPU)")
    recipe.add_argument("--precompile", action="store_true", help="the training runs compile on dummy data before their clock starts (JAX)")
    recipe.add_argument("--eval-every", type=int, default=1, help="the training runs evaluate every k epochs (0: only after training)")
    what = parser.add_argument_group("what to run")
    what.add_argument("--skip-steps", action="store_true", help="no step benchmark")
    what.add_argument("--skip-training", action="store_true", help="no training runs")
    what.add_argument("--scan-step", action="store_true", help="also time setting (d): the step in the scanned loop of --loop scan (JAX; slow on a CPU)")
    return parser


def _describe(sizes):
    subset = f"{sizes['subset']:,} images" if sizes["subset"] else "all images"
    return (f"width {sizes['width']}, {subset}, {sizes['epochs']} epochs, batch {sizes['batch_size']}, "
            f"{sizes['seeds']} seeds, {sizes['warmup_steps']} + {sizes['repeats']}x{sizes['steps']} steps")


def _number(kind):
    """An argparse type: a `kind` > 0, else one line naming what was got."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def resolve_sizes(args, has_gpu):
    """The sizes of this benchmark: flags, then the mode's defaults. Returns (sizes, small, note)."""
    small = (not has_gpu) if args.small is None else args.small
    sizes = dict(SMALL if small else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    note = f"{'small mode' if small else 'full size'} ({_describe(sizes)})"
    if args.small is None and small:
        note = f"no GPU found: {note}; --no-small runs the full size here"
    return sizes, small, note


# ---------------------------------------------------------------- the train step


class FixedBatch(keras.utils.PyDataset):
    """The same device batch for `steps` steps: the train step without a data path.

    Args:
        images: a device tensor (batch, 32, 32, 3) uint8.
        labels: a device tensor (batch, classes), one-hot.
        steps: batches per epoch.
    """

    def __init__(self, images, labels, steps):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batch = (images, labels)
        self.steps = steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch


class Cycled(keras.utils.PyDataset):
    """`steps` batches of `feed` (a `DeviceFeed`), starting a new epoch of it
    (a new permutation) whenever it runs out, so the timed epoch can be longer
    or shorter than the data.

    Args:
        feed: a `keras.utils.PyDataset`.
        steps: batches per epoch.
    """

    def __init__(self, feed, steps):
        super().__init__(workers=1, use_multiprocessing=False)
        self.feed = feed
        self.steps = steps

    def __len__(self):
        return self.steps

    def on_epoch_begin(self):
        self.feed.on_epoch_begin()

    def __getitem__(self, index):
        inner = index % len(self.feed)
        if inner == 0 and index > 0:
            self.feed.on_epoch_begin()
        return self.feed[inner]


class EpochClock(keras.callbacks.Callback):
    """Seconds of each `fit` epoch (in `epoch_s`), stopped once the device has finished.

    It has no per-batch hook, so Keras keeps dispatching steps asynchronously
    as it does for a user's `fit`.
    """

    def __init__(self):
        super().__init__()
        self.epoch_s = []

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Reading a value back blocks until the steps that produce it are done
        # (on JAX, Keras writes its state back into the variables before this hook).
        ops.convert_to_numpy(self.model.optimizer.iterations)
        self.epoch_s.append(time.perf_counter() - self._begin)


class FirstStepClock(EpochClock):
    """`EpochClock` that also times the first step (tracing, compilation and one step)."""

    def __init__(self):
        super().__init__()
        self.first_step_s = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_step_s is None:
            self._step_begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_s is None:
            # Mid-epoch on JAX the variables are not written back yet: the
            # step's own outputs (the logs) are what to wait for.
            for value in (logs or {}).values():
                ops.convert_to_numpy(value)
            self.first_step_s = time.perf_counter() - self._step_begin


def compiled_model(config):
    """The config's model and optimizer (`build_model`, `build_optimizer`),
    compiled with the loss and metric that `train` uses."""
    from davidnet.builders import compile_model
    from pipelines import keras_private

    keras_private.set_random_seed(config.seed)
    # A constant learning rate (no schedule): the step still does every
    # computation of a training step.
    return compile_model(config)


def time_steps(model, warmup, timed, repeats, batch_size, flops_per_image, steps_per_item=1):
    """Fits one epoch of `warmup`, then times `repeats` epochs of `timed`.

    Args:
        steps_per_item: train steps per item of `warmup` and `timed` (a
            `ScanFeed` item holds many).

    Returns:
        {"steps", "warmup_steps", "repeats", "batch_size", "epoch_seconds"
        (each timed epoch), "seconds" (their median), "ms_per_step",
        "images_per_s", "tflops" (from the median), "warmup_s",
        "first_step_s", "compile_s"}; compile_s is the first item (step)
        less one ordinary item.
    """
    first = FirstStepClock()
    model.fit(warmup, epochs=1, verbose=0, shuffle=False, callbacks=[first])
    clock = EpochClock()
    model.fit(timed, epochs=repeats, verbose=0, shuffle=False, callbacks=[clock])
    seconds = statistics.median(clock.epoch_s)
    steps = len(timed) * steps_per_item
    step_s = seconds / steps
    return {
        "steps": steps,
        "warmup_steps": len(warmup) * steps_per_item,
        "repeats": repeats,
        "batch_size": batch_size,
        "epoch_seconds": clock.epoch_s,
        "seconds": seconds,
        "ms_per_step": 1000.0 * step_s,
        "images_per_s": batch_size / step_s,
        "tflops": flops_per_image * batch_size / step_s / 1e12,
        "warmup_s": first.epoch_s[0],
        "first_step_s": first.first_step_s,
        "compile_s": max(0.0, first.first_step_s - seconds / len(timed)),
    }


def step_benchmark(config, x_train, y_train, num_classes, steps, warmup_steps, repeats=1, scanned=False, on_setting=None):
    """The train step in the three settings (four with `scanned`; see the module docstring).

    Args:
        config: a `Config` (width, batch size, precision, augmentation).
        x_train, y_train: uint8 images and integer labels (the DeviceFeed's data).
        num_classes: width of the one-hot labels.
        steps, warmup_steps: timed and untimed steps per setting.
        repeats: timed epochs of `steps` per setting; the median counts.
        scanned: also setting (d), the scanned loop (JAX).
        on_setting: called with the figures so far after each setting (to
            save them: a benchmark stopped later keeps them).

    Returns:
        {"precision", "flops_per_image": {"forward", "train"}, "settings":
        {name: figures of `time_steps`}, "augmentation_overhead_pct",
        "data_path_overhead_pct", "input_share_pct"}; with `scanned`, also
        "scan_vs_fit_pct" ((d - c) / c) and "faster_loop" ("scan" or "fit").
    """
    from davidnet.flops import forward_flops, train_flops
    from davidnet.builders import set_precision
    from pipelines.feeds import DeviceFeed

    precision = set_precision(config.precision)
    batch = config.batch_size
    images = ops.convert_to_tensor(x_train[:batch])
    labels = ops.one_hot(ops.convert_to_tensor(y_train[:batch]), num_classes)

    plain = compiled_model(dataclasses.replace(config, crop_padding=0, flip=False, cutout=0))
    flops = {"forward": forward_flops(plain), "train": train_flops(plain)}
    settings = {}
    figures = {"precision": precision, "flops_per_image": flops, "settings": settings}
    measured = on_setting or (lambda figures: None)
    print(f"  {SETTINGS['no_augmentation']} ...", flush=True)
    settings["no_augmentation"] = time_steps(
        plain, FixedBatch(images, labels, warmup_steps), FixedBatch(images, labels, steps), repeats, batch, flops["train"])
    measured(figures)
    del plain
    # (b) and (c) share one model: the same compiled step, fed two ways.
    feed = DeviceFeed(x_train, y_train, batch, num_classes=num_classes, seed=config.seed)
    augmented = compiled_model(config)
    print(f"  {SETTINGS['augmentation']} ...", flush=True)
    settings["augmentation"] = time_steps(
        augmented, FixedBatch(images, labels, warmup_steps), FixedBatch(images, labels, steps), repeats, batch, flops["train"])
    measured(figures)
    print(f"  {SETTINGS['augmentation_and_data_path']} ...", flush=True)
    settings["augmentation_and_data_path"] = time_steps(
        augmented, Cycled(feed, warmup_steps), Cycled(feed, steps), repeats, batch, flops["train"])
    del augmented
    a, b, c = (settings[name]["ms_per_step"] for name in SETTINGS)
    figures |= {
        "augmentation_overhead_pct": 100.0 * (b - a) / a,
        "data_path_overhead_pct": 100.0 * (c - b) / b,
        "input_share_pct": 100.0 * (c - a) / c,
    }
    measured(figures)
    if scanned:
        print(f"  {SCANNED_LABEL} ...", flush=True)
        settings[SCANNED] = scanned_steps(config, x_train, y_train, num_classes, steps, repeats, flops["train"])
        figures |= loop_comparison(settings)
        measured(figures)
    return figures


def scanned_steps(config, x_train, y_train, num_classes, steps, repeats, flops_per_image):
    """Setting (d): the augmented model's step in `davidnet.scan`'s loop, `steps`
    steps per compiled call as a `ScanFeed` item (a new permutation of `x_train`
    each epoch): one call to compile, then `repeats` timed calls."""
    from davidnet import scan
    from pipelines.feeds import ScanFeed

    check_scan_steps(steps, config.batch_size, len(x_train))
    feed = ScanFeed(x_train, y_train, config.batch_size, steps_per_call=steps, num_classes=num_classes, seed=config.seed)
    model = scan.install(compiled_model(config), feed)
    first_call = Cycled(feed, 1)  # each epoch: the feed's first item, of a new permutation
    return time_steps(model, first_call, first_call, repeats, config.batch_size, flops_per_image, steps)


def check_scan_steps(steps, batch_size, images):
    """Raises ValueError (one line) where one call of `steps` steps would need more images than there are."""
    if steps * batch_size > images:
        raise ValueError(f"--scan-step: {steps} steps of batch {batch_size} need {steps * batch_size} "
                         f"training images, there are {images}: lower --steps")


def loop_comparison(settings):
    """{"scan_vs_fit_pct": (d - c) / c in %, "faster_loop": "scan" or "fit"} from the settings' ms/step."""
    c, d = settings["augmentation_and_data_path"]["ms_per_step"], settings[SCANNED]["ms_per_step"]
    return {"scan_vs_fit_pct": 100.0 * (d - c) / c, "faster_loop": "scan" if d < c else "fit"}


# ---------------------------------------------------------------- training runs


def training_runs(config, data, seeds, results_dir, on_run=None):
    """`train` for seeds 0..seeds-1, each in a fresh Keras session and its own
    folder `results_dir/seed<i>`. Returns one dict per run (`RUN_KEYS`).

    Args:
        on_run: called with the list of runs so far after each run (to save them).
    """
    from davidnet.results import summary_line
    from davidnet.training import train

    runs = []
    for seed in range(seeds):
        print(f"training run {seed + 1}/{seeds} (seed {seed})", flush=True)
        keras.backend.clear_session()
        results = train(dataclasses.replace(config, seed=seed), data, Path(results_dir) / f"seed{seed}")
        print(f"  {summary_line(results)}", flush=True)
        runs.append({key: results.get(key) for key in RUN_KEYS} | {"seed": seed})
        if on_run is not None:
            on_run(runs)
        if results["status"] == "interrupted":
            raise KeyboardInterrupt
    return runs


def describe_values(values):
    """{"n", "mean", "std", "min", "max"} of the numbers in `values` (None
    ignored; std is the sample standard deviation, 0 for one value)."""
    from davidnet.study_runs import mean_std

    numbers = [v for v in values if isinstance(v, (int, float))]
    mean, std = mean_std(numbers)
    return {"n": len(numbers), "mean": mean, "std": std,
            "min": min(numbers, default=None), "max": max(numbers, default=None)}


def run_stats(runs, target):
    """Statistics over the runs: one `describe_values` per key of `STAT_KEYS`
    (seconds_to_target over the runs that reached the target), and the count."""
    stats = {key: describe_values([run[key] for run in runs]) for key in STAT_KEYS}
    stats["target"] = target
    stats["reached_target"] = sum(run["target_epoch"] is not None for run in runs)
    stats["runs"] = len(runs)
    return stats


# ---------------------------------------------------------------- the report


def versions():
    """Versions of Python and the libraries; TensorFlow's is read from its
    package metadata unless it is already imported, so the JAX path never imports it."""
    found = {"python": platform.python_version()}
    for name in ("keras", "jax", "jaxlib", "tensorflow", "numpy"):
        module = sys.modules.get(name)
        found[name] = getattr(module, "__version__", None) if module is not None else None
        for distribution in (name, f"{name}-cpu") if found[name] is None else ():
            try:
                found[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
    return found


def targets_check(steps, config, machine):
    """Whether the H200 targets apply here (an H200 at batch 512 and width 1)
    and, where they do, whether they are met."""
    applies = "H200" in str(machine.get("device", "")) and config.batch_size == 512 and config.width == 1.0
    report = {**TARGETS, "applies": applies, "met": None}
    if applies and steps:
        report["met"] = {
            "images_per_s": steps["settings"]["augmentation"]["images_per_s"] >= TARGETS["images_per_s"],
            "input_share_pct": steps["input_share_pct"] <= TARGETS["input_share_pct"],
        }
    return report


def steps_table(steps):
    from davidnet.study_runs import format_table

    rows = []
    labels = {**SETTINGS, SCANNED: SCANNED_LABEL}
    for name, label in labels.items():
        if name not in steps["settings"]:
            continue
        s = steps["settings"][name]
        rows.append({"setting": label, "ms/step": f"{s['ms_per_step']:.3f}", "images/s": f"{s['images_per_s']:,.0f}",
                     "TFLOP/s": f"{s['tflops']:.3g}", "compile s": f"{s['compile_s']:.2f}"})
    rows[1]["overhead"] = f"{steps['augmentation_overhead_pct']:+.1f}% vs (a)"
    rows[2]["overhead"] = f"{steps['data_path_overhead_pct']:+.1f}% vs (b)"
    if SCANNED in steps["settings"]:
        rows[3]["overhead"] = f"{steps['scan_vs_fit_pct']:+.1f}% vs (c)"
    table = format_table(rows, ["setting", "ms/step", "images/s", "TFLOP/s", "compile s", "overhead"])
    table += f"\ndata path + augmentation: {steps['input_share_pct']:.1f}% of the step ((c - a) / c)"
    if SCANNED in steps["settings"]:
        table += f"\nfaster loop: {steps['faster_loop']} (--loop {steps['faster_loop']})"
    return table


def runs_table(stats):
    from davidnet.study_runs import format_table

    labels = {"final_accuracy": "final accuracy", "train_s": "train s", "seconds_to_target": "seconds to target",
              "compile_s": "compile s", "eval_s": "eval s", "wall_s": "wall s"}
    rows = []
    for key, label in labels.items():
        s = stats[key]
        digits = 4 if key == "final_accuracy" else 2
        cells = {k: "-" if s[k] is None else f"{s[k]:.{digits}f}" for k in ("mean", "std", "min", "max")}
        rows.append({"quantity": label, "n": str(s["n"]), **cells})
    return (format_table(rows, ["quantity", "n", "mean", "std", "min", "max"])
            + f"\nreached {stats['target']} in {stats['reached_target']} of {stats['runs']} runs")


# ---------------------------------------------------------------- main


def load_data(args, sizes, small):
    """(data, data description) from --synthetic or the CIFAR-10 sources; raises DataError."""
    from pipelines.cifar10 import load_cifar10, synthetic_cifar10

    if args.synthetic:
        data = synthetic_cifar10(n_train=sizes["subset"] or 50_000, n_test=1_000 if small else 10_000)
    else:
        data = load_cifar10(args.data_dir)
    return data, {
        "source": data.source,
        "synthetic": data.image_format == "synthetic",
        "jpeg_copy": data.image_format == "jpeg",
        "train_images": min(sizes["subset"] or len(data.x_train), len(data.x_train)),
        "test_images": len(data.x_test),
    }


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.skip_steps and args.skip_training:
        parser.error("--skip-steps and --skip-training together leave nothing to run")
    if args.synthetic and args.data_dir:
        parser.error("--synthetic and --data-dir exclude each other: synthetic data or CIFAR-10 from a folder")
    if args.scan_step and (args.skip_steps or keras.backend.backend() != "jax"):
        parser.error(f"--scan-step times the scanned loop of --loop scan: it needs the JAX backend (this is "
                     f"{keras.backend.backend()}) and the step benchmark (no --skip-steps)")
    if args.target is not None and not 0 < args.target <= 1:
        parser.error(f"--target is an accuracy between 0 and 1, got {args.target}")

    from davidnet import hardware
    from davidnet.results import check_writable, write_json_atomic
    from pipelines.cifar10 import DataError

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/benchmark-{stamp}.json")
    results_dir = Path(args.results_dir or f"runs/benchmark-{stamp}")
    machine = hardware.describe()
    sizes, small, note = resolve_sizes(args, machine["platform"] == "gpu")
    try:
        data, data_info = load_data(args, sizes, small)
    except DataError as e:
        print(f"error: {e} (or --synthetic for speed figures on synthetic data)", file=sys.stderr)
        return 2
    try:
        check_batch_size(sizes["batch_size"], data, sizes["subset"])
        if args.scan_step:
            check_scan_steps(sizes["steps"], sizes["batch_size"], data_info["train_images"])
    except ValueError as e:
        parser.error(str(e))
    try:
        config = Config(
            width=sizes["width"], epochs=sizes["epochs"], batch_size=sizes["batch_size"], subset=sizes["subset"],
            target=args.target, precision=args.precision, pipeline=args.pipeline,
            loop=args.loop, precompile=args.precompile, eval_every=args.eval_every,
            verbose=0, checkpoint=False, save_model=False,  # nothing but training inside the timed runs
        )
    except ValueError as e:  # Config's own checks, e.g. a negative --eval-every
        parser.error(str(e))
    try:  # before anything is measured, not after
        hardware.use_compilation_cache(args.compile_cache)
        check_writable(out.parent)
        if not args.skip_training:
            check_writable(results_dir)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(note)
    print(f"{machine['backend']} on {machine['device']} ({machine['platform']})")
    print_data(data, sizes["subset"])

    report = {
        "machine": {**machine, "host": {"os": platform.platform(), "cpu_count": os.cpu_count()}},
        "backend": machine["backend"],
        "versions": versions(),
        "command": ["python", "-m", "benchmarks.davidnet", *(sys.argv[1:] if argv is None else argv)],
        "config": dataclasses.asdict(config),
        "benchmark": {"small": small, "seeds": sizes["seeds"], "steps": sizes["steps"], "warmup_steps": sizes["warmup_steps"],
                      "repeats": sizes["repeats"], "compile_cache": bool(args.compile_cache), "scan_step": args.scan_step},
        "model_flops_per_image": None,
        "steps": None,
        "runs": [],
        "stats": None,
        "targets": None,
        "data": data_info,
    }

    def save():  # after each part, so a run killed later keeps what it measured
        write_json_atomic(out, report)

    x_train, y_train = data.x_train[: data_info["train_images"]], data.y_train[: data_info["train_images"]]
    try:
        if not args.skip_steps:
            print(f"train step, batch {config.batch_size}: {sizes['warmup_steps']} warm-up steps, then the median of "
                  f"{sizes['repeats']} epochs of {sizes['steps']} timed steps, per setting")

            def keep_steps(figures):  # after each setting
                report["steps"], report["model_flops_per_image"] = figures, figures["flops_per_image"]
                save()

            step_benchmark(config, x_train, y_train, len(data.class_names), sizes["steps"],
                           sizes["warmup_steps"], sizes["repeats"], scanned=args.scan_step, on_setting=keep_steps)
            keras.backend.clear_session()
        else:
            from davidnet.flops import forward_flops, train_flops
            from davidnet.builders import build_model

            model = build_model(config)
            report["model_flops_per_image"] = {"forward": forward_flops(model), "train": train_flops(model)}
            del model
        if not args.skip_training:

            def keep(runs):
                report["runs"] = runs
                report["stats"] = run_stats(runs, runs[-1]["target"])  # as the runs resolved it
                save()

            training_runs(config, data, sizes["seeds"], results_dir, on_run=keep)
    except (ValueError, MemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not hardware.is_out_of_memory(e):
            raise
        save()
        print(f"error: out of memory on the accelerator in the step benchmark at batch size {config.batch_size}: "
              "lower --batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        save()
        print(f"\ninterrupted; the figures so far are in {out}", file=sys.stderr)
        return 130
    report["targets"] = targets_check(report["steps"], config, machine)
    save()

    flops = report["model_flops_per_image"]
    print(f"\nDavidNet width {config.width:g}: {flops['forward'] / 1e9:.4g} GFLOP per image forward, "
          f"{flops['train'] / 1e9:.4g} per training step (3x)")
    if report["steps"]:
        print(steps_table(report["steps"]))
    if report["runs"]:
        print(f"\n{len(report['runs'])} training runs of {config.epochs} epochs:")
        print(runs_table(report["stats"]))
    if report["targets"]["applies"] and report["targets"]["met"]:
        met = report["targets"]["met"]
        print(f"H200 targets: >= {TARGETS['images_per_s']:,} images/s {'met' if met['images_per_s'] else 'NOT met'}; "
              f"data path + augmentation <= {TARGETS['input_share_pct']:g}% {'met' if met['input_share_pct'] else 'NOT met'}")
    else:
        print("H200 targets (batch 512, width 1, on an H200): not applicable to this run")
    print(f"benchmark: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
