"""The settings of one training run: `Config`, each setting defined once.

Each field of `Config` is a `setting(...)`: its default, its help text and its
checks (choices, bounds). The command line's flags and their help
(`experiments/davidnet.py`), the checks of `Config` itself (run before any
data is loaded) and the README's flag table (`flag_table`, kept equal by a
test) are all derived from these definitions. Adding a setting is one field.

The models and schedules are registries, name -> "module:function" of the
builder (`MODELS`, `SCHEDULES`); the names are the settings' choices, and the
builders are imported only when a run is built. Adding a model or a schedule is
one entry here and its function.

Importing this module costs no Keras, TensorFlow or JAX, so a command line can
check its flags (and a run can fail on bad data) in a fraction of a second,
before the backend is loaded.
"""

import dataclasses
import importlib
import math
import numbers
import operator
import types
import typing

# Builders take (config, x_train, num_classes) -> keras.Model; x_train: the uint8
# training images (airbench94's whitening needs them).
MODELS = {
    "davidnet": "davidnet.builders:davidnet_model",
    "resnet9": "davidnet.builders:resnet9_model",
    "resnet44": "davidnet.builders:resnet44_model",
    "airbench94": "davidnet.builders:airbench94_model",
}
MODEL_ALIASES = {"fastnet": "airbench94"}  # names of earlier versions, still accepted
# Builders take (config, steps_per_epoch) -> a `davidnet.schedules` callback peaking at config.lr.
SCHEDULES = {
    "piecewise": "davidnet.builders:piecewise_schedule",
    "step": "davidnet.builders:step_schedule",
    "triangular": "davidnet.builders:cyclic_schedule",
    "triangular2": "davidnet.builders:cyclic_schedule",
    "exp_range": "davidnet.builders:cyclic_schedule",
    "onecycle": "davidnet.builders:onecycle_schedule",
}
CUTOUT_MODES = ("inside", "centre")  # pipelines.augment.cutout's modes (a test checks they agree)

# The ends of the numeric settings' ranges (generous: a value beyond one is a
# typo or a unit slip, e.g. --target 94 for 0.94, and would fail or exhaust
# memory only minutes later, or run silently to nonsense).
CIFAR10_TRAIN_IMAGES = 50_000
IMAGE_SIZE = 32  # every feed's images are 32 x 32 (--resize makes them so)
MAX_EPOCHS = 10_000
MAX_IMAGES_PER_STEP = 50_000  # a batch with its copies: CIFAR-10's whole training set
MAX_IMAGES = 10**8
MAX_STEPS = 10**9  # optimizer steps (cyclic half-cycles)
MAX_STEPS_SETTING = 10_000  # lookahead's period
MAX_WIDTH = 16  # 256 x DavidNet's 6.6M parameters
MAX_LR = 1e12  # far past divergence (a test diverges at 1e12), still finite in float32 tables
LEARNING_RATE = {"at_least": 1e-9, "at_most": MAX_LR}  # rates that divide others (head_lr / lr)
MAX_DEVICES = 4096
MAX_TEXT = 1000  # characters of a text setting (milestones, devices)


def builder(registry, name):
    """The function a registry (`MODELS`, `SCHEDULES`) names for `name`."""
    module, function = registry[name].split(":")
    return getattr(importlib.import_module(module), function)


def setting(default, help, *, choices=None, above=None, at_least=None, at_most=None, below=None, off=None, hint=None, shown=None):
    """One setting of `Config`: its default, its help text, and its checks.

    Args:
        choices: the allowed values.
        above, at_least, at_most, below: bounds (> , >=, <=, <); None (for
            an optional setting) always passes them. Every number has both
            ends: a value beyond either is refused before any data loads.
        off: a value that turns the setting off and passes the bounds (e.g.
            mixup's 0 below its smallest alpha).
        hint: said after the bounds when a value is refused (e.g. "a
            fraction, e.g. 0.94 for 94%").
        shown: how the default reads in --help and the README, where the
            value itself would not say it (e.g. "5/24 of the epochs").
    """
    metadata = {"help": help, "choices": choices, "above": above, "at_least": at_least, "at_most": at_most, "below": below,
                "off": off, "hint": hint, "shown": shown}
    return dataclasses.field(default=default, metadata=metadata)


def parse_devices(setting):
    """"all" or a positive integer (as text or int) -> "all" or that int."""
    text = str(setting).strip().lower() if isinstance(setting, (str, int)) and not isinstance(setting, bool) else ""
    if text == "all":
        return "all"
    if text.isascii() and text.isdigit() and 0 < len(text) <= 4 and 0 < int(text) <= MAX_DEVICES:
        return int(text)
    raise ValueError(f"devices must be 'all' or a positive integer up to {MAX_DEVICES}. Got: {shown(setting)}")


def parse_milestones(text, epochs):
    """'82,123' -> [82.0, 123.0]: increasing epochs inside the run."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"milestones must be epochs separated by commas, e.g. '82,123', at most {MAX_TEXT} characters. Got: {shown(text)}")
    try:
        milestones = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"milestones must be epochs separated by commas, e.g. '82,123'. Got: {shown(text)}") from None
    if milestones != sorted(milestones) or any(not 0 < m < epochs for m in milestones):
        raise ValueError(f"milestones must increase and lie between 0 and the {epochs} epochs. Got: {shown(text)}")
    return milestones


def shown(value, limit=60):
    """`value` as an error message quotes it: repr, cut to `limit` characters
    (a huge integer by its digits: repr of one past 4300 digits raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"an integer of {digits - (abs(value) < 10 ** (digits - 1))} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


AIRBENCH94_ONLY = ("activation", "whiten", "dirac", "frozen_bn_scale", "whiten_bias_epochs")


@dataclasses.dataclass
class Config:
    """One training run. Defaults are DavidNet's DAWNBench recipe."""

    model: str = setting("davidnet", "network: davidnet (ResNet-9 of cifar10-fast), resnet9 (the Adam one-cycle tutorial's ResNet-9: biases, dropout, unscaled logits), resnet44 (He et al.), or airbench94 (airbench94_muon's 64/256/256 network; 'fastnet' is accepted for it)", choices=(*MODELS, *MODEL_ALIASES))
    width: float = setting(1.0, "channel multiplier (0.25 or 0.125 for quick CPU runs)", above=0, at_most=MAX_WIDTH)
    activation: str = setting("relu", "airbench94: relu or gelu", choices=("relu", "gelu"))
    whiten: bool = setting(False, "airbench94: first conv initialised by patch whitening of 5000 training images, then frozen")
    dirac: bool = setting(False, "airbench94: identity (dirac) initialisation of the 3x3 convolutions")
    frozen_bn_scale: bool = setting(False, "airbench94: batch norms with the scale fixed at 1 (bias only)")
    whiten_bias_epochs: float = setting(0.0, "airbench94: the whitening bias's learning rate falls linearly to 0 over these epochs, then it stays frozen (airbench94_muon: 3; 0: the run's schedule)", at_least=0.01, at_most=MAX_EPOCHS, off=0)
    zero_init_residual: bool = setting(False, "resnet44: start the last batch-norm scale of each residual block at 0 (Hoffer et al.'s code)")
    epochs: int = setting(24, "training epochs", above=0, at_most=MAX_EPOCHS)
    batch_size: int = setting(512, "batch size (before batch-augmentation copies)", above=0, at_most=MAX_IMAGES_PER_STEP)
    optimizer: str = setting("sgd", "sgd, adam (PyTorch's update rules, davidnet/torch_optimizers.py), or muon (Muon for the conv filters, SGD for the rest, as airbench94_muon)", choices=("sgd", "adam", "muon"))
    lr: float = setting(0.4, "peak learning rate of the schedule", **LEARNING_RATE)
    momentum: float = setting(0.9, "SGD momentum", at_least=0, below=1)
    nesterov: bool = setting(True, "SGD with Nesterov momentum (DavidNet, airbench) or plain (He et al., Hoffer et al.)")
    lr_in_buffer: bool = setting(True, "SGD's momentum buffer holds lr x gradients (cifar10-fast, Keras) or gradients that the current lr scales (--no-lr-in-buffer: torch.optim.SGD)")
    muon_lr: float = setting(0.24, "muon: the conv filters' peak learning rate (the schedule's shape applies)", at_least=0, at_most=MAX_LR)
    ns_steps: int = setting(3, "muon: Newton-Schulz iterations, in bfloat16 (airbench94_muon: 3)", above=0, at_most=20)
    head_lr: float | None = setting(None, "sgd/muon: the classifier kernel's own SGD at this peak learning rate, weight decay scaled so lr x decay stays (airbench94_muon: 1340)", **LEARNING_RATE)
    bias_lr_scale: float = setting(1.0, "biases and batch-norm betas get their own SGD at this many times the learning rate, weight decay divided by it (airbench94: 64)", at_least=1e-3, at_most=1e4)
    lookahead: int = setting(0, "lookahead every k steps with airbench's alpha schedule, in the train step (0: off; airbench94: 5)", at_least=0, at_most=MAX_STEPS_SETTING)
    weight_decay: float = setting(5e-4, "PyTorch's coupled weight decay: wd x weight added to the gradient (on a mean loss; the references' values; README, Weight decay)", at_least=0, at_most=1)
    weight_decay_kernels_only: bool = setting(False, "decay only conv and dense kernels, not biases and batch-norm parameters (Hoffer et al.)")
    clipnorm: float | None = setting(None, "clip each gradient to this norm", at_least=1e-6, at_most=1e6)
    clipvalue: float | None = setting(None, "clip each gradient element to [-v, v] (the Adam one-cycle recipe: 0.1)", at_least=1e-6, at_most=1e6)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy", at_least=0, below=1)
    schedule: str = setting("piecewise", "learning-rate schedule", choices=tuple(SCHEDULES))
    lr_step_offset: int = setting(1, "optimizer step k trains at the schedule's step k + this: 1 as cifar10-fast, 0 as PyTorch's schedulers", choices=(0, 1))
    warmup_epochs: float | None = setting(None, "piecewise: epoch of the peak", at_least=0, at_most=MAX_EPOCHS, shown="5/24 of the epochs")
    lr_start: float = setting(0.0, "piecewise: learning rate at step 0, as a fraction of --lr (airbench: 0.2)", at_least=0, at_most=1)
    lr_end: float = setting(0.0, "piecewise: learning rate at the end, as a fraction of --lr (airbench94: 0.07)", at_least=0, at_most=1)
    milestones: str = setting("", "step: epochs at which the learning rate is multiplied by --decay, e.g. '81,122'")
    decay: float = setting(0.1, "step: factor at each milestone", above=0, at_most=1)
    base_lr: float = setting(0.0, "cyclic: lower learning rate", at_least=0, at_most=MAX_LR)
    step_size: int | None = setting(None, "cyclic: half a cycle, in iterations", above=0, at_most=MAX_STEPS, shown="2 epochs")
    gamma: float = setting(0.99994, "exp_range: decay per iteration", above=0, at_most=1)
    scale_fn: str | None = setting(None, "cyclic: custom scale function of x, e.g. '0.5*(1+sin(x*pi/2.5))'")
    pct_start: float = setting(0.25, "onecycle: fraction of steps spent warming up", at_least=0, below=1)
    anneal: str = setting("cos", "onecycle: cos or linear annealing", choices=("cos", "linear"))
    cycle_momentum: bool = setting(True, "onecycle: cycle the momentum (Adam's beta_1) 0.95 -> 0.85 -> 0.95 against the learning rate, as PyTorch's OneCycleLR")
    batch_norm: bool = setting(True, "batch normalisation after each convolution")
    l1: float = setting(0.0, "L1 kernel regularisation", at_least=0, at_most=1)
    l2: float = setting(0.0, "L2 kernel regularisation (on top of weight decay)", at_least=0, at_most=1)
    dropout: float = setting(0.0, "dropout rate before the classifier", at_least=0, below=1)
    crop_padding: int = setting(4, "random crop after padding by this many pixels (0: off)", at_least=0, below=IMAGE_SIZE)
    crop_mode: str = setting("reflect", "padding for the crop: reflect or constant (zeros)", choices=("reflect", "constant"))
    flip: bool = setting(True, "random left-right flips")
    alternating_flip: bool = setting(False, "airbench's derandomised flip, in the device feed: every image mirrored in every other epoch (replaces --flip)")
    cutout: int = setting(8, "cutout square side in pixels (0: off)", at_least=0, at_most=IMAGE_SIZE)
    cutout_mode: str = setting("inside", "inside: the square wholly in the image (DavidNet); centre: centred on any pixel and clipped at the border (DeVries & Taylor, Hoffer et al.)", choices=CUTOUT_MODES)
    mixup: float = setting(0.0, "mixup Beta(alpha) parameter (0: off)", at_least=0.01, at_most=100, off=0)
    copies: int = setting(1, "batch augmentation: copies of each sample in a batch", above=0, at_most=64)
    target: float | None = setting(None, "test accuracy to time: DAWNBench's 0.94, or 0.91 on the JPEG copy (its equivalent)", above=0, at_most=1, hint="a fraction, e.g. 0.94 for 94%", shown="the data's 94%")
    eval_every: int = setting(1, "evaluate the test set every k epochs (the last epoch always); 0: only after training, as airbench times it", at_least=0, at_most=MAX_EPOCHS)
    tta: int = setting(0, "test-time augmentation of the final evaluation: 0 none, 1 mirror, 2 mirror and 1-px translations (reported beside the plain accuracy)", choices=(0, 1, 2))
    seed: int = setting(0, "random seed", at_least=0, at_most=2**32 - 1)
    subset: int | None = setting(None, "train on the first N training images", above=0, at_most=MAX_IMAGES, shown="all")
    pipeline: str = setting("auto", "training feed: auto (tf.data on TensorFlow, device elsewhere), device, tfdata", choices=("auto", "device", "tfdata"))
    loop: str = setting("fit", "fit: Keras's loop, one dispatch per batch; scan: each epoch one compiled loop (JAX, device feed; for accelerators: slow on CPU); auto: scan on JAX with a GPU", choices=("auto", "fit", "scan"))
    precompile: bool = setting(False, "compile the train and test steps on dummy data before the run, so the timed run excludes compilation (JAX)")
    precision: str = setting("auto", "auto (mixed bf16 on a GPU), float32, mixed_bfloat16", choices=("auto", "float32", "mixed_bfloat16"))
    devices: str = setting("1", "data-parallel devices: 1, N or all (JAX: keras.distribution.DataParallel; TensorFlow: MirroredStrategy); --batch-size is the global batch, split across them")
    sync_batch_norm: bool = setting(False, "TensorFlow on several devices: batch-norm moments over the global batch (synchronized=True, an all-reduce per layer and step) instead of each replica's share; on JAX they always are")
    verbose: int = setting(1, "Keras progress bar: 0 none, 1 bar, 2 a line per epoch", choices=(0, 1, 2))
    checkpoint: bool = setting(True, "save model and optimizer after every epoch (for --resume)")
    save_model: bool = setting(True, "save the trained model as model.keras")

    def __post_init__(self):
        # Every setting's own checks, then the ones between settings: all of
        # them here, so that a bad run stops before any data is loaded.
        for field in dataclasses.fields(self):
            if field.name != "scale_fn":  # below, on every cycle of this run
                check(field.name, getattr(self, field.name))
        self.model = MODEL_ALIASES.get(self.model, self.model)
        if (self.optimizer == "muon" or self.bias_lr_scale != 1) and (self.clipnorm or self.clipvalue):
            raise ValueError("gradient clipping is for a single optimizer: drop --clipnorm/--clipvalue with --optimizer muon or --bias-lr-scale")
        if self.optimizer == "adam" and (self.bias_lr_scale != 1 or self.head_lr is not None or self.whiten_bias_epochs):
            raise ValueError(
                "--bias-lr-scale, --head-lr and --whiten-bias-epochs give their variables their own SGD: "
                "use them with --optimizer sgd or muon"
            )
        if self.head_lr is not None and (self.clipnorm or self.clipvalue):
            raise ValueError("gradient clipping is for a single optimizer: drop --clipnorm/--clipvalue with --head-lr")
        if self.zero_init_residual and self.model != "resnet44":
            raise ValueError(f"zero_init_residual: a setting of the resnet44 model; this run's model is {self.model}")
        only = [name for name in AIRBENCH94_ONLY if getattr(self, name) != DEFAULTS[name]]
        if self.model != "airbench94" and only:
            raise ValueError(f"{', '.join(only)}: settings of the airbench94 (fastnet) model; this run's model is {self.model}")
        if self.model == "airbench94" and (not self.batch_norm or self.l1 or self.l2 or self.dropout):
            raise ValueError("airbench94 (fastnet) has batch norm and no kernel regularisation or dropout: drop --no-batch-norm, --l1, --l2 and --dropout")
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup epochs must be between 0 and the {self.epochs} epochs. Got: {self.warmup_epochs}")
        if SCHEDULES[self.schedule] == SCHEDULES["triangular"] and self.base_lr > self.lr:  # the cyclic ones
            raise ValueError(f"base_lr, the cycle's lower learning rate, must be at most --lr {self.lr:g}. Got: {self.base_lr:g}")
        if self.batch_size * self.copies > MAX_IMAGES_PER_STEP:
            raise ValueError(
                f"batch_size x copies must be at most {MAX_IMAGES_PER_STEP} images per step. "
                f"Got: {self.batch_size} x {self.copies} = {self.batch_size * self.copies}"
            )
        if self.subset is not None and self.batch_size > self.subset:
            # davidnet.studies.check_batch_size's words: it checks again on the data.
            raise ValueError(f"--batch-size {self.batch_size} is larger than the {self.subset} training images: give a smaller --batch-size or a larger --subset")
        if self.schedule == "step" or self.milestones:
            parse_milestones(self.milestones, self.epochs)
        check("scale_fn", self.scale_fn, last_cycle=self.last_cycle())
        self.devices = str(parse_devices(self.devices))

    def last_cycle(self):
        """The last cycle number a cyclic schedule's scale function gets (its x,
        from 1), on CIFAR-10's 50,000 training images or the --subset of them
        (the run's data is not loaded yet: the schedule checks again on it)."""
        steps_per_epoch = max(1, min(self.subset or CIFAR10_TRAIN_IMAGES, CIFAR10_TRAIN_IMAGES) // self.batch_size)
        step_size = self.step_size or 2 * steps_per_epoch
        last_step = self.epochs * steps_per_epoch - 1 + self.lr_step_offset
        return 1 + last_step // (2 * step_size)


FIELDS = {field.name: field for field in dataclasses.fields(Config)}
DEFAULTS = {name: field.default for name, field in FIELDS.items()}


_BOUNDS = (("above", ">", operator.gt), ("at_least", ">=", operator.ge), ("below", "<", operator.lt), ("at_most", "<=", operator.le))
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _kinds(name):
    """The types a setting takes: `float | None` -> (float, NoneType)."""
    annotation = FIELDS[name].type
    return typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)


def _is(value, kind):
    if kind is type(None):
        return value is None
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


def problem(name, value, *, last_cycle=1):
    """What is wrong with `value` for the setting `name` (e.g. "must be > 0"):
    its type, its choices, its bounds, a finite number, a text setting's
    syntax; None if nothing is. One line, without the value.

    `last_cycle`: for scale_fn, its values are checked at the cycles 1 ..
    last_cycle (`Config.last_cycle`; a flag alone knows only the first)."""
    meta = FIELDS[name].metadata
    kinds = _kinds(name)
    if name == "devices":  # text or a count (Config(devices=2))
        try:
            parse_devices(value)
        except ValueError:
            return f"must be 'all' or a positive integer up to {MAX_DEVICES}"
        return None
    if not any(_is(value, kind) for kind in kinds):
        return "must be " + " or ".join("none" if kind is type(None) else _KINDS[kind] for kind in kinds)
    if meta["choices"] is not None and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _text_problem(name, value, last_cycle)
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # an int is finite, however large
        return "must be a finite number"
    if meta["off"] is not None and value == meta["off"]:
        return None
    if any(meta[key] is not None and not holds(value, meta[key]) for key, _, holds in _BOUNDS):
        hint = f" ({meta['hint']})" if meta["hint"] else ""
        return f"must be {bounds_text(name)}{hint}"
    return None


def _text_problem(name, text, last_cycle):
    if name == "scale_fn":
        return _scale_fn_problem(text, last_cycle) if text else None
    if len(text) > MAX_TEXT:
        return f"must be at most {MAX_TEXT} characters"
    if name == "milestones" and text.strip():
        try:
            parse_milestones(text, math.inf)
        except ValueError:
            return "must be increasing epochs above 0 separated by commas, e.g. '82,123'"
    return None


def check(name, value, **context):
    """Raises ValueError (one line) if `value` is not allowed for the setting `name` (`problem`)."""
    why = problem(name, value, **context)
    if why:
        raise ValueError(f"{name} {why}. Got: {shown(value)}")


def _number_text(value):
    text = str(value) if isinstance(value, int) else f"{value:g}"
    return text.replace("e+", "e").replace("e0", "e").replace("e-0", "e-")


def bounds_text(name):
    """'> 0', '>= 0 and < 1', '0 (off) or >= 0.01 and <= 100', ...: the setting's bounds in words ('' if none)."""
    meta = FIELDS[name].metadata
    text = " and ".join(f"{symbol} {_number_text(meta[key])}" for key, symbol, _ in _BOUNDS if meta[key] is not None)
    return f"{_number_text(meta['off'])} (off) or {text}" if meta["off"] is not None and text else text


def default_text(name):
    """How the setting's default reads in --help and the README."""
    meta = FIELDS[name].metadata
    if meta["shown"] is not None:
        return meta["shown"]
    default = DEFAULTS[name]
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None or default == "":
        return "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def help_text(name):
    return FIELDS[name].metadata["help"]


def _scale_fn_problem(text, last_cycle):
    """What is wrong with a --scale-fn formula over the cycles 1 .. `last_cycle`
    of a run (None if nothing is): its parser and range check live with the
    schedules (`davidnet.schedules.expressions`, NumPy only)."""
    from davidnet.schedules.expressions import ScaleExpressionError, checked_scale_fn

    try:
        checked_scale_fn(text, last_cycle)
    except ScaleExpressionError as e:
        return f"is not a usable scale function: {e.reason}"
    return None


# The settings' choices by name, derived from the definitions (the benchmark's flags use them).
CHOICES = {name: field.metadata["choices"] for name, field in FIELDS.items() if field.metadata["choices"] is not None}
