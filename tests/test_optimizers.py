"""Tests for davidnet.optimizers: Newton-Schulz, Muon for conv filters, muon_sgd and Lookahead, against NumPy."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from davidnet.optimizers import (
    NEWTON_SCHULZ_COEFFICIENTS,
    AirbenchAlphaSchedule,
    Lookahead,
    Muon,
    filters_and_rest,
    muon_sgd,
    newton_schulz,
)


def np_(x):
    return ops.convert_to_numpy(x)


# --- NumPy references --------------------------------------------------------------


def np_newton_schulz(matrix, steps=5, eps=1e-7):
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.astype(np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def np_muon(weight, grad, buffer, lr, momentum, nesterov=True, normalize=True, steps=5):
    """airbench94_muon's step on a Keras kernel, in PyTorch's (out, in, kh, kw) layout."""
    buffer = momentum * buffer + (1 - momentum) * grad
    update = (1 - momentum) * grad + momentum * buffer if nesterov else buffer
    order = (weight.ndim - 1, *range(weight.ndim - 1))  # output channels first
    torch_layout = np.transpose(update, order)
    ortho = np_newton_schulz(torch_layout.reshape(len(torch_layout), -1), steps).reshape(torch_layout.shape)
    ortho = np.transpose(ortho, np.argsort(order))
    if normalize:
        weight = weight * np.sqrt(weight.shape[-1]) / np.linalg.norm(weight)
    return weight - lr * ortho, buffer


def np_keras_sgd(weight, grad, velocity, lr, momentum):
    """keras.optimizers.SGD, Nesterov."""
    velocity = momentum * velocity - lr * grad
    return weight + momentum * velocity - lr * grad, velocity


def np_sgd(weight, grad, buffer, lr, momentum, weight_decay=0.0):
    """torch.optim.SGD, Nesterov, coupled weight decay (airbench94_muon's SGD)."""
    grad = grad + weight_decay * weight
    buffer = momentum * buffer + grad
    return weight - lr * (grad + momentum * buffer), buffer


# --- newton_schulz -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(48, 12), (12, 48), (24, 24)], ids=["tall", "wide", "square"])
def test_newton_schulz_singular_values_in_band_and_directions_of_svd(shape):
    matrix = np.random.default_rng(sum(shape)).normal(size=shape).astype("float32")
    out = np_(newton_schulz(matrix, steps=5, dtype="float32"))
    assert out.shape == shape and out.dtype == np.float32
    # The quintic maps every normalised singular value above ~0.003 into [0.682, 1.202]
    # in 5 steps. A random square matrix can have a smaller one (24 x 24, seed 2: 0.10
    # after 5 steps), hence fixed seeds.
    singular_values = np.linalg.svd(out, compute_uv=False)
    assert 0.67 < singular_values.min() and singular_values.max() < 1.21, singular_values
    u, _, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    polar = u @ vt
    cosine = np.sum(out * polar) / (np.linalg.norm(out) * np.linalg.norm(polar))
    assert cosine > 0.97, cosine
    # Same singular vectors: out = U diag(s') V^T with U, V those of the input.
    inner = u.T @ out @ vt.T
    np.testing.assert_allclose(inner, np.diag(np.diag(inner)), atol=2e-3)
    np.testing.assert_allclose(out, np_newton_schulz(matrix), atol=2e-4)


def test_newton_schulz_keeps_dtype_and_rejects_non_matrices():
    half = np_(newton_schulz(np.eye(3, 5, dtype="float16") * 7, steps=5, dtype="float32"))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), np_newton_schulz(np.eye(3, 5) * 7), atol=2e-3)
    with pytest.raises(ValueError, match="2-D matrix"):
        newton_schulz(np.ones((2, 3, 4), "float32"))
    with pytest.raises(ValueError, match="steps"):
        newton_schulz(np.ones((2, 3), "float32"), steps=0)


@pytest.mark.parametrize("shape", [(64, 216), (256, 576)], ids=["block1_conv1", "block2_conv1"])
def test_newton_schulz_by_default_is_airbench94_muons_three_bfloat16_steps(shape):
    """The default is zeropower_via_newtonschulz5 of airbench94_muon: 3 steps in bfloat16."""
    import ml_dtypes

    matrix = np.random.default_rng(shape[0]).normal(size=shape).astype("float32")
    out = np_(newton_schulz(matrix))
    assert out.dtype == np.float32  # back in the input's dtype
    # Computed in bfloat16: every value is a bfloat16 number.
    np.testing.assert_array_equal(out, out.astype(ml_dtypes.bfloat16).astype(np.float32))

    def distance(steps):
        expected = np_newton_schulz(matrix, steps=steps)
        return np.linalg.norm(out - expected) / np.linalg.norm(expected)

    # Measured: 3.3% and 1.0% from the exact 3-step result (bfloat16's rounding),
    # 8.5% and 20% from the 5-step one.
    assert distance(3) < 0.05 and distance(5) > 2 * distance(3)


# --- Muon --------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov,normalize", [(True, True), (False, False)])
def test_muon_two_steps_match_airbench_reference(nesterov, normalize):
    rng = np.random.default_rng(3)
    kernel0 = rng.normal(size=(3, 3, 2, 4)).astype("float32")  # Conv2D (kh, kw, in, out)
    dense0 = rng.normal(size=(5, 7)).astype("float32")
    kernel, dense = keras.Variable(kernel0, name="kernel"), keras.Variable(dense0, name="dense")
    optimizer = Muon(learning_rate=0.1, momentum=0.6, nesterov=nesterov, normalize_weights=normalize, ns_steps=5, ns_dtype="float32")
    expected = {"kernel": (kernel0.astype(np.float64), 0.0), "dense": (dense0.astype(np.float64), 0.0)}
    for _ in range(2):
        grads = {"kernel": rng.normal(size=kernel0.shape), "dense": rng.normal(size=dense0.shape)}
        optimizer.apply([grads["kernel"].astype("float32"), grads["dense"].astype("float32")], [kernel, dense])
        for key, (weight, buffer) in expected.items():
            expected[key] = np_muon(weight, grads[key], buffer, 0.1, 0.6, nesterov, normalize)
    np.testing.assert_allclose(np_(kernel), expected["kernel"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np_(dense), expected["dense"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np_(optimizer.momentums[0]), expected["kernel"][1], rtol=1e-5, atol=1e-6)


def test_muon_rejects_vectors_by_name_and_bad_arguments():
    with pytest.raises(ValueError, match=r"conv_bias.*route it to another optimizer"):
        Muon().build([keras.Variable(np.ones((3, 3, 2, 4), "float32")), keras.Variable(np.zeros(4, "float32"), name="conv_bias")])
    with pytest.raises(ValueError, match="momentum"):
        Muon(momentum=1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        Muon(ns_steps=0)


# --- a linear conv model whose gradients NumPy can write down -----------------------


def conv_model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)  # valid: 2 x 2 x 3
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def conv_model_grads(weights, x, y):
    """Gradients of the MSE of conv_model (3x3 valid conv, global average pool, dense)."""
    kernel, bias, head, head_bias = weights
    patches = np.mean([x[:, i : i + 3, j : j + 3, :] for i in range(2) for j in range(2)], axis=0)
    features = np.einsum("bijc,ijco->bo", patches, kernel) + bias
    d_out = 2 * (features @ head + head_bias - y) / y.size
    d_features = d_out @ head.T
    return [np.einsum("bijc,bo->ijco", patches, d_features), d_features.sum(0), features.T @ d_out, d_out.sum(0)]


def test_filters_and_rest_splits_conv_kernels_from_the_rest():
    model = conv_model()
    filters, rest = filters_and_rest(model)
    assert [v.path for v in filters] == ["conv/kernel"]
    assert [v.path for v in rest] == ["conv/bias", "head/kernel", "head/bias"]
    with pytest.raises(ValueError, match="no conv filters"):
        muon_sgd(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), muon_lr=0.1, sgd_lr=0.1)
    with pytest.raises(ValueError, match="regular expression"):
        muon_sgd(["conv/(kernel"], muon_lr=0.1, sgd_lr=0.1)


@pytest.mark.parametrize("lookahead", [False, True], ids=["muon_sgd", "lookahead_of_muon_sgd"])
def test_muon_sgd_in_fit_gives_filters_muon_and_the_rest_sgd(lookahead):
    """Two fit steps: conv kernel = Muon (scheduled LR), conv bias and head = PyTorch's Nesterov SGD with coupled decay."""
    model = conv_model()
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(8, 4, 4, 2)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    muon_lr = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=1, decay_rate=0.5)  # 0.2, then 0.1
    optimizer = muon_sgd(model, muon_lr=muon_lr, sgd_lr=0.05, momentum=0.85, weight_decay=0.01, ns_steps=5, ns_dtype="float32")
    if lookahead:
        optimizer = Lookahead(optimizer, sync_period=2, alpha=0.25)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

    weights = [w.astype(np.float64) for w in conv_model().get_weights()]
    initial = [w.copy() for w in weights]
    states = [0.0] * 4
    for step, lr in enumerate((0.2, 0.1)):
        grads = conv_model_grads(weights, x[4 * step : 4 * step + 4], y[4 * step : 4 * step + 4])
        weights[0], states[0] = np_muon(weights[0], grads[0], states[0], lr, 0.6, steps=5)
        for i in (1, 2, 3):
            weights[i], states[i] = np_sgd(weights[i], grads[i], states[i], 0.05, 0.85, 0.01)
    if lookahead:  # one sync, after step 2, from the initial weights
        weights = [0.25 * w + 0.75 * w0 for w, w0 in zip(weights, initial)]
    for got, want, name in zip(model.get_weights(), weights, ["conv kernel", "conv bias", "head kernel", "head bias"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_configs_round_trip():
    model = conv_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=10, decay_rate=0.5)
    muon = Muon(schedule, momentum=0.5, nesterov=False, ns_steps=3, normalize_weights=False, name="m")
    assert Muon.from_config(muon.get_config()).get_config() == muon.get_config()
    assert muon.get_config()["ns_steps"] == 3 and muon.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"
    for optimizer in (
        muon_sgd(model, muon_lr=0.24, sgd_lr=0.1, weight_decay=1e-3, groups={"head/kernel": keras.optimizers.SGD(0.5)}),
        Lookahead(keras.optimizers.SGD(0.1, momentum=0.9), sync_period=3, alpha=AirbenchAlphaSchedule(50)),
        Lookahead(Muon(0.1), sync_period=4, alpha=0.3),
    ):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
        assert type(restored) is type(optimizer)
        assert restored.get_config() == optimizer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(muon_sgd(model, muon_lr=0.24, sgd_lr=0.1)))
    assert len(restored.optimizers) == 2  # one Muon for all filters, one SGD


# --- Lookahead ---------------------------------------------------------------------


def dense_model(seed=7):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def dense_grads(weights, x, y):
    kernel, bias = weights
    d_out = 2 * (x @ kernel + bias - y) / y.size
    return [x.T @ d_out, d_out.sum(0)]


@pytest.mark.parametrize("alpha", [0.5, "airbench"])
def test_lookahead_in_fit_matches_numpy_over_11_steps(alpha):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(44, 3)).astype("float32"), rng.normal(size=(44, 2)).astype("float32")
    schedule = AirbenchAlphaSchedule(total_steps=11) if alpha == "airbench" else alpha
    model = dense_model()
    inner = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    model.compile(optimizer=Lookahead(inner, sync_period=5, alpha=schedule), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # 11 steps: syncs after 5 and 10

    def alpha_at(step):
        return 0.5 if alpha == 0.5 else 1 - 0.95**5 * (step / 11) ** 3

    fast = [w.astype(np.float64) for w in dense_model().get_weights()]
    velocity = [0.0, 0.0]
    for step in range(11):
        if step % 5 == 0:
            slow = [w.copy() for w in fast]
        grads = dense_grads(fast, x[4 * step : 4 * step + 4], y[4 * step : 4 * step + 4])
        for i in range(2):
            fast[i], velocity[i] = np_keras_sgd(fast[i], grads[i], velocity[i], 0.1, 0.9)
        if (step + 1) % 5 == 0:
            a = alpha_at(step + 1)
            fast = slow = [a * f + (1 - a) * s for f, s in zip(fast, slow)]
    # fit ends on the slow weights (after step 10); step 11 shows in the momentum.
    for got, want in zip(model.get_weights(), slow):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(inner.momentums, velocity):
        np.testing.assert_allclose(np_(got), want, rtol=1e-5, atol=1e-6)
    assert int(np_(model.optimizer.iterations)) == 11
    assert not np.allclose(model.get_weights()[0], fast[0] + velocity[0])  # the sync did something


def test_lookahead_with_period_1_and_alpha_1_is_the_inner_optimizer():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(12, 3)).astype("float32"), rng.normal(size=(12, 2)).astype("float32")
    results = []
    for wrap in (False, True):
        model = dense_model()
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        model.compile(optimizer=Lookahead(optimizer, sync_period=1, alpha=1.0) if wrap else optimizer, loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        results.append(model.get_weights())
    assert not np.allclose(results[0][0], dense_model().get_weights()[0])
    for plain, wrapped in zip(*results):
        np.testing.assert_allclose(wrapped, plain, rtol=1e-6, atol=1e-7)


def test_lookahead_forwards_learning_rate_and_rejects_bad_arguments():
    inner = keras.optimizers.SGD(0.1)
    optimizer = Lookahead(inner)
    optimizer.learning_rate = 0.25
    assert float(np_(inner.learning_rate)) == pytest.approx(0.25)
    assert float(np_(AirbenchAlphaSchedule(10)(20))) == pytest.approx(1 - 0.95**5)
    with pytest.raises(ValueError, match="sync_period"):
        Lookahead(keras.optimizers.SGD(0.1), sync_period=0)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(keras.optimizers.SGD(0.1), alpha=1.5)
    with pytest.raises(ValueError, match="EMA"):
        Lookahead(keras.optimizers.SGD(0.1, use_ema=True))
    with pytest.raises(ValueError, match="inner optimizer"):
        Lookahead(keras.optimizers.SGD(0.1), weight_decay=0.1)


def test_lookahead_of_muon_sgd_state_survives_save_and_load_weights(tmp_path):
    """The checkpoint of davidnet.checkpoint (save_weights) restores every optimizer variable."""

    def compiled():
        model = conv_model()
        optimizer = Lookahead(muon_sgd(model, muon_lr=0.1, sgd_lr=0.1), sync_period=2, alpha=AirbenchAlphaSchedule(10))
        model.compile(optimizer=optimizer, loss="mse")
        optimizer.build(model.trainable_variables)
        return model, optimizer

    model, optimizer = compiled()
    rng = np.random.default_rng(10)
    for variable in optimizer.variables:
        variable.assign(rng.normal(size=variable.shape) if "float" in str(variable.dtype) else np.full(variable.shape, 7))
    model.save_weights(tmp_path / "checkpoint.weights.h5")
    restored_model, restored = compiled()
    restored_model.load_weights(tmp_path / "checkpoint.weights.h5")
    names = [v.path for v in restored.variables]
    assert sum(name.endswith("_slow") for name in names) == 4 and sum(name.endswith("_momentum") for name in names) == 4
    for saved, loaded in zip(optimizer.variables, restored.variables):
        np.testing.assert_array_equal(np_(loaded), np_(saved), err_msg=loaded.path)


def test_after_a_lookahead_fit_the_model_evaluates_and_saves(tmp_path):
    # fit ends by loading the slow weights; on JAX a shared buffer would be
    # deleted by the next step that donates the weights (evaluate), and save fail.
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=Lookahead(keras.optimizers.SGD(0.1), sync_period=2, alpha=0.5), loss="mse")
    model.fit(x, x[:, :2], batch_size=8, epochs=1, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    model.evaluate(x, x[:, :2], verbose=0)
    model.save(tmp_path / "m.keras")
    for saved, loaded in zip(weights, keras.models.load_model(tmp_path / "m.keras").get_weights()):
        np.testing.assert_array_equal(saved, loaded)


def test_a_saved_model_with_muon_lookahead_and_schedules_loads_in_a_fresh_process(tmp_path, monkeypatch):
    """davidnet.load_model, in an interpreter that imported nothing of ours, restores the
    optimizer of the fast preset: Lookahead around muon_sgd, with a TabulatedSchedule
    (a callback's in_graph), a plain schedule as a learning rate and airbench's alpha."""
    import json

    from davidnet.schedules import OneCycleSchedule, PiecewiseLinear
    from tests.helpers import run_python

    model = conv_model()
    callback = PiecewiseLinear([0, 1, 2], [0.0, 0.2, 0.0], steps_per_epoch=2, step_offset=1)
    optimizer = Lookahead(
        muon_sgd(model, muon_lr=callback.in_graph(4), sgd_lr=OneCycleSchedule(0.1, total_steps=4)),
        sync_period=2, alpha=AirbenchAlphaSchedule(4),
    )
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4, 4, 2)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    code = (
        "import json, sys, numpy as np, davidnet\n"
        "model = davidnet.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], model.predict(x, verbose=0))\n"
        "optimizer = model.optimizer\n"
        "parts = {type(o).__name__: o for o in optimizer.inner_optimizer.optimizers}\n"
        "model.fit(x, x[:, 0, 0, :], batch_size=4, epochs=1, verbose=0)  # trains on\n"
        "print(json.dumps({'optimizer': type(optimizer).__name__, 'alpha': type(optimizer.alpha).__name__,\n"
        "    'muon_lr': [type(parts['Muon']._learning_rate).__name__, parts['Muon']._learning_rate.values],\n"
        "    'sgd_lr': [type(parts['TorchSGD']._learning_rate).__name__, parts['TorchSGD']._learning_rate.get_config()],\n"
        "    'iterations': int(np.asarray(optimizer.iterations))}))\n"
    )
    if os.environ.get("DAVIDNET_TEST_JAX_CACHE"):
        # The suite's JAX compilation cache for the fresh interpreter too (JAX reads its settings
        # from the environment; nothing of ours imported): it finds the programs compiled above
        # (the initializers, the predict and train steps) instead of compiling them again.
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ["DAVIDNET_TEST_JAX_CACHE"])
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    proc = run_python(code, tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "p.npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["optimizer"] == "Lookahead" and loaded["alpha"] == "AirbenchAlphaSchedule"
    assert loaded["muon_lr"] == ["TabulatedSchedule", callback.in_graph(4).values]
    assert loaded["sgd_lr"] == ["OneCycleSchedule", OneCycleSchedule(0.1, total_steps=4).get_config()]
    assert loaded["iterations"] == 4  # 2 steps saved, 2 more after loading
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
