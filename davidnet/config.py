"""The settings of one training run: `Config`, with its choices and bounds.

Importing this module costs no Keras, TensorFlow or JAX, so a command line can
check its flags (and a run can fail on bad data) in a fraction of a second,
before the backend is loaded.
"""

import dataclasses

CUTOUT_MODES = ("inside", "centre")  # pipelines.augment.cutout's modes (a test checks they agree)


def parse_devices(setting):
    """"all" or a positive integer (as text or int) -> "all" or that int."""
    text = str(setting).strip().lower()
    if text == "all":
        return "all"
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"devices must be 'all' or a positive integer. Got: {setting!r}")


SCHEDULES = ("piecewise", "step", "triangular", "triangular2", "exp_range", "onecycle")
CHOICES = {
    "model": ("davidnet", "resnet9", "resnet44", "fastnet"),
    "activation": ("relu", "gelu"),
    "optimizer": ("sgd", "adam", "muon"),
    "schedule": SCHEDULES,
    "anneal": ("cos", "linear"),
    "crop_mode": ("reflect", "constant"),
    "cutout_mode": CUTOUT_MODES,
    "lr_step_offset": (0, 1),
    "pipeline": ("auto", "device", "tfdata"),
    "loop": ("auto", "fit", "scan"),
    "precision": ("auto", "float32", "mixed_bfloat16"),
    "verbose": (0, 1, 2),
    "tta": (0, 1, 2),
}
FASTNET_ONLY = ("activation", "whiten", "dirac", "frozen_bn_scale", "whiten_bias_epochs")
POSITIVE = ("bias_lr_scale", "epochs", "batch_size", "copies", "subset", "step_size", "width", "decay", "ns_steps", "head_lr")
NON_NEGATIVE = ("eval_every", "lr", "muon_lr", "lookahead", "lr_start", "lr_end", "weight_decay", "label_smoothing", "crop_padding", "cutout", "mixup", "base_lr", "l1", "l2", "dropout", "whiten_bias_epochs")


@dataclasses.dataclass
class Config:
    """One training run. Defaults are DavidNet's DAWNBench recipe."""

    model: str = "davidnet"  # davidnet | resnet9 (the Adam one-cycle tutorial's) | resnet44 | fastnet (airbench94_muon's network)
    width: float = 1.0  # channel multiplier
    activation: str = "relu"  # fastnet: relu | gelu (DavidNet and ResNet-44 are ReLU networks)
    whiten: bool = False  # fastnet: first conv's kernel from the training images' patch whitening, frozen
    dirac: bool = False  # fastnet: identity-initialised 3x3 convs
    frozen_bn_scale: bool = False  # fastnet: batch norms without a trainable scale
    whiten_bias_epochs: float = 0.0  # fastnet: the whitening bias's LR falls to 0 over these epochs, then it is frozen (airbench94_muon: 3; 0: the run's schedule)
    zero_init_residual: bool = False  # resnet44: each block's last batch-norm scale starts at 0 (Hoffer et al.'s code)
    epochs: int = 24
    batch_size: int = 512
    optimizer: str = "sgd"  # sgd | adam | muon (Muon for conv filters, SGD for the rest)
    lr: float = 0.4  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True  # SGD: Nesterov momentum (He et al. and Hoffer et al.: plain)
    lr_in_buffer: bool = True  # SGD: the momentum buffer holds lr * gradients (cifar10-fast, Keras) rather than gradients scaled by the current lr (torch.optim.SGD)
    muon_lr: float = 0.24  # muon: the conv filters' peak learning rate (the rest: SGD at lr)
    ns_steps: int = 3  # muon: Newton-Schulz iterations, in bfloat16 (airbench94_muon: 3)
    head_lr: float | None = None  # sgd/muon: the classifier kernel's peak learning rate, its own SGD (airbench94_muon: 1340); None: lr
    bias_lr_scale: float = 1.0  # SGD's learning rate for biases and batch-norm betas, times this (airbench94: 64)
    lookahead: int = 0  # lookahead every k steps, airbench's alpha schedule (0: off; airbench94: 5)
    weight_decay: float = 5e-4  # PyTorch's coupled L2: wd * w added to the gradient (see module docstring)
    weight_decay_kernels_only: bool = False  # no decay on biases and batch-norm parameters (Hoffer et al.)
    clipnorm: float | None = None  # clip each gradient's norm
    clipvalue: float | None = None  # clip each gradient element (the Adam one-cycle recipe: 0.1)
    label_smoothing: float = 0.0
    schedule: str = "piecewise"
    lr_step_offset: int = 1  # optimizer step k trains at the schedule's step k + this (cifar10-fast: 1; PyTorch schedulers: 0)
    warmup_epochs: float | None = None  # piecewise peak epoch; None: 5/24 of the run (5 of 24 as DavidNet)
    lr_start: float = 0.0  # piecewise: the learning rate at step 0, as a fraction of lr (airbench: 0.2)
    lr_end: float = 0.0  # piecewise: the learning rate at the end, as a fraction of lr (airbench94: 0.07)
    milestones: str = ""  # step: epochs at which the LR is multiplied by `decay`, e.g. "82,123"
    decay: float = 0.1  # step: the factor at each milestone
    base_lr: float = 0.0  # cyclic: lower bound
    step_size: int | None = None  # cyclic: half-cycle in iterations (default: 2 epochs)
    gamma: float = 0.99994  # exp_range
    scale_fn: str | None = None  # cyclic: custom scale, e.g. "0.5*(1+sin(x*pi/2.5))"
    pct_start: float = 0.25  # onecycle: warm-up fraction
    anneal: str = "cos"  # onecycle: cos | linear
    cycle_momentum: bool = True  # onecycle: momentum (Adam's beta_1) 0.95 -> 0.85 -> 0.95 against the LR, as PyTorch's OneCycleLR
    batch_norm: bool = True  # False: the normalisation ablation
    l1: float = 0.0  # kernel regularisation (ablations)
    l2: float = 0.0
    dropout: float = 0.0  # before the classifier
    crop_padding: int = 4
    crop_mode: str = "reflect"
    flip: bool = True
    alternating_flip: bool = False  # airbench's derandomised flip in the device feed, instead of random flips
    cutout: int = 8  # cutout square side, 0 = off
    cutout_mode: str = "inside"  # inside: wholly in the image (DavidNet) | centre: centred on any pixel, clipped (DeVries & Taylor)
    mixup: float = 0.0  # Beta(alpha) mixup, 0 = off
    copies: int = 1  # batch augmentation: copies of each sample per batch
    target: float | None = None  # test accuracy to time; None: the data's equivalent of DAWNBench's 94% (0.91 on the JPEG copy)
    eval_every: int = 1  # 0: only after training (as airbench times it)
    tta: int = 0  # test-time augmentation of the final evaluation: 0 none, 1 mirror, 2 mirror + 1-px translations
    seed: int = 0
    subset: int | None = None  # first N training images
    pipeline: str = "auto"  # auto | device | tfdata
    loop: str = "fit"  # fit: Keras's loop, a dispatch per batch | scan: each epoch one compiled loop (JAX) | auto: scan on JAX with a GPU
    precompile: bool = False  # compile the train and test steps on dummy data before the timed run (JAX)
    precision: str = "auto"  # auto (bf16 on GPU) | float32 | mixed_bfloat16
    devices: str = "1"  # data parallelism: "1", N or "all" devices; batch_size is the global batch
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch
    checkpoint: bool = True  # save model and optimizer after every epoch, for --resume
    save_model: bool = True

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}. Got: {getattr(self, name)!r}")
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0. Got: {value}")
        for name in NON_NEGATIVE:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0. Got: {getattr(self, name)}")
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError(f"target must be a test accuracy in (0, 1]. Got: {self.target}")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("dropout and label_smoothing must be in [0, 1)")
        if self.lr_start > 1 or self.lr_end > 1:
            raise ValueError(f"lr_start and lr_end are fractions of lr, in [0, 1]. Got: {self.lr_start}, {self.lr_end}")
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
        fastnet_only = [name for name in FASTNET_ONLY if getattr(self, name) != getattr(Config, name)]
        if self.model != "fastnet" and fastnet_only:
            raise ValueError(f"{', '.join(fastnet_only)}: settings of the fastnet model; this run's model is {self.model}")
        if self.model == "fastnet" and (not self.batch_norm or self.l1 or self.l2 or self.dropout):
            raise ValueError("fastnet has batch norm and no kernel regularisation or dropout: drop --no-batch-norm, --l1, --l2 and --dropout")
        self.devices = str(parse_devices(self.devices))
