"""Tests for davidnet.torch_optimizers: PyTorch's SGD and Adam (and cifar10-fast's SGD) step by step against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.schedules import TabulatedSchedule
from davidnet.torch_optimizers import TorchAdam, TorchSGD

LRS = [0.4, 0.3, 0.05, 0.2, 0.0, 0.1]  # a changing learning rate: the momentum forms differ only then


def np_(x):
    return ops.convert_to_numpy(x)


def torch_sgd(w, g, buf, lr, m, nesterov, wd):
    """torch.optim.SGD.step (dampening 0), transcribed."""
    d = g + wd * w
    buf = d if buf is None else m * buf + d
    return w - lr * (d + m * buf if nesterov else buf), buf


def cifar10_fast_sgd(w, g, v, lr, m, nesterov, wd):
    """cifar10-fast's torch_backend.nesterov_update (and its plain form), transcribed."""
    dw = -lr * (g + wd * w)
    v = m * v + dw
    return w + (dw + m * v if nesterov else v), v


def run(optimizer, grads, w0):
    variable = keras.Variable(w0.astype("float32"))
    for g in grads:
        optimizer.apply([g.astype("float32")], [variable])
    return np_(variable)


@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "plain"])
@pytest.mark.parametrize("lr_in_buffer", [False, True], ids=["torch", "cifar10-fast"])
def test_sgd_matches_its_reference_over_six_steps_of_a_changing_lr(nesterov, lr_in_buffer):
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(4, 3)), rng.normal(size=(6, 4, 3))
    optimizer = TorchSGD(TabulatedSchedule(LRS), momentum=0.9, nesterov=nesterov, weight_decay=0.05, lr_in_buffer=lr_in_buffer)
    got = run(optimizer, grads, w0)
    w, state = w0, (0.0 if lr_in_buffer else None)
    for lr, g in zip(LRS, grads):
        w, state = (cifar10_fast_sgd if lr_in_buffer else torch_sgd)(w, g, state, lr, 0.9, nesterov, 0.05)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    # The other form gives another result under this schedule: the choice matters.
    other = run(TorchSGD(TabulatedSchedule(LRS), 0.9, nesterov, 0.05, lr_in_buffer=not lr_in_buffer), grads, w0)
    assert np.abs(other - got).max() > 1e-3


def test_sgd_weight_decay_is_coupled_and_kernels_only_exempts_the_rest():
    kernel, bias = keras.Variable(np.ones((2, 2), "float32"), name="kernel"), keras.Variable(np.ones(2, "float32"), name="bias")
    optimizer = TorchSGD(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply([np.zeros((2, 2), "float32"), np.zeros(2, "float32")], [kernel, bias])
    np.testing.assert_allclose(np_(kernel), 1 - 0.1 * 0.5)  # the decay went through the gradient
    np.testing.assert_allclose(np_(bias), 1.0)


def test_sgd_with_a_momentum_schedule_uses_each_steps_momentum():
    rng = np.random.default_rng(1)
    w0, grads = rng.normal(size=(3,)), rng.normal(size=(4, 3))
    momenta = [0.95, 0.9, 0.85, 0.9]
    got = run(TorchSGD(0.1, momentum=TabulatedSchedule(momenta), nesterov=True), grads, w0)
    w, buf = w0, None
    for m, g in zip(momenta, grads):
        w, buf = torch_sgd(w, g, buf, 0.1, m, True, 0.0)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def torch_adam(w, g, state, step, lr, beta1, beta2=0.999, eps=1e-8, wd=0.0):
    """torch.optim.Adam.step (single tensor, no amsgrad), transcribed."""
    m, v = state
    g = g + wd * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
    denominator = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    return w - lr / bias_correction1 * m / denominator, (m, v)


def test_adam_is_torch_adam_with_a_cycled_beta_1_coupled_decay_and_clipping():
    rng = np.random.default_rng(2)
    w0, grads = rng.normal(size=(5,)), 0.3 * rng.normal(size=(6, 5))
    betas = [0.95, 0.92, 0.89, 0.86, 0.85, 0.9]
    optimizer = TorchAdam(TabulatedSchedule(LRS), beta_1=TabulatedSchedule(betas), weight_decay=1e-2, clipvalue=0.1)
    got = run(optimizer, grads, w0)
    w, state = w0, (0.0, 0.0)
    for step, (lr, beta, g) in enumerate(zip(LRS, betas, grads), start=1):
        # clip_grad_value_ before optimizer.step(); the decay is added inside the step, unclipped.
        w, state = torch_adam(w, np.clip(g, -0.1, 0.1), state, step, lr, beta, wd=1e-2)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    keras_adam = run(keras.optimizers.Adam(TabulatedSchedule(LRS), beta_1=0.9, clipvalue=0.1), grads, w0)
    assert np.abs(keras_adam - got).max() > 1e-3  # Keras's Adam is another rule


def test_configs_round_trip_with_schedules():
    sgd = TorchSGD(0.1, momentum=TabulatedSchedule([0.9, 0.8]), nesterov=True, weight_decay=1e-3, lr_in_buffer=True)
    adam = TorchAdam(TabulatedSchedule([0.1, 0.2]), beta_1=TabulatedSchedule([0.95, 0.85]), weight_decay=1e-4)
    for optimizer in (sgd, adam):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is type(optimizer) and restored.weight_decay == optimizer.weight_decay
    restored_sgd = keras.optimizers.deserialize(keras.optimizers.serialize(sgd))
    assert restored_sgd.lr_in_buffer and restored_sgd.momentum.values == pytest.approx([0.9, 0.8])
    assert keras.optimizers.deserialize(keras.optimizers.serialize(adam)).beta_1.values == pytest.approx([0.95, 0.85])
