"""Train DavidNet (ResNet-9) on CIFAR-10 and report its seconds to the target accuracy.

    python -m experiments.davidnet --epochs 20
    python -m experiments.davidnet --epochs 2 --subset 2000 --width 0.25 --data-dir DIR
    python -m experiments.davidnet --preset fast --data-dir DIR     # airbench94_muon's recipe in Keras

The recipe (the defaults) is David Page's DAWNBench entry (cifar10-fast
`dawn.py`): batch 512, SGD with Nesterov momentum 0.9 and coupled weight decay
5e-4, learning rate 0 -> 0.4 -> 0 piecewise linear with the peak at epoch 5,
random 4-px crop with reflect padding, flip, 8x8 cutout; docs/fidelity.md
compares it with the reference detail by detail. `python -m experiments.davidnet --help` lists the flags.
"""

import argparse
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

from davidnet.studies import check_batch_size, print_data, resolve_settings  # noqa: E402  (after the env var)
from davidnet.config import CHOICES, NON_NEGATIVE, POSITIVE, Config  # noqa: E402  (no Keras: flags and data are checked before the backend loads)

FLAG_HELP = {
    "model": "network: davidnet (ResNet-9), resnet9 (the Adam one-cycle tutorial's ResNet-9), resnet44, or fastnet (airbench94_muon's 64/256/256 network)",
    "width": "channel multiplier (e.g. 0.25 for quick CPU runs)",
    "activation": "fastnet: relu or gelu",
    "whiten": "fastnet: first conv initialised by patch whitening of 5000 training images, then frozen",
    "dirac": "fastnet: identity (dirac) initialisation of the 3x3 convolutions",
    "frozen_bn_scale": "fastnet: batch norms with the scale fixed at 1 (bias only)",
    "whiten_bias_epochs": "fastnet: the whitening bias's learning rate falls linearly to 0 over these epochs, then it stays frozen (airbench94_muon: 3; 0: the run's schedule)",
    "zero_init_residual": "resnet44: start the last batch-norm scale of each residual block at 0 (Hoffer et al.'s code)",
    "epochs": "training epochs",
    "batch_size": "batch size (before batch-augmentation copies)",
    "optimizer": "sgd, adam (PyTorch's update rules), or muon (Muon for the conv filters, SGD for the rest, as airbench94_muon)",
    "muon_lr": "muon: the conv filters' peak learning rate (the schedule's shape applies)",
    "ns_steps": "muon: Newton-Schulz iterations, in bfloat16 (airbench94_muon: 3)",
    "head_lr": "sgd/muon: the classifier kernel's own SGD at this peak learning rate, weight decay scaled so lr x decay stays (airbench94_muon: 1340)",
    "bias_lr_scale": "biases and batch-norm betas get their own SGD at this many times the learning rate, weight decay divided by it (airbench94: 64)",
    "lookahead": "lookahead every k steps with airbench's alpha schedule, in the train step (0: off; airbench94: 5)",
    "lr": "peak learning rate of the schedule",
    "momentum": "SGD momentum",
    "nesterov": "SGD with Nesterov momentum (DavidNet, airbench) or plain (He et al., Hoffer et al.)",
    "lr_in_buffer": "SGD's momentum buffer holds lr x gradients (cifar10-fast, Keras) or gradients that the current lr scales (--no-lr-in-buffer: torch.optim.SGD)",
    "weight_decay": "PyTorch's coupled weight decay: wd x weight added to the gradient (on a mean loss; the references' values)",
    "weight_decay_kernels_only": "decay only conv and dense kernels, not biases and batch-norm parameters (Hoffer et al.)",
    "lr_step_offset": "optimizer step k trains at the schedule's step k + this: 1 as cifar10-fast, 0 as PyTorch's schedulers",
    "cycle_momentum": "onecycle: cycle the momentum (Adam's beta_1) 0.95 -> 0.85 -> 0.95 against the learning rate, as PyTorch's OneCycleLR",
    "clipnorm": "clip each gradient to this norm",
    "clipvalue": "clip each gradient element to [-v, v]",
    "label_smoothing": "label smoothing of the cross-entropy",
    "schedule": "learning-rate schedule",
    "warmup_epochs": "piecewise: epoch of the peak (default 5/24 of the epochs: 5 of 24 as DavidNet)",
    "lr_start": "piecewise: learning rate at step 0, as a fraction of --lr",
    "lr_end": "piecewise: learning rate at the end, as a fraction of --lr",
    "milestones": "step: epochs at which the learning rate is multiplied by --decay, e.g. '81,122'",
    "decay": "step: factor at each milestone",
    "base_lr": "cyclic: lower learning rate",
    "step_size": "cyclic: half a cycle, in iterations (default 2 epochs)",
    "gamma": "exp_range: decay per iteration",
    "scale_fn": "cyclic: custom scale function of x, e.g. '0.5*(1+sin(x*pi/2.5))'",
    "pct_start": "onecycle: fraction of steps spent warming up",
    "anneal": "onecycle: cos or linear annealing",
    "batch_norm": "batch normalisation after each convolution",
    "l1": "L1 kernel regularisation",
    "l2": "L2 kernel regularisation (on top of weight decay)",
    "dropout": "dropout rate before the classifier",
    "crop_padding": "random crop after padding by this many pixels (0: off)",
    "crop_mode": "padding for the crop: reflect or constant (zeros)",
    "flip": "random left-right flips",
    "alternating_flip": "airbench's derandomised flip, in the device feed: every image mirrored in every other epoch (replaces --flip)",
    "cutout": "cutout square side in pixels (0: off)",
    "cutout_mode": "inside: the square wholly in the image (DavidNet); centre: centred on any pixel and clipped at the border (DeVries & Taylor, Hoffer et al.)",
    "mixup": "mixup Beta(alpha) parameter (0: off)",
    "copies": "batch augmentation: copies of each sample in a batch",
    "target": "test accuracy to time (0.94 for DAWNBench; read 0.91 on the JPEG copy)",
    "eval_every": "evaluate the test set every k epochs (the last epoch always); 0: only after training, as airbench times it",
    "tta": "test-time augmentation of the final evaluation: 0 none, 1 mirror, 2 mirror and 1-px translations (reported beside the plain accuracy)",
    "seed": "random seed",
    "subset": "train on the first N training images",
    "pipeline": "training feed: auto (tf.data on TensorFlow, device elsewhere), device, tfdata",
    "loop": "fit: Keras's loop, one dispatch per batch; scan: each epoch one compiled loop (JAX, device feed; for accelerators: slow on CPU); auto: scan on JAX with a GPU",
    "precompile": "compile the train and test steps on dummy data before the run, so the timed run excludes compilation (JAX)",
    "precision": "auto (mixed bf16 on a GPU), float32, mixed_bfloat16",
    "devices": "data-parallel devices: 1, N or all (JAX: keras.distribution.DataParallel; TensorFlow: MirroredStrategy); --batch-size is the global batch, split across them",
    "verbose": "Keras progress bar: 0 none, 1 bar, 2 a line per epoch",
    "save_model": "save the trained model as model.keras",
    "checkpoint": "save model and optimizer after every epoch (for --resume)",
}
PRESETS = {path.stem: path for path in (Path(__file__).parent / "recipes").glob("*.toml")}


def build_parser(defaults=Config()):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.davidnet",
        description=__doc__.split("\n\n")[0],
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data-dir", help="CIFAR-10 folder (cifar-10-batches-py or train/ and test/ image folders); default $CIFAR10_DIR, the Keras cache, then tensorflow-datasets")
    data.add_argument("--results-dir", help="folder for results.json, dawnbench.tsv/json, plots (default runs/davidnet-<time>)")
    data.add_argument("--preset", choices=sorted(PRESETS), help="a recipe of experiments/recipes/ as the base: fast (airbench94_muon's recipe in Keras), resnet9_adam_onecycle; --config and flags override it")
    data.add_argument("--config", help="recipe settings from a TOML, JSON or YAML file; flags given on the command line win")
    data.add_argument("--resume", action="store_true", help="continue the interrupted run in --results-dir from its last epoch, with its saved settings")
    data.add_argument("--no-verify", action="store_true", help="load pickle batches whose md5 is not the official one")
    data.add_argument("--resize", action="store_true", help="resize images that are not 32x32")
    data.add_argument("--compile-cache", default=os.path.expanduser("~/.cache/davidnet/jax"), help="JAX persistent compilation cache folder ('' to turn off)")
    recipe = parser.add_argument_group("recipe (defaults: DavidNet's DAWNBench entry)")
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        shown = "5/24 of the epochs" if field.name == "warmup_epochs" else default
        help_text = f"{FLAG_HELP[field.name]} (default: {shown})"
        # Defaults stay None here so that a config file can fill what the flags leave out.
        if field.type is bool:
            recipe.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = _scalar_type(field.type)
        recipe.add_argument(flag, type=_checked(kind, field.name), default=None, choices=CHOICES.get(field.name), help=help_text)
    return parser


def _scalar_type(annotation):
    """`float | None` -> float; `int` -> int."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _checked(kind, name):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if name in POSITIVE and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if name in NON_NEGATIVE and value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def main(argv=None):
    parser = build_parser()
    args, config = resolve_settings(parser, argv, Config, PRESETS)

    from davidnet.results import check_writable
    from pipelines.cifar10 import DataError, load_cifar10

    if args.resume:
        config = _saved_config(parser, args)
    results_dir = args.results_dir or time.strftime("runs/davidnet-%Y%m%d-%H%M%S")
    try:
        # The data first, before Keras and its backend load (seconds): a run
        # without data fails at once, and leaves no empty run folder.
        data = load_cifar10(args.data_dir, verify=not args.no_verify, resize=args.resize)
        check_batch_size(config.batch_size, data, config.subset)
        check_writable(results_dir)
        from davidnet.hardware import use_compilation_cache
        from davidnet.training import ResumeError, summary_line, train

        use_compilation_cache(args.compile_cache)
    except (DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_data(data, config.subset)

    try:
        results = train(config, data, results_dir, resume=args.resume)
    except (ResumeError, ValueError, MemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(results))
    print(f"results: {results_dir}")
    return {"completed": 0, "diverged": 1, "interrupted": 130}[results["status"]]


def _saved_config(parser, args):
    """--resume: the interrupted run's own settings, so it ends as it began."""
    import json

    from davidnet.checkpoint import load_checkpoint

    given = [f.name for f in dataclasses.fields(Config) if getattr(args, f.name) is not None]
    if given or args.config or args.preset:
        parser.error("--resume continues with the run's saved settings: drop the recipe flags, --preset and --config")
    if not args.results_dir:
        parser.error("--resume needs --results-dir, the folder of the run to continue")
    state = load_checkpoint(args.results_dir)
    if state is None:
        finished = os.path.join(args.results_dir, "results.json")
        status = json.load(open(finished)).get("status") if os.path.exists(finished) else None
        why = f"it already {status}" if status in ("completed", "diverged") else "it holds no checkpoint"
        parser.exit(2, f"error: nothing to resume in {args.results_dir}: {why}\n")
    return Config(**state["results"]["config"])


if __name__ == "__main__":
    sys.exit(main())
