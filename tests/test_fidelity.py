"""Each recipe is its reference's recipe: the values of docs/fidelity.md, read back from what is built.

DavidNet: cifar10-fast (`dawn.py`, `dawn_utils.py`, `torch_backend.py`, `core.py`).
The fast preset: airbench94_muon.py (KellerJordan/cifar10-airbench).
ResNet-44: He et al. 2016 and Hoffer et al.'s convNet.pytorch (`models/resnet.py`, `preprocess.py`).
The one-cycle recipe: the ResNet-9 tutorial with PyTorch's OneCycleLR and Adam.
Each test reads the setting from the built object (model, optimizer, schedule),
not from the config, so a change anywhere on the way fails here.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.config_files import load_config
from davidnet.optimizers import NEWTON_SCHULZ_COEFFICIENTS, Muon
from davidnet.torch_optimizers import TorchAdam, TorchSGD
from davidnet.builders import build_model, build_optimizer, build_schedule, momentum_schedule
from davidnet.config import Config
from pipelines.augment import CIFAR10_MEAN, CIFAR10_STD, BatchAugmentation, cutout
from tests.conftest import host_kernel_init

RECIPES = Path(__file__).resolve().parents[1] / "experiments" / "recipes"


def np_(x):
    return ops.convert_to_numpy(x)


def recipe(name, **overrides):
    return Config(**{**load_config(RECIPES / f"{name}.toml", Config), **overrides})


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def groups_of(optimizer, model):
    """variable path -> the sub-optimizer of a MultiOptimizer that updates it."""
    optimizer.build(model.trainable_variables)
    return {v.path: sub for sub in optimizer.optimizers if sub.built for v in sub._trainable_variables}


# --- DavidNet: cifar10-fast ----------------------------------------------------------------


@pytest.fixture(scope="module")
def davidnet_half():
    """DavidNet at half width, for the tests of its layers and optimizer: kernels drawn on the
    host (conftest). The test of the kernels' init builds its own, drawn by Keras."""
    with host_kernel_init():
        return build_model(Config(width=0.5))


def test_davidnet_recipe_settings_are_cifar10_fasts():
    config = Config()
    # dawn.py: 24 epochs, batch 512, PiecewiseLinear([0, 5, 24], [0, 0.4, 0]), Crop(32, 32) of a
    # 4-px reflect pad, FlipLR, Cutout(8, 8); SGD weight_decay 5e-4 x batch on a summed loss
    # (5e-4 on a mean), momentum 0.9, Nesterov (nesterov_update); no label smoothing, no mixup.
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay) == (24, 512, 0.4, 0.9, 5e-4)
    assert (config.crop_padding, config.crop_mode, config.flip, config.cutout, config.cutout_mode) == (4, "reflect", True, 8, "inside")
    assert (config.label_smoothing, config.mixup, config.copies, config.alternating_flip) == (0.0, 0.0, 1, False)
    # core.py / torch_backend.py: cifar10_mean and cifar10_std, in pixel units.
    assert CIFAR10_MEAN == (125.31, 122.95, 113.87) and CIFAR10_STD == (62.99, 62.09, 66.70)


def test_davidnet_schedule_reads_step_plus_one_as_cifar10_fasts_optimiser():
    """opt_step increments step_number before it evaluates lr_schedule(step / 97) / batch_size."""
    schedule = build_schedule(Config(), steps_per_epoch=97)
    table = schedule.in_graph(24 * 97).values
    expected = np.interp((np.arange(24 * 97) + 1) / 97, [0, 5, 24], [0, 0.4, 0])
    np.testing.assert_allclose(table, expected, rtol=1e-12)
    assert table[0] == pytest.approx(0.4 / (5 * 97)) and table[-1] == 0.0  # the last step trains at 0


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_davidnet_model_is_cifar10_fasts_net(davidnet_half):
    model = davidnet_half
    augment = model.get_layer("augment")
    assert isinstance(augment, BatchAugmentation)
    assert (augment.crop_padding, augment.crop_mode, augment.flip, augment.cutout_size, augment.cutout_mode) == (4, "reflect", True, 8, "inside")
    for bn in layers_of(model, keras.layers.BatchNormalization):
        # BatchNorm(eps=1e-05, momentum=0.1) in PyTorch's convention; weight 1, bias 0.
        assert (bn.momentum, bn.epsilon, bn.scale, bn.center) == (0.9, 1e-5, True, True)
        assert np.all(np_(bn.gamma) == 1) and np.all(np_(bn.beta) == 0)
    for conv in layers_of(model, keras.layers.Conv2D):
        assert conv.use_bias is False and conv.kernel_size == (3, 3) and conv.padding == "same"
    linear = model.get_layer("linear")
    assert linear.use_bias is False and model.get_layer("logits").scale == 0.125  # Mul(0.125)


@pytest.mark.one_backend("tensorflow")  # Keras's initializers, the same formulas on either backend
def test_davidnet_weights_start_from_pytorchs_default_init():
    """nn.Conv2d and nn.Linear: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)."""
    # Its own model, drawn by Keras (on JAX each kernel shape's draw is a second of XLA compilation).
    model = build_model(Config(width=0.5))
    kernels = [layer.kernel for layer in layers_of(model, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(kernels) == 9
    for kernel in kernels:
        w = np_(kernel)
        fan_in = int(np.prod(w.shape[:-1]))
        bound = 1 / np.sqrt(fan_in)
        # (a float32 draw may round up to the bound's float32 value)
        assert np.abs(w).max() <= np.float32(bound) and np.abs(w).max() > 0.95 * bound, kernel.path
        # std within 10% (the prep conv has the fewest weights: 3 * 9 * 32 = 864, 4 standard errors).
        assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.1), kernel.path
        # Keras's default (Glorot uniform) would be 1.4-1.7x wider for these convs.


def test_davidnet_optimizer_is_cifar10_fasts_sgd_on_every_parameter(davidnet_half):
    optimizer = build_optimizer(Config(), 0.1)
    optimizer.build(davidnet_half.trainable_variables)
    assert isinstance(optimizer, TorchSGD) and optimizer.lr_in_buffer and optimizer.nesterov
    assert (optimizer.momentum, optimizer.weight_decay) == (0.9, 5e-4)
    # trainable_params(model): the decay reaches batch-norm weights and biases too.
    assert all(optimizer._use_weight_decay(v) for v in davidnet_half.trainable_variables)


def cifar10_fast_nesterov_update(w, dw, v, lr, weight_decay, momentum):
    """torch_backend.nesterov_update, transcribed (in place there, functional here)."""
    dw = (dw + weight_decay * w) * -lr
    v = momentum * v + dw
    return w + dw + momentum * v, v


def test_davidnet_sgd_steps_are_cifar10_fasts_coupled_update():
    """Five steps of the recipe's optimizer on the recipe's schedule (steps 1-5 of 97 x 24)
    against nesterov_update; the decoupled mapping the project used before
    (Keras SGD, weight_decay 5e-4 / (1 - 0.9)) is only an approximation of it."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 3, 16, 16)) / np.sqrt(3 * 144)
    grads = rng.normal(size=(5, *w0.shape)) * 1e-2
    config = Config()
    table = build_schedule(config, 97).in_graph(24 * 97)
    variable = keras.Variable(w0.astype("float32"))
    optimizer = build_optimizer(config, table)
    decoupled = keras.Variable(w0.astype("float32"))
    approximation = keras.optimizers.SGD(table, momentum=0.9, nesterov=True, weight_decay=5e-4 / 0.1)
    w, v = w0, 0.0
    for step, g in enumerate(grads):
        optimizer.apply([g.astype("float32")], [variable])
        approximation.apply([g.astype("float32")], [decoupled])
        w, v = cifar10_fast_nesterov_update(w, g, v, lr=(step + 1) / (5 * 97) * 0.4, weight_decay=5e-4, momentum=0.9)
    np.testing.assert_allclose(np_(variable), w, rtol=1e-5, atol=1e-7)
    # Measured: the decoupled steps differ by 1.3% of the total change after these 5 steps
    # (its decay acts at once, the coupled one through the momentum).
    change = np.linalg.norm(w - w0)
    assert 1e-3 < np.linalg.norm(np_(decoupled) - w) / change < 2e-2


# --- The fast preset: airbench94_muon --------------------------------------------------------

FAST_STEPS = 25  # 50000 // 2000 steps per epoch; 200 steps in 8 epochs


@pytest.fixture(scope="module")
def fast():
    """The preset at 1/8 width (the settings do not depend on it), its schedule and optimizer.
    Its VarianceScaling draws are made on the host (conftest; no test here checks their
    distribution); what is checked of its init (the whitening bias's RandomUniform, the head
    standardised to std 1) still runs as the recipe builds it."""
    config = recipe("fast", width=0.125)
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype("uint8")
    with host_kernel_init():
        model = build_model(config, images)
    schedule = build_schedule(config, FAST_STEPS)
    optimizer = build_optimizer(config, schedule.in_graph(8 * FAST_STEPS), model)
    return config, model, optimizer


def test_fast_preset_settings_are_airbench94_muons(fast):
    config, _, _ = fast
    # main(): batch_size 2000, 8 epochs, label_smoothing 0.2, aug flip (every other epoch) + translate 2
    # (reflect pad), tta_level 2 at the end, no per-epoch evaluation in the timing.
    assert (config.batch_size, config.epochs, config.label_smoothing) == (2000, 8, 0.2)
    assert (config.crop_padding, config.crop_mode, config.cutout, config.flip, config.alternating_flip) == (2, "reflect", 0, False, True)
    assert (config.tta, config.eval_every, config.lookahead, config.mixup) == (2, 0, 0, 0.0)


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_fast_preset_network_is_airbench94_muons_cifarnet(fast):
    config, model, _ = fast
    for bn in layers_of(model, keras.layers.BatchNormalization):
        # BatchNorm(momentum=0.6, eps=1e-12) passes 1 - 0.6 to PyTorch: the running stats keep 0.6.
        assert (bn.momentum, bn.epsilon, bn.scale, bn.center) == (0.6, 1e-12, False, True)
    whiten = model.get_layer("whiten")
    assert whiten.kernel.trainable is False and whiten.bias.trainable
    bias = np_(whiten.bias)  # nn.Conv2d's default bias init, fan_in 3 * 2 * 2
    assert np.abs(bias).max() <= 1 / np.sqrt(12) and np.std(bias) > 0.1
    head = np_(model.get_layer("linear").kernel)  # w *= 1 / w.std() after the default init
    assert np.std(head, ddof=1) == pytest.approx(1.0, rel=1e-5)
    widths = [layer.filters for layer in layers_of(model, keras.layers.Conv2D) if layer.name.startswith("block")]
    assert model.get_layer("logits").scale == pytest.approx(1 / widths[-1])  # head(x) / x.size(-1)
    assert [layer.activation.__name__ for layer in layers_of(model, keras.layers.Activation)] == ["gelu"] * 7


def test_fast_preset_optimizer_groups_are_airbench94_muons(fast):
    """param_configs: whiten bias and norm biases at 0.053, head at 0.67, each weight_decay
    2e-6 * 2000 / lr; Muon(filters, lr=0.24, momentum=0.6, nesterov=True). Summed loss over
    2000 images -> mean loss: lr x 2000, decay / 2000, so lr x decay = 4e-3 in every SGD group."""
    _, model, optimizer = fast
    groups = groups_of(optimizer, model)
    steps = np.arange(8 * FAST_STEPS)
    main_decay = 1 - steps / 200  # lr = initial_lr * (1 - step / total_train_steps)
    for path, sub in groups.items():
        lr = np.asarray(sub._learning_rate.values)
        if path.endswith("_conv1/kernel") or path.endswith("_conv2/kernel"):
            assert isinstance(sub, Muon) and (sub.momentum, sub.nesterov, sub.ns_steps, sub.ns_dtype) == (0.6, True, 3, "bfloat16")
            assert sub.weight_decay is None and sub.normalize_weights
            np.testing.assert_allclose(lr, 0.24 * main_decay, rtol=1e-6)
            continue
        assert isinstance(sub, TorchSGD) and (sub.momentum, sub.nesterov, sub.lr_in_buffer) == (0.85, True, False), path
        assert lr[0] * sub.weight_decay == pytest.approx(2e-6 * 2000, rel=1e-5), path
        if path == "linear/kernel":
            np.testing.assert_allclose(lr, 0.67 * 2000 * main_decay, rtol=1e-6)
        elif path == "whiten/bias":  # its own schedule over ceil(3 * 25) steps, then no update
            np.testing.assert_allclose(lr, 0.053 * 2000 * np.maximum(0, 1 - steps / 75), rtol=1e-6, atol=1e-9)
        else:
            assert path.endswith("/beta"), path  # the norm biases (the scales are frozen)
            np.testing.assert_allclose(lr, 0.053 * 2000 * main_decay, rtol=1e-6)
    assert sum(path.endswith("/kernel") and "conv" in path for path in groups) == 6
    assert "whiten/kernel" not in groups  # frozen: no optimizer


def np_newton_schulz(matrix, steps):
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix / (np.linalg.norm(matrix) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def airbench94_muon_step(weights, summed_grads, state, path, step):
    """One step of airbench94_muon's optimizers on one parameter, in its own units
    (summed-loss gradients, lr 0.053 / 0.67 / 0.24, decay 2e-6 * 2000 / lr), transcribed."""
    w, g = weights, summed_grads
    if path.endswith("/kernel") and "conv" in path:  # Muon, PyTorch layout (out, in, kh, kw)
        p = np.transpose(w, (3, 2, 0, 1))
        g = np.transpose(g, (3, 2, 0, 1))
        buf = g if state is None else 0.6 * state + g
        update = g + 0.6 * buf
        p = p * np.sqrt(len(p)) / np.linalg.norm(p)
        p = p - 0.24 * (1 - step / 200) * np_newton_schulz(update.reshape(len(update), -1), 3).reshape(p.shape)
        return np.transpose(p, (2, 3, 1, 0)), buf
    if path == "whiten/bias":
        lr = 0.053 * (1 - step / 75)
    else:
        lr = (0.67 if path == "linear/kernel" else 0.053) * (1 - step / 200)
    weight_decay = 2e-6 * 2000 / (0.67 if path == "linear/kernel" else 0.053)
    d = g + weight_decay * w  # torch.optim.SGD, nesterov=True, momentum=0.85
    buf = d if state is None else 0.85 * state + d
    return w - lr * (d + 0.85 * buf), buf


def apply_in_turn(optimizer, steps, variables):
    """optimizer.apply(grads, variables) for each list of gradients in `steps`. On JAX as its
    fit applies them: stateless_apply, compiled once. Applied eagerly, each op would be compiled
    for each variable shape on its own (about a hundred small XLA programs, seconds on a CPU)."""
    if keras.backend.backend() != "jax":
        for grads in steps:
            optimizer.apply(grads, variables)
        return
    import jax

    optimizer.build(variables)
    step = jax.jit(optimizer.stateless_apply)
    values, state = [v.value for v in variables], [v.value for v in optimizer.variables]
    for grads in steps:
        values, state = step(state, grads, values)
    for variable, value in zip([*variables, *optimizer.variables], [*values, *state]):
        variable.assign(value)


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_fast_preset_two_steps_per_group_match_airbench94_muon(fast):
    config, model, _ = fast
    # A fresh optimizer (the fixture's is built) on the model's weights, restored afterwards.
    optimizer = build_optimizer(config, build_schedule(config, FAST_STEPS).in_graph(8 * FAST_STEPS), model)
    trainable = model.trainable_variables
    originals = [np_(v).copy() for v in trainable]
    expected = {v.path: (w.astype(np.float64), None) for v, w in zip(trainable, originals)}
    rng = np.random.default_rng(1)
    steps = [[rng.normal(size=v.shape) * 1e-3 for v in trainable] for _ in range(2)]
    apply_in_turn(optimizer, [[g.astype("float32") for g in mean_grads] for mean_grads in steps], trainable)
    for step, mean_grads in enumerate(steps):
        for v, g in zip(trainable, mean_grads):
            weights, state = expected[v.path]
            expected[v.path] = airbench94_muon_step(weights, 2000 * g, state, v.path, step)
    try:
        for v, original in zip(trainable, originals):
            got, want = np_(v).astype(np.float64), expected[v.path][0]
            if v.path.endswith("/kernel") and "conv" in v.path:
                # Muon's Newton-Schulz runs in bfloat16 in both: within its rounding (measured: 1-3%).
                assert np.linalg.norm(got - want) < 0.05 * np.linalg.norm(want - original), v.path
            else:
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=v.path)
    finally:
        for v, original in zip(trainable, originals):
            v.assign(original)


# --- ResNet-44 (He et al.; Hoffer et al.'s code) ------------------------------------------------


def resnet44_run_config(**overrides):
    import dataclasses

    from experiments.resnet44 import RECIPE, run_config

    return run_config(dataclasses.replace(RECIPE.config, width=0.25, **overrides), m=4, seed=0)


def test_resnet44_study_recipe_is_hoffers_regime():
    config = resnet44_run_config()
    # regime: SGD lr 0.1 momentum 0.9 (no nesterov), weight_decay_config(1e-4) on conv/linear
    # weights only; lr 1e-2 from epoch 81, 1e-3 from 122; batch 64; --duplicates M --cutout.
    assert (config.lr, config.momentum, config.nesterov, config.lr_in_buffer) == (0.1, 0.9, False, False)
    assert (config.weight_decay, config.weight_decay_kernels_only, config.batch_size, config.copies) == (1e-4, True, 64, 4)
    assert (config.cutout, config.cutout_mode, config.crop_padding, config.crop_mode) == (16, "centre", 4, "constant")
    schedule = build_schedule(config, steps_per_epoch=781)
    table = schedule.in_graph(164 * 781).values
    assert [table[s * 781] for s in (0, 80, 81, 121, 122, 163)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    assert table[81 * 781 - 1] == pytest.approx(0.1)  # the last step of epoch index 80


@pytest.fixture(scope="module")
def resnet44_quarter():
    """The study's ResNet-44 at 1/4 width, built once for the tests of its init."""
    return build_model(resnet44_run_config())


@pytest.mark.slow  # seconds of XLA compilation on JAX
@pytest.mark.one_backend("tensorflow")  # Keras's initializers, the same formulas on either backend
def test_resnet44_init_and_decay_are_hoffers(resnet44_quarter):
    config = resnet44_run_config()
    model = resnet44_quarter
    standardised = []
    for conv in layers_of(model, keras.layers.Conv2D):
        w = np_(conv.kernel) / np.sqrt(2 / (9 * conv.filters))  # normal_(0, sqrt(2 / (k * k * out_channels)))
        # Each conv's std within 4 standard errors (the smallest has 144 weights), all of them within 2%.
        assert np.std(w) == pytest.approx(1.0, rel=4 / np.sqrt(2 * w.size)), conv.name
        standardised.append(w.ravel())
    pooled = np.concatenate(standardised)
    assert np.std(pooled) == pytest.approx(1.0, rel=0.02) and abs(np.mean(pooled)) < 0.02
    assert np.abs(pooled).max() > 3  # a normal, not Keras's default normal truncated at 2 standard deviations
    head = model.get_layer("logits")
    kernel = np_(head.kernel)
    assert np.std(kernel) == pytest.approx(0.01, rel=4 / np.sqrt(2 * kernel.size)) and np.all(np_(head.bias) == 0)
    optimizer = build_optimizer(config, 0.1)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed == {v.path for v in model.trainable_variables if v.name == "kernel"}
    assert isinstance(optimizer, TorchSGD) and not optimizer.nesterov and not optimizer.lr_in_buffer


@pytest.mark.slow  # seconds of XLA compilation on JAX
@pytest.mark.one_backend("tensorflow")  # Keras's initializers, the same formulas on either backend
def test_resnet44_zero_init_residual_option(resnet44_quarter):
    plain = resnet44_quarter
    zero = build_model(resnet44_run_config(zero_init_residual=True))
    last = [layer for layer in layers_of(zero, keras.layers.BatchNormalization) if layer.name.endswith("_b_bn")]
    assert len(last) == 21 and all(np.all(np_(bn.gamma) == 0) for bn in last)
    others = [layer for layer in layers_of(zero, keras.layers.BatchNormalization) if not layer.name.endswith("_b_bn")]
    assert all(np.all(np_(bn.gamma) == 1) for bn in others)
    assert all(np.all(np_(bn.gamma) == 1) for bn in layers_of(plain, keras.layers.BatchNormalization))


def test_cutout_coverage_inside_and_centred_as_their_references():
    """cifar10-fast's Cutout(8, 8): always 64 pixels. DeVries & Taylor (Hoffer et al.'s
    preprocess.Cutout, length 16): centre any pixel, clipped: 196 of 1024 on average."""
    ones = np.ones((4096, 32, 32, 1), "float32")
    inside = 1 - np_(cutout(ones, seed=0, size=8, mode="inside")).reshape(4096, -1).mean(axis=1)
    np.testing.assert_array_equal(inside * 1024, 64)
    centre = np_(cutout(ones, seed=1, size=16, mode="centre"))
    covered = (1 - centre.reshape(4096, -1).mean(axis=1)) * 1024
    # Per axis the kept length averages (8+...+15 + 17 * 16 + 9+...+15) / 32 = 14: 14^2 = 196.
    assert covered.mean() == pytest.approx(196, rel=0.02)
    assert covered.min() == 64 and covered.max() == 256  # a corner centre keeps 8 x 8
    # The square is contiguous: rows covered = its kept height (in each of the 4096 draws).
    masks = 1 - centre[..., 0]
    rows, cols = masks.any(axis=2).sum(axis=1), masks.any(axis=1).sum(axis=1)
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), rows * cols)


# --- The one-cycle recipe: the ResNet-9 tutorial -----------------------------------------------


@pytest.mark.slow  # seconds of XLA compilation on JAX
def test_one_cycle_recipe_is_the_tutorials():
    config = recipe("resnet9_adam_onecycle")
    with host_kernel_init():  # its layers and optimizer are checked here, not its init
        model = build_model(config)
    # conv_block: Conv2d (bias) + BatchNorm2d + ReLU; classifier MaxPool2d(4), Flatten, Dropout(0.2), Linear (bias).
    assert all(conv.use_bias for conv in layers_of(model, keras.layers.Conv2D))
    assert model.get_layer("linear").use_bias and model.get_layer("dropout").rate == 0.2
    assert model.get_layer("logits").scale == 1.0
    augment = model.get_layer("augment")
    assert (augment.crop_padding, augment.crop_mode, augment.flip, augment.cutout_size) == (4, "reflect", True, 0)
    schedule = build_schedule(config, steps_per_epoch=125)
    optimizer = build_optimizer(config, schedule.in_graph(1000), model, momentum_schedule(config, schedule, 1000))
    # Adam(max_lr, weight_decay=1e-4) (coupled), clip_grad_value_ 0.1, OneCycleLR(max_lr=0.01, epochs=8, steps_per_epoch=125).
    assert isinstance(optimizer, TorchAdam) and (optimizer.weight_decay, optimizer.clipvalue, optimizer.epsilon) == (1e-4, 0.1, 1e-8)
    lrs = np.asarray(optimizer._learning_rate.values)
    betas = np.asarray(optimizer.beta_1.values)
    assert lrs[0] == pytest.approx(4e-4) and np.argmax(lrs) == 299 and lrs[299] == pytest.approx(0.01)
    assert lrs[999] == pytest.approx(4e-8) and np.argmin(betas) == 299
    assert betas[[0, 299, 999]] == pytest.approx([0.95, 0.85, 0.95])
