import keras
import numpy as np
import pytest

from davidnet.timing import TimeToAccuracy


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def run_epoch(timer, clock, epoch, step_s, steps, eval_s, val_accuracy, first_step_s=None):
    timer.on_epoch_begin(epoch)
    for batch in range(steps):
        timer.on_train_batch_begin(batch)
        clock.now += first_step_s if (first_step_s and batch == 0) else step_s
        timer.on_train_batch_end(batch)
    if eval_s is not None:
        timer.on_test_begin()
        clock.now += eval_s
        timer.on_test_end()
    logs = {"loss": 1.0, "accuracy": 0.5}
    if val_accuracy is not None:
        logs["val_accuracy"] = val_accuracy
    timer.on_epoch_end(epoch, logs)


def test_compile_eval_and_train_time_are_separated():
    clock = FakeClock()
    timer = TimeToAccuracy(target=0.9, clock=clock)
    timer.set_model(tiny_model())
    timer.on_train_begin()
    # Epoch 1: a 5 s first step (compilation), 3 more steps of 1 s, 2 s of evaluation.
    run_epoch(timer, clock, 0, step_s=1.0, steps=4, eval_s=2.0, val_accuracy=0.5, first_step_s=5.0)
    assert timer.compile_s == pytest.approx(5.0)
    assert timer.epochs[0]["train_s"] == pytest.approx(3.0)
    assert timer.epochs[0]["eval_s"] == pytest.approx(2.0)
    assert timer.target_epoch is None
    # Epoch 2 reaches the target; epoch 3 is past it and must not move it.
    run_epoch(timer, clock, 1, step_s=1.0, steps=4, eval_s=2.0, val_accuracy=0.92)
    run_epoch(timer, clock, 2, step_s=1.0, steps=4, eval_s=2.0, val_accuracy=0.95)
    timer.on_train_end()
    assert timer.target_epoch == 2
    assert timer.seconds_to_target == pytest.approx(3.0 + 4.0)
    assert timer.wall_to_target_s == pytest.approx(5 + 3 + 2 + 4 + 2)
    assert timer.train_s == pytest.approx(11.0)
    assert timer.eval_s == pytest.approx(6.0)
    assert timer.wall_s == pytest.approx(5 + 11 + 6)
    assert [r["train_s_total"] for r in timer.epochs] == pytest.approx([3.0, 7.0, 11.0])


def test_epochs_without_evaluation_and_non_finite_logs():
    clock = FakeClock()
    timer = TimeToAccuracy(target=0.5, clock=clock)
    timer.set_model(tiny_model())
    timer.on_train_begin()
    run_epoch(timer, clock, 0, step_s=1.0, steps=2, eval_s=None, val_accuracy=None)
    assert "val_accuracy" not in timer.epochs[0]
    assert timer.epochs[0]["eval_s"] == 0.0
    timer.on_epoch_begin(1)
    timer.on_epoch_end(1, {"loss": float("nan"), "val_accuracy": float("nan")})
    # JSON cannot hold NaN: it is kept as text, and never counts as reaching the target.
    assert timer.epochs[1]["loss"] == "nan"
    assert timer.target_epoch is None


def test_a_real_fit_records_every_epoch_and_the_keras_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy", metrics=["accuracy"])
    timer = TimeToAccuracy(target=0.8)
    history = model.fit(x, y, epochs=4, batch_size=16, validation_data=(x, y), verbose=0, callbacks=[timer])
    assert [r["epoch"] for r in timer.epochs] == [1, 2, 3, 4]
    assert [r["val_accuracy"] for r in timer.epochs] == pytest.approx(history.history["val_accuracy"])
    assert timer.compile_s > 0 and timer.train_s > 0 and timer.eval_s > 0
    assert timer.wall_s >= timer.compile_s + timer.train_s + timer.eval_s
    reached = [r["epoch"] for r in timer.epochs if r["val_accuracy"] >= 0.8]
    assert timer.target_epoch == (reached[0] if reached else None)


def test_an_epoch_of_one_step_times_its_step_as_compilation():
    # The scanned loop runs a whole epoch as one step: the first epoch is then compile time.
    clock = FakeClock()
    timer = TimeToAccuracy(target=0.9, clock=clock)
    timer.set_model(tiny_model())
    timer.on_train_begin()
    run_epoch(timer, clock, 0, step_s=4.0, steps=1, eval_s=1.0, val_accuracy=0.5)
    run_epoch(timer, clock, 1, step_s=2.0, steps=1, eval_s=1.0, val_accuracy=0.5)
    assert timer.compile_s == pytest.approx(4.0)
    assert [r["train_s"] for r in timer.epochs] == pytest.approx([0.0, 2.0])
    assert [r["eval_s"] for r in timer.epochs] == pytest.approx([1.0, 1.0])


def test_a_warmed_up_run_reports_the_warm_up_as_compilation_and_times_every_step():
    clock = FakeClock()
    timer = TimeToAccuracy(target=0.9, clock=clock)
    timer.set_model(tiny_model())
    timer.set_compile_time(7.0)
    timer.on_train_begin()
    run_epoch(timer, clock, 0, step_s=1.0, steps=3, eval_s=None, val_accuracy=None)
    assert timer.compile_s == pytest.approx(7.0)
    assert timer.epochs[0]["train_s"] == pytest.approx(3.0)


def test_the_timer_keeps_keras_batch_end_dispatch_asynchronous():
    # A callback overriding on_train_batch_end makes Keras read every step's
    # logs back to the host, one device wait per step.
    timer = TimeToAccuracy()
    assert keras.src.utils.is_default(timer.on_train_batch_end)
    if keras.backend.backend() == "jax":  # the backend on which Keras dispatches asynchronously
        assert keras.callbacks.CallbackList([timer, keras.callbacks.History()])._async_train


def test_an_evaluation_after_fit_replaces_the_last_epochs_and_retimes_the_target():
    clock = FakeClock()
    timer = TimeToAccuracy(target=0.9, clock=clock)
    timer.set_model(tiny_model())
    timer.on_train_begin()
    run_epoch(timer, clock, 0, step_s=1.0, steps=3, eval_s=None, val_accuracy=None)
    run_epoch(timer, clock, 1, step_s=1.0, steps=3, eval_s=0.5, val_accuracy=0.95)  # fast weights reach it
    assert (timer.target_epoch, timer.seconds_to_target) == (2, 5.0)  # the first step is compilation
    timer.record_final_evaluation({"accuracy": 0.85, "loss": 0.4}, eval_s=0.25)  # the slow weights do not
    assert timer.target_epoch is timer.seconds_to_target is timer.wall_to_target_s is None
    assert timer.epochs[-1]["val_accuracy"] == 0.85 and timer.epochs[-1]["eval_s"] == 0.75 and timer.eval_s == 0.75
    timer.record_final_evaluation({"accuracy": 0.91, "loss": 0.3}, eval_s=0.25)  # evaluated where fit did not
    assert (timer.target_epoch, timer.seconds_to_target, timer.wall_to_target_s) == (2, 5.0, timer.epochs[-1]["wall_s"])
