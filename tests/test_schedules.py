"""Tests for davidnet.schedules (closed forms, validation, and fit() on the active backend).

The integration tests run on whatever KERAS_BACKEND is active; run the file
once with KERAS_BACKEND=tensorflow and once with KERAS_BACKEND=jax.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.schedules import (
    Cyclic,
    LearningRateCallback,
    OneCycle,
    PiecewiseLinear,
    TabulatedSchedule,
    plot_schedules,
    scale_fn_from_expression,
)

SINE = "0.5*(1+sin(x*pi/2.5))"


# ---------------------------------------------------------------------- #
# Closed forms at hand-computed points
# ---------------------------------------------------------------------- #
def test_piecewise_linear_davidnet_points():
    s = PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=10)
    expected = {0: 0.0, 25: 0.2, 50: 0.4, 145: 0.2, 240: 0.0, 10_000: 0.0}
    for step, lr in expected.items():
        assert s.lr_at(step) == pytest.approx(lr, abs=1e-12), step


def test_piecewise_linear_constant_beyond_ends_and_fractional_knots():
    s = PiecewiseLinear([0.5, 1.5], [0.1, 0.3], steps_per_epoch=4)
    assert s.lr_at(0) == pytest.approx(0.1)  # before first knot: first value
    assert s.lr_at(4) == pytest.approx(0.2)  # epoch 1.0, halfway
    assert s.lr_at(100) == pytest.approx(0.3)  # after last knot: last value


def test_piecewise_linear_repeated_knot_is_a_step_change():
    s = PiecewiseLinear([0, 2, 2, 4], [0.1, 0.1, 0.01, 0.01], steps_per_epoch=10)
    assert s.lr_at(19) == pytest.approx(0.1)
    assert s.lr_at(21) == pytest.approx(0.01)


def test_cyclic_triangular():
    s = Cyclic(base_lr=0.1, max_lr=0.5, step_size=10)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.3)
    assert s.lr_at(10) == pytest.approx(0.5)
    assert s.lr_at(15) == pytest.approx(0.3)
    assert s.lr_at(20) == pytest.approx(0.1)
    assert s.lr_at(30) == pytest.approx(0.5)  # second cycle peaks at full height


def test_cyclic_triangular2_halves_each_cycle():
    s = Cyclic(0.1, 0.5, 10, mode="triangular2")
    assert s.lr_at(10) == pytest.approx(0.5)
    assert s.lr_at(20) == pytest.approx(0.1)
    assert s.lr_at(30) == pytest.approx(0.1 + 0.4 / 2)
    assert s.lr_at(50) == pytest.approx(0.1 + 0.4 / 4)


def test_cyclic_exp_range_scales_by_gamma_to_the_iteration():
    gamma = 0.99
    s = Cyclic(0.1, 0.5, 10, mode="exp_range", gamma=gamma)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(10) == pytest.approx(0.1 + 0.4 * gamma**10)
    assert s.lr_at(30) == pytest.approx(0.1 + 0.4 * gamma**30)
    assert s.lr_at(35) == pytest.approx(0.1 + 0.4 * 0.5 * gamma**35)


def test_cyclic_custom_sine_scale_per_cycle():
    s = Cyclic(0.1, 0.5, 10, scale_fn=SINE, scale_mode="cycle")
    for cycle in (1, 2, 3, 4):
        peak = (2 * cycle - 1) * 10
        scale = 0.5 * (1 + math.sin(cycle * math.pi / 2.5))
        assert s.lr_at(peak) == pytest.approx(0.1 + 0.4 * scale), cycle
    # A custom scale_fn overrides mode.
    assert Cyclic(0.1, 0.5, 10, mode="triangular2", scale_fn=SINE).lr_at(30) == s.lr_at(30)


def test_cyclic_custom_scalar_only_callable_per_iteration():
    # math.* only accepts scalars: lr_values must fall back to per-element calls.
    s = Cyclic(0.1, 0.5, 10, scale_fn=lambda x: math.exp(-x / 100), scale_mode="iterations")
    assert s.lr_at(10) == pytest.approx(0.1 + 0.4 * math.exp(-0.1))
    steps = np.arange(60)
    np.testing.assert_allclose(s.lr_values(steps), [s.lr_at(i) for i in steps], rtol=0, atol=0)


def torch_one_cycle(step, total, max_lr, pct_start=0.3, anneal="cos", div=25.0, final_div=1e4, base_m=0.85, max_m=0.95):
    """PyTorch's OneCycleLR.get_lr (three_phase=False), transcribed: (lr, momentum) at step."""
    initial = max_lr / div
    phases = [
        (float(pct_start * total) - 1, initial, max_lr, max_m, base_m),
        (total - 1, max_lr, initial / final_div, base_m, max_m),
    ]
    if anneal == "cos":
        curve = lambda a, b, pct: b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)  # noqa: E731
    else:
        curve = lambda a, b, pct: (b - a) * pct + a  # noqa: E731
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start)
            return curve(lr0, lr1, pct), curve(m0, m1, pct)
        start = end


@pytest.mark.parametrize("total, pct_start, anneal", [(200, 0.25, "cos"), (1000, 0.3, "cos"), (97, 0.3, "linear")])
def test_one_cycle_is_pytorchs_one_cycle_lr_step_for_step(total, pct_start, anneal):
    s = OneCycle(max_lr=0.01, total_steps=total, pct_start=pct_start, anneal=anneal)
    steps = np.arange(total)
    expected = np.array([torch_one_cycle(int(k), total, 0.01, pct_start, anneal) for k in steps])
    np.testing.assert_allclose(s.lr_values(steps), expected[:, 0], rtol=1e-12)
    np.testing.assert_allclose(s.momentum_values(steps), expected[:, 1], rtol=1e-12)
    peak = pct_start * total - 1  # PyTorch's phase 1 ends here, not at pct_start * T
    assert abs(np.argmax(s.lr_values(steps)) - peak) < 1 and np.argmax(s.lr_values(steps)) == np.argmin(s.momentum_values(steps))
    assert s.lr_at(total - 1) == pytest.approx(0.01 / 25 / 1e4) and s.lr_at(total + 50) == s.lr_at(total - 1)
    assert s.momentum_values(0) == pytest.approx(0.95) and s.momentum_values(total - 1) == pytest.approx(0.95)


def test_one_cycle_tutorial_points():
    """The tutorial's T = 1000 (8 epochs of 125 steps): warm-up ends at step 299."""
    s = OneCycle(max_lr=0.01, epochs=8, steps_per_epoch=125, pct_start=0.3)
    assert s.lr_at(0) == pytest.approx(4e-4) and s.lr_at(299) == pytest.approx(0.01)
    assert s.lr_at(999) == pytest.approx(4e-8)
    assert [round(float(m), 4) for m in s.momentum_values([0, 299, 999])] == [0.95, 0.85, 0.95]


def test_one_cycle_linear_and_custom_factors():
    s = OneCycle(max_lr=2.0, total_steps=101, pct_start=21 / 101, anneal="linear", div_factor=10, final_div_factor=100)
    initial, final = 0.2, 0.2 / 100  # phase 1 ends at step 20, phase 2 at 100
    assert s.lr_at(0) == pytest.approx(initial)
    assert s.lr_at(10) == pytest.approx((initial + 2.0) / 2)
    assert s.lr_at(20) == pytest.approx(2.0)
    assert s.lr_at(40) == pytest.approx(2.0 + (final - 2.0) * 0.25)
    assert s.lr_at(100) == pytest.approx(final)


def test_one_cycle_epochs_equal_total_steps():
    by_epochs = OneCycle(0.4, epochs=3, steps_per_epoch=50)
    by_steps = OneCycle(0.4, total_steps=150)
    assert by_epochs.total_steps == 150
    steps = np.arange(200)
    np.testing.assert_array_equal(by_epochs.lr_values(steps), by_steps.lr_values(steps))


def test_one_cycle_without_warmup():
    s = OneCycle(1.0, total_steps=10, pct_start=0.0)
    # PyTorch's phase 1 ends at step -1: step 0 is already 1/10 of the way down.
    assert s.lr_at(0) == pytest.approx(torch_one_cycle(0, 10, 1.0, 0.0)[0]) and 0.97 < s.lr_at(0) < 1.0
    assert s.lr_at(9) == pytest.approx(1.0 / 25e4)


# ---------------------------------------------------------------------- #
# lr_values == lr_at
# ---------------------------------------------------------------------- #
SCHEDULES = {
    "piecewise": lambda: PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=7),
    "triangular": lambda: Cyclic(0.01, 0.1, 13),
    "triangular2": lambda: Cyclic(0.01, 0.1, 13, mode="triangular2"),
    "exp_range": lambda: Cyclic(0.01, 0.1, 13, mode="exp_range", gamma=0.995),
    "sine": lambda: Cyclic(0.01, 0.1, 13, scale_fn=SINE),
    "sine_iter": lambda: Cyclic(0.01, 0.1, 13, scale_fn=SINE, scale_mode="iterations"),
    "one_cycle_cos": lambda: OneCycle(0.4, total_steps=97, pct_start=0.3),
    "one_cycle_linear": lambda: OneCycle(0.4, epochs=2.5, steps_per_epoch=40, anneal="linear"),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lr_values_equal_lr_at(name):
    s = SCHEDULES[name]()
    steps = np.arange(0, 200)
    values = s.lr_values(steps)
    assert values.shape == steps.shape
    np.testing.assert_array_equal(values, [s.lr_at(int(i)) for i in steps])
    # Any shape works, and Python ints give plain floats.
    assert s.lr_values(steps.reshape(20, 10)).shape == (20, 10)
    assert isinstance(s.lr_at(3), float)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_get_config_round_trips(name):
    s = SCHEDULES[name]()
    clone = type(s)(**s.get_config())
    steps = np.arange(300)
    np.testing.assert_array_equal(clone.lr_values(steps), s.lr_values(steps))
    assert clone.get_config() == s.get_config()


# ---------------------------------------------------------------------- #
# Validation
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PiecewiseLinear([0, 1, 2], [0, 1]), "same length"),
        (lambda: PiecewiseLinear([0], [0.1]), "at least 2"),
        (lambda: PiecewiseLinear([0, 2, 1], [0, 1, 0]), "non-decreasing"),
        (lambda: PiecewiseLinear([0, 1], [0, -0.1]), ">= 0"),
        (lambda: PiecewiseLinear([0, 1], [0, 1], steps_per_epoch=0), "steps_per_epoch"),
        (lambda: PiecewiseLinear([0, 1], [0, 1], steps_per_epoch=2.5), "steps_per_epoch"),
        (lambda: Cyclic(0.1, 1.0, 10, mode="sawtooth"), "triangular2"),
        (lambda: Cyclic(0.1, 1.0, 10, scale_mode="epoch"), "iterations"),
        (lambda: Cyclic(0.1, 1.0, 0), "step_size"),
        (lambda: Cyclic(0.1, 1.0, 10, scale_fn="os.system('ls')"), "not allowed"),
        (lambda: OneCycle(0.1), "exactly one of total_steps"),
        (lambda: OneCycle(0.1, total_steps=10, epochs=1), "exactly one of total_steps"),
        (lambda: OneCycle(0.1, total_steps=0), "total_steps"),
        (lambda: OneCycle(0.1, total_steps=10, pct_start=1.0), "pct_start"),
        (lambda: OneCycle(0.1, total_steps=10, anneal="exp"), "'cos', 'linear'"),
        (lambda: OneCycle(0.0, total_steps=10), "max_lr"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_cyclic_mode_message_lists_all_modes():
    with pytest.raises(ValueError) as info:
        Cyclic(0.1, 1.0, 10, mode="sawtooth")
    for mode in ("sawtooth", "triangular", "triangular2", "exp_range"):
        assert mode in str(info.value)


def test_missing_steps_per_epoch_is_a_clear_error():
    s = PiecewiseLinear([0, 1], [0, 1])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        s.lr_at(3)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        OneCycle(0.1, epochs=2).total_steps
    # fit() on data of unknown length: params["steps"] is None.
    s.set_params({"steps": None, "epochs": 1})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        s.on_train_begin()
    # Cyclic is defined in iterations and needs no steps_per_epoch.
    assert Cyclic(0.1, 1.0, 10).lr_at(10) == pytest.approx(1.0)


def test_negative_step_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        Cyclic(0.1, 1.0, 10).lr_at(-1)
    with pytest.raises(ValueError, match=">= 0"):
        Cyclic(0.1, 1.0, 10).lr_values([0, -1])


# ---------------------------------------------------------------------- #
# scale_fn_from_expression
# ---------------------------------------------------------------------- #
def test_expression_matches_numpy_on_scalars_and_arrays():
    f = scale_fn_from_expression(SINE)
    x = np.linspace(0, 10, 101)
    np.testing.assert_allclose(f(x), 0.5 * (1 + np.sin(x * np.pi / 2.5)), rtol=1e-15)
    assert isinstance(f(1.0), float)
    assert f(1.0) == pytest.approx(0.5 * (1 + math.sin(math.pi / 2.5)))
    g = scale_fn_from_expression("max(0.1, min(x, 1)) ** 2 + -floor(x)/e + sqrt(abs(x)) + ceil(log(exp(x)))")
    ref = np.maximum(0.1, np.minimum(x, 1)) ** 2 - np.floor(x) / np.e + np.sqrt(np.abs(x)) + np.ceil(x)
    np.testing.assert_allclose(g(x), ref, rtol=1e-12)
    # A constant expression still gives one value per element.
    assert scale_fn_from_expression("2").__call__(np.zeros(3)).shape == (3,)


@pytest.mark.parametrize(
    "expr, token",
    [
        ("__import__('os')", "__import__"),
        ("x.real", "x.real"),
        ("().__class__", "__class__"),
        ("y + 1", "'y'"),
        ("open('f')", "'open'"),
        ("np.sin(x)", "np.sin"),
        ("x[0]", "x[0]"),
        ("lambda: 1", "Lambda"),
        ("'a' * 3", "'a'"),
        ("x % 2", "Mod"),
        ("x if x else 1", "IfExp"),
        ("sin(x=1)", "keyword"),
    ],
)
def test_expression_rejects_non_whitelisted_tokens(expr, token):
    with pytest.raises(ValueError, match="not allowed") as info:
        scale_fn_from_expression(expr)
    assert token in str(info.value)


def test_expression_syntax_error_is_value_error():
    with pytest.raises(ValueError, match="not a valid formula"):
        scale_fn_from_expression("sin(x")


# ---------------------------------------------------------------------- #
# Integration with model.fit on the active backend
# ---------------------------------------------------------------------- #
class LrRecorder(keras.callbacks.Callback):
    """Reads the optimizer's LR after each batch (forces a state sync on JAX)."""

    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_end(self, batch, logs=None):
        self.lrs.append(float(ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _tiny_model(lr=0.0, loss="mse", kernel_initializer="glorot_uniform"):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer=kernel_initializer)]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=loss)
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def test_fit_sets_scheduled_lr_every_batch():
    keras.utils.set_random_seed(0)
    model = _tiny_model(lr=0.5)  # initial LR that the schedule must override
    x, y = _data()
    schedule = PiecewiseLinear([0, 1, 3], [0.0, 0.1, 0.02])
    recorder = LrRecorder()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[schedule, recorder])
    assert schedule.steps_per_epoch == 4  # taken from fit's params
    expected = [schedule.lr_at(s) for s in range(12)]
    np.testing.assert_allclose(recorder.lrs, expected, rtol=1e-6, atol=1e-8)
    assert len(schedule.history) == 12
    assert [s for s, _ in schedule.history] == list(range(12))
    np.testing.assert_allclose([lr for _, lr in schedule.history], expected)
    assert len(set(np.round(recorder.lrs, 6))) > 3  # really varies within epochs


def test_scheduled_lr_drives_the_update_without_any_other_sync():
    """The LR must reach the train step itself, with no other callback syncing.

    The recorder test above cannot catch a JAX-only failure: its per-batch
    read of model.optimizer forces a state sync that would also make a naive
    assignment stick.  Here there is no other callback: with inputs of ones,
    a bias-free Dense(1) starting at 0 and loss mean(y_pred), every gradient
    is exactly 1, so after training the kernel equals -sum of the LRs used.
    """
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    schedule = PiecewiseLinear([0, 1, 3], [0.0, 1.0, 0.25])
    x, y = np.ones((64, 1), "float32"), np.zeros((64, 1), "float32")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[schedule])
    kernel = float(model.get_weights()[0].ravel()[0])
    used = sum(schedule.lr_at(s) for s in range(12))
    # Holding each epoch's first LR for the whole epoch would give -6.5.
    assert kernel == pytest.approx(-used, rel=1e-5)
    assert used == pytest.approx(6.875)


def test_resumed_fit_continues_from_optimizer_iterations():
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    x, y = _data()
    first = PiecewiseLinear([0, 1, 3], [0.0, 0.1, 0.02])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[first])
    assert [s for s, _ in first.history] == list(range(8))
    second = PiecewiseLinear([0, 1, 3], [0.0, 0.1, 0.02])  # fresh callback
    recorder = LrRecorder()
    model.fit(x, y, batch_size=16, initial_epoch=2, epochs=3, verbose=0, callbacks=[second, recorder])
    assert [s for s, _ in second.history] == [8, 9, 10, 11]
    np.testing.assert_allclose(recorder.lrs, [second.lr_at(s) for s in range(8, 12)], rtol=1e-6)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 12


def test_steps_per_execution_counts_steps_not_calls():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1),
        steps_per_execution=2,
    )
    schedule = Cyclic(0.0, 1.0, step_size=4)
    x, y = np.ones((48, 1), "float32"), np.zeros((48, 1), "float32")  # 3 steps/epoch
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[schedule])
    # One call per execution: steps 0-1 and 2 (partial) in epoch 0, 3-4 and 5 in epoch 1.
    assert [s for s, _ in schedule.history] == [0, 2, 3, 5]
    kernel = float(model.get_weights()[0].ravel()[0])
    held = [2, 1, 2, 1]  # steps each LR was held for
    assert kernel == pytest.approx(-sum(n * lr for n, (_, lr) in zip(held, schedule.history)), rel=1e-5)


def test_in_graph_schedule_drives_the_update_and_the_callback_only_records():
    # As above (every gradient exactly 1), with the LR computed in the train step.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    schedule = PiecewiseLinear([0, 1, 3], [0.0, 1.0, 0.25], steps_per_epoch=4)
    model.compile(optimizer=keras.optimizers.SGD(schedule.in_graph(12)), loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    x, y = np.ones((64, 1), "float32"), np.zeros((64, 1), "float32")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[schedule])
    kernel = float(model.get_weights()[0].ravel()[0])
    assert kernel == pytest.approx(-6.875, rel=1e-5)
    assert schedule.history == [(s, schedule.lr_at(s)) for s in range(12)]
    assert schedule._last_lr is None  # it never assigned


def test_in_graph_schedule_holds_the_last_value_and_survives_saving(tmp_path):
    values = Cyclic(0.1, 0.5, step_size=3).in_graph(10).values
    np.testing.assert_allclose(values, Cyclic(0.1, 0.5, step_size=3).lr_values(range(10)), rtol=1e-7)
    table = TabulatedSchedule(values)
    assert float(table(9)) == float(table(1000)) == pytest.approx(values[-1])
    assert float(table(-3)) == pytest.approx(values[0])
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(table), loss="mse")
    model.fit(*_data(16), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert float(ops.convert_to_numpy(loaded.optimizer.learning_rate)) == pytest.approx(values[1])  # after 1 step
    with pytest.raises(ValueError, match="finite learning rates"):
        TabulatedSchedule([0.1, float("nan")])
    with pytest.raises(ValueError, match="positive integer"):
        PiecewiseLinear([0, 1], [0, 1], steps_per_epoch=2).in_graph(0)


# ---------------------------------------------------------------------- #
# Plotting
# ---------------------------------------------------------------------- #
def test_plot_schedules_writes_png(tmp_path):
    from PIL import Image

    path = tmp_path / "plots" / "schedules.png"
    out = plot_schedules(
        {
            "davidnet": PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=10),
            "one-cycle": OneCycle(0.4, total_steps=240),
            "triangular2": Cyclic(0.01, 0.4, 30, mode="triangular2"),
        },
        total_steps=240,
        path=path,
    )
    assert out == str(path)
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100


def test_plot_schedules_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        plot_schedules({}, 10, tmp_path / "x.png")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        plot_schedules({"p": PiecewiseLinear([0, 1], [0, 1])}, 10, tmp_path / "x.png")


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        LearningRateCallback().lr_at(0)
