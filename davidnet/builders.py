"""Building a run's parts from a `Config`: the model, the optimizer, the
learning-rate schedule, the precision, and the compiled model.

Models and schedules come from the registries in `davidnet.config` (name ->
builder); their builders are here.

Weight decay is PyTorch's, coupled: `config.weight_decay * w` is added to
the gradient before the momentum (and Adam's moments), as in every reference
here. DavidNet (cifar10-fast) used 5e-4 x batch size on a summed loss with the
LR divided by the batch size; on Keras's mean loss the batch-size factors
cancel, leaving 5e-4. The optimizers are `davidnet.torch_optimizers`' TorchSGD
and TorchAdam: PyTorch's update rules (see there), which Keras's SGD (decoupled
decay) and Adam (epsilon inside the square root's correction, fixed beta_1)
only approximate.
"""

import collections
import re

import keras

from davidnet import hardware, models, optimizers, schedules, torch_optimizers
from davidnet.config import MODELS, SCHEDULES, builder, parse_milestones
from davidnet.distribute import process_share
from davidnet.fastnet import fastnet, patch_whitening_kernel
from pipelines.augment import normalize
from pipelines.feeds import make_feed

AIRBENCH94_WIDTHS = (64, 256, 256)  # airbench94's, before --width


def build_model(config, x_train=None, num_classes=10):
    """The model the config names (`davidnet.config.MODELS`), with `num_classes`
    outputs (the data's classes). `x_train` (uint8 training images) is needed
    for airbench94's whitening (`config.whiten`)."""
    with hardware.one_off_compiles():  # the initialisers
        return builder(MODELS, config.model)(config, x_train, num_classes)


def augmentation(config):
    """The in-model augmentation's settings (`pipelines.augment.BatchAugmentation`)."""
    return {
        "crop_padding": config.crop_padding,
        "crop_mode": config.crop_mode,
        "flip": config.flip and not config.alternating_flip,  # the feed flips instead
        "cutout_size": config.cutout,
        "cutout_mode": config.cutout_mode,
        "seed": config.seed,
    }


def _resnet(network, config, num_classes, **options):
    return network(
        num_classes=num_classes,
        width=config.width,
        augmentation=augmentation(config),
        batch_norm=config.batch_norm,
        l1=config.l1,
        l2=config.l2,
        dropout=config.dropout,
        **options,
    )


def davidnet_model(config, x_train=None, num_classes=10):
    return _resnet(models.davidnet, config, num_classes)


def resnet9_model(config, x_train=None, num_classes=10):
    return _resnet(models.resnet9, config, num_classes)


def resnet44_model(config, x_train=None, num_classes=10):
    return _resnet(models.resnet_cifar, config, num_classes, **({"zero_init_residual": True} if config.zero_init_residual else {}))


def airbench94_model(config, x_train=None, num_classes=10):
    kernel = None
    if config.whiten:
        if x_train is None:
            raise ValueError("the whitening initialisation needs the training images: build_model(config, x_train)")
        # airbench whitens with 5000 training images.
        kernel = patch_whitening_kernel(keras.ops.convert_to_numpy(normalize(x_train[:5000])))
    return fastnet(
        num_classes=num_classes,
        widths=tuple(models.scaled(channels, config.width) for channels in AIRBENCH94_WIDTHS),
        augmentation=augmentation(config),
        whitening_kernel=kernel,
        activation=config.activation,
        dirac=config.dirac,
        frozen_bn_scale=config.frozen_bn_scale,
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
    """The learning-rate callback the config names (`davidnet.config.SCHEDULES`); peaks at `config.lr`."""
    return builder(SCHEDULES, config.schedule)(config, steps_per_epoch)


def piecewise_schedule(config, steps_per_epoch):
    """0 (or lr_start) -> lr at `warmup_epochs` -> 0 (or lr_end), linear (DavidNet, airbench)."""
    peak = config.warmup_epochs if config.warmup_epochs is not None else config.epochs * 5 / 24
    start, end = config.lr * config.lr_start, config.lr * config.lr_end
    return schedules.PiecewiseLinear([0, peak, config.epochs], [start, config.lr, end], steps_per_epoch, config.lr_step_offset)


def step_schedule(config, steps_per_epoch):
    """He et al.'s regime: constant, multiplied by `decay` at each milestone.
    Repeated knots make PiecewiseLinear jump there."""
    milestones = parse_milestones(config.milestones, config.epochs)
    knots, values = [0.0], [config.lr]
    for i, epoch in enumerate(milestones):
        knots += [epoch, epoch]
        values += [config.lr * config.decay**i, config.lr * config.decay ** (i + 1)]
    knots.append(float(config.epochs))
    values.append(values[-1])
    return schedules.PiecewiseLinear(knots, values, steps_per_epoch, config.lr_step_offset)


def cyclic_schedule(config, steps_per_epoch):
    """Smith's cyclic schedules; `config.schedule` is the mode."""
    scale_fn = schedules.scale_fn_from_expression(config.scale_fn) if config.scale_fn else None
    return schedules.Cyclic(
        config.base_lr,
        config.lr,
        config.step_size or 2 * steps_per_epoch,
        mode=config.schedule,
        gamma=config.gamma,
        scale_fn=scale_fn,
        steps_per_epoch=steps_per_epoch,
        step_offset=config.lr_step_offset,
    )


def onecycle_schedule(config, steps_per_epoch):
    """PyTorch's OneCycleLR (its phase ends)."""
    return schedules.OneCycle(
        config.lr,
        total_steps=config.epochs * steps_per_epoch,
        pct_start=config.pct_start,
        anneal=config.anneal,
        steps_per_epoch=steps_per_epoch,
        step_offset=config.lr_step_offset,
    )


def set_precision(precision):
    """Applies the dtype policy; "auto" is mixed bf16 on a GPU, float32 elsewhere."""
    if precision == "auto":
        precision = "mixed_bfloat16" if hardware.has_gpu() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision



def compile_model(config, x_train=None, learning_rate=0.0, momentum=None, num_classes=10):
    """The run's model, compiled as every run compiles it: the config's model
    (`build_model`), its optimizer at `learning_rate` (a float, or the schedule
    in the graph) with `momentum` (a schedule, or None: the config's), the
    cross-entropy on logits with the config's label smoothing, and accuracy.
    The one assembly that `davidnet.training.train`, the LR range test and the
    step benchmark share."""
    model = build_model(config, x_train, num_classes)
    model.compile(
        optimizer=build_optimizer(config, learning_rate, model, momentum),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    # Without a tf.distribute strategy, Keras on TensorFlow creates the optimizer's
    # slots inside the first traced train step, and a tf.function whose first trace
    # creates variables is traced again: about 2 s more of every run's start on a
    # CPU. Built here, they exist before fit (JAX's fit builds them up front too).
    if not model.optimizer.built:
        with hardware.one_off_compiles():  # its slots' initialisers
            model.optimizer.build(model.trainable_variables)
    return model


Run = collections.namedtuple("Run", "model feed lr_callback x_train y_train steps_per_epoch total_steps")


def assemble_run(config, data, *, host_augment=None, scan=False, schedule_in_graph=True):
    """The run a config describes, on `data` (a `pipelines.cifar10.Cifar10`):
    its training images (the first `config.subset`), the feed, the schedule
    and the compiled model (`compile_model`). `davidnet.training.train` and the
    LR range test (experiments/lr_schedules.py) both start from it.

    Args:
        host_augment: a host augmenter for the tf.data feed (see `train`).
        scan: the feed serves the scanned loop (`--loop scan`).
        schedule_in_graph: the schedule runs in the train step and its
            callback only records (training); False: the optimizer starts at
            a plain learning rate of 0 that a callback sets (the range test).

    Returns:
        A `Run`: model, feed, lr_callback, x_train, y_train, steps_per_epoch, total_steps.
    """
    x_train, y_train = data.x_train, data.y_train
    if config.subset:
        x_train, y_train = x_train[: config.subset], y_train[: config.subset]
    feed = make_feed(
        config.pipeline, x_train, y_train, config.batch_size,
        num_classes=len(data.class_names), seed=config.seed, mixup_alpha=config.mixup, copies=config.copies,
        host_augment=host_augment, free_bytes=hardware.device_memory_free(), process=process_share(),
        scan=scan, alternating_flip=config.alternating_flip,
    )
    steps_per_epoch = len(x_train) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    lr_callback = build_schedule(config, steps_per_epoch)
    learning_rate, momentum = 0.0, None
    if schedule_in_graph:  # the callback then only records it
        learning_rate = lr_callback.in_graph(total_steps)
        momentum = momentum_schedule(config, lr_callback, total_steps)
    model = compile_model(config, x_train, learning_rate, momentum, num_classes=len(data.class_names))
    return Run(model, feed, lr_callback, x_train, y_train, steps_per_epoch, total_steps)
