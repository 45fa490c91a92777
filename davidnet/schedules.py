"""Learning-rate schedules as Keras callbacks that set the LR every batch.

Every schedule is a ``keras.callbacks.Callback`` that, before each training
batch, computes the learning rate for the current *global* step in closed
form (plain NumPy) and assigns it to ``optimizer.learning_rate``.  The same
closed form is exposed as :meth:`LearningRateCallback.lr_at` (one step) and
:meth:`LearningRateCallback.lr_values` (vectorised, for plots and results
files), so what is plotted is exactly what is trained with.

Design notes
------------
**The step is counted in Python.**  The obvious alternative, reading
``optimizer.iterations`` every batch, is a device-to-host transfer: the host
has to wait for the previous train step to finish before it can even launch
the next one, which throws away the asynchronous dispatch that keeps a fast
GPU busy.  So the callbacks read ``optimizer.iterations`` exactly once, in
``on_train_begin`` (which also makes a resumed ``fit`` continue the schedule
where the previous one stopped), and from then on derive the step from the
``batch`` index Keras passes in.  Of the batch hooks only
``on_train_batch_begin`` is overridden: overriding ``on_train_batch_end``
would make Keras turn off its asynchronous dispatch of batch-end callbacks
for the whole callback list.

**JAX needs a state sync before the assignment.**  Keras 3's JAX trainer
threads every variable - including the optimizer's ``learning_rate``
variable - through the jitted train step as an explicit state tuple, and
detaches that state from the ``keras.Variable`` objects for the duration of
an epoch.  Assigning to the variable through a cached optimizer reference
mid-epoch therefore changes nothing the train step sees (it keeps using the
LR carried in its state), and the trainer's end-of-epoch ``jax_state_sync()``
even overwrites the assignment with that stale value.  The trainer only
rebuilds its state from the variables at the start of each epoch, so the LR
set for an epoch's first batch would silently be used for the whole epoch
(measured: a per-batch schedule degrades to a per-epoch staircase).

Going through ``Callback.model`` calls ``model.jax_state_sync()``, which
re-attaches the state to the variables and flags the trainer to rebuild its
state from them before the next step, so the assignment that follows is
picked up.  The order matters: sync first, then assign (an assignment made
before the sync is overwritten by it).  The sync plus the state rebuild it
triggers is Python work proportional to the number of variables (about
0.3 ms per batch for a 70-variable ResNet-9 on a CPU host) but no
device-to-host transfer, so it does not stall asynchronous dispatch.  On the
other backends the cached optimizer reference is used and nothing is synced.
When the LR is unchanged from the previous batch the assignment (and, on
JAX, the sync) is skipped.

Schedules:

* :class:`PiecewiseLinear` - linear interpolation between (epoch, LR) knots;
  DavidNet uses ``PiecewiseLinear([0, 5, 24], [0, 0.4, 0])``.
* :class:`Cyclic` - Smith's cyclical learning rates (triangular,
  triangular2, exp_range or a custom amplitude scaling).
* :class:`OneCycle` - Smith's one-cycle policy as in fastai / PyTorch
  ``OneCycleLR(three_phase=False)``.

:func:`scale_fn_from_expression` safely turns a command-line string such as
``"0.5*(1+sin(x*pi/2.5))"`` into a scale function for :class:`Cyclic`, and
:func:`plot_schedules` draws several schedules into one PNG.
"""

from __future__ import annotations

import ast
import math
import os
from typing import Callable, Mapping, Sequence

import keras
import numpy as np

__all__ = [
    "LearningRateCallback",
    "TabulatedSchedule",
    "PiecewiseLinear",
    "Cyclic",
    "OneCycle",
    "scale_fn_from_expression",
    "plot_schedules",
]


def _check_steps_per_epoch(steps_per_epoch):
    if steps_per_epoch is None:
        return None
    if isinstance(steps_per_epoch, bool) or not float(steps_per_epoch).is_integer():
        raise ValueError(
            f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}."
        )
    steps_per_epoch = int(steps_per_epoch)
    if steps_per_epoch <= 0:
        raise ValueError(
            f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}."
        )
    return steps_per_epoch


class LearningRateCallback(keras.callbacks.Callback):
    """Base class: sets ``optimizer.learning_rate`` before every train batch.

    Subclasses implement :meth:`_lr`, a vectorised closed form of the
    learning rate as a function of the global step (a float64 NumPy array of
    any shape, 0-d included).  The base class turns that into a callback:

    * ``on_train_begin`` resolves ``steps_per_epoch`` (from the constructor
      or from ``self.params["steps"]``, which ``fit`` fills in) and reads the
      starting global step once from ``optimizer.iterations``;
    * ``on_train_batch_begin`` assigns the LR for the current global step and
      appends ``(global_step, lr)`` to :attr:`history`.

    See the module docstring for why the step is counted in Python and why
    the JAX backend needs a state sync before the assignment.

    With ``steps_per_execution=k`` Keras calls batch callbacks once per ``k``
    steps; the LR is then set once per call (the value for its first step)
    and held for the ``k`` steps.

    Args:
        steps_per_epoch: Optimizer steps per epoch, used by schedules defined
            in epochs.  ``None`` (default) takes it from ``fit`` at the start
            of training.
        step_offset: 0: optimizer step ``k`` (from 0) trains with the closed
            form at ``k`` (PyTorch's schedulers, airbench); 1: at ``k + 1``
            (cifar10-fast, whose optimizer counts the step before it reads
            the schedule).  :meth:`lr_at` is always the closed form itself.

    Attributes:
        history: List of ``(global_step, lr)`` tuples, one per batch for
            which the callback set the learning rate (over all ``fit`` calls).
        steps_per_epoch: The steps per epoch in effect (given, or learned
            from the last ``fit``), or ``None`` if not known yet.

    Example:

    >>> import numpy as np, keras
    >>> from davidnet.schedules import PiecewiseLinear
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    >>> schedule = PiecewiseLinear([0, 1, 2], [0.0, 0.1, 0.0])
    >>> x, y = np.ones((32, 4)), np.zeros((32, 1))
    >>> _ = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...               callbacks=[schedule])
    >>> [round(lr, 3) for _, lr in schedule.history]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.075, 0.05, 0.025]
    """

    # Whether the closed form needs steps_per_epoch (schedules defined in
    # epochs).  Subclasses may override with a property.
    requires_steps_per_epoch = True

    def __init__(self, steps_per_epoch=None, step_offset=0):
        super().__init__()
        if step_offset not in (0, 1):
            raise ValueError(f"step_offset must be 0 or 1, got {step_offset!r}.")
        self.step_offset = int(step_offset)
        self._steps_per_epoch_arg = _check_steps_per_epoch(steps_per_epoch)
        self.steps_per_epoch = self._steps_per_epoch_arg
        self.history: list[tuple[int, float]] = []
        self._optimizer = None
        self._sync_before_assign = False
        self._steps_per_call = 1
        self._epoch_start_step = 0
        self._step = 0
        self._last_lr = None
        self._in_graph = False

    # ------------------------------------------------------------------ #
    # Closed form
    # ------------------------------------------------------------------ #
    def _lr(self, steps: np.ndarray) -> np.ndarray:
        """Vectorised LR for float64 global steps (any shape, 0-d included)."""
        raise NotImplementedError

    def _require_steps_per_epoch(self) -> int:
        if self.steps_per_epoch is None:
            raise ValueError(
                f"{type(self).__name__} needs steps_per_epoch: pass "
                "steps_per_epoch=... to the constructor, or use the callback "
                "in model.fit() on data of known length so it can be taken "
                "from fit's params['steps']."
            )
        return self.steps_per_epoch

    def lr_at(self, step) -> float:
        """Learning rate at global step ``step`` (0 = first batch), as a float."""
        step = float(step)
        if not step >= 0:
            raise ValueError(f"step must be >= 0, got {step!r}.")
        return float(self._lr(np.asarray(step, dtype=np.float64)))

    def lr_values(self, steps) -> np.ndarray:
        """Learning rates for an array of global steps (same shape, float64).

        Equal elementwise to :meth:`lr_at`, since both evaluate the same
        closed form; meant for plots and results files.
        """
        steps = np.asarray(steps, dtype=np.float64)
        if steps.size and not np.all(steps >= 0):
            raise ValueError("steps must all be >= 0.")
        return np.asarray(self._lr(steps), dtype=np.float64).reshape(steps.shape)

    def in_graph(self, total_steps) -> "TabulatedSchedule":
        """The schedule as a Keras ``LearningRateSchedule`` for the optimizer,
        evaluated inside the compiled train step; this callback then only
        records.

        Pass the result as the optimizer's ``learning_rate`` and keep this
        callback in ``fit``: it no longer assigns anything (no per-step Python
        touches the optimizer, and on JAX no per-step state sync), and at each
        epoch's end it appends that epoch's ``(step, lr)`` pairs to
        :attr:`history` from the closed form, for plots and results files.
        The table holds ``lr_at(step + step_offset)`` for steps
        ``0 .. total_steps - 1``; later steps keep the last value.

        Args:
            total_steps: the optimizer steps of the whole run.

        Example:

        >>> from davidnet.schedules import PiecewiseLinear
        >>> callback = PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=97)
        >>> optimizer = keras.optimizers.SGD(learning_rate=callback.in_graph(24 * 97))
        >>> # model.compile(optimizer=optimizer, ...); model.fit(..., callbacks=[callback])
        """
        if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
        self._in_graph = True
        return self._tabulated(self.lr_values, total_steps)

    def momentum_in_graph(self, total_steps) -> "TabulatedSchedule | None":
        """The momentum the schedule sets with the learning rate, as a schedule
        of the step for the optimizer (SGD's momentum, Adam's ``beta_1``), or
        None: only one-cycle has one."""
        return None

    def _tabulated(self, values, total_steps):
        """``values(step + step_offset)`` for steps ``0 .. total_steps - 1``, as a table in the graph."""
        return TabulatedSchedule(values(np.arange(int(total_steps)) + self.step_offset).tolist())

    # ------------------------------------------------------------------ #
    # Callback hooks
    # ------------------------------------------------------------------ #
    def on_train_begin(self, logs=None):
        if self._steps_per_epoch_arg is not None:
            self.steps_per_epoch = self._steps_per_epoch_arg
        else:
            steps = (self.params or {}).get("steps")
            self.steps_per_epoch = _check_steps_per_epoch(steps) if steps else None
            if self.steps_per_epoch is None and self.requires_steps_per_epoch:
                raise ValueError(
                    f"{type(self).__name__}: steps_per_epoch was not given and "
                    "fit() does not know the number of steps per epoch (e.g. a "
                    "dataset of unknown length). Pass steps_per_epoch=... to "
                    "the callback (or to fit())."
                )
        # Touching self.model once here is free: the state is in sync at the
        # start of fit.  Reading iterations once (not per batch) is what lets
        # a resumed fit continue the schedule without per-batch host syncs.
        model = self.model
        self._optimizer = model.optimizer
        # convert_to_numpy: under MirroredStrategy `iterations` is a MirroredVariable, which int() refuses.
        self._step = int(keras.ops.convert_to_numpy(self._optimizer.iterations))
        self._epoch_start_step = self._step
        self._steps_per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._sync_before_assign = keras.backend.backend() == "jax"
        self._last_lr = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = self._step

    def on_epoch_end(self, epoch, logs=None):
        if self._in_graph:
            # In-graph: the optimizer counted the steps; one read per epoch.
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            steps = np.arange(self._epoch_start_step, self._step)
            self.history.extend(zip(steps.tolist(), self.lr_values(steps + self.step_offset).tolist()))
        if logs is not None and self.history:
            # As Keras's LearningRateScheduler: the epoch's last learning rate
            # in the logs, so History, CSVLogger and TensorBoard show it.
            logs["learning_rate"] = float(self.history[-1][1])

    def on_train_batch_begin(self, batch, logs=None):
        if self._in_graph:
            return
        if self._optimizer is None:
            raise RuntimeError(
                f"{type(self).__name__}.on_train_batch_begin was called before "
                "on_train_begin; use the callback through model.fit() or call "
                "on_train_begin() first."
            )
        # `batch` is the index within the epoch of the first step of this
        # call, so this stays exact with steps_per_execution > 1.
        step = self._epoch_start_step + int(batch)
        lr = self.lr_at(step + self.step_offset)
        if lr != self._last_lr:
            if self._sync_before_assign:
                # JAX: the property syncs the trainer's detached state back
                # into the variables and makes the trainer re-read them before
                # the next step; assigning via self._optimizer alone would be
                # ignored mid-epoch (see module docstring).
                optimizer = self.model.optimizer
            else:
                optimizer = self._optimizer
            optimizer.learning_rate = lr
            self._last_lr = lr
        self.history.append((step, lr))
        steps_in_call = self._steps_per_call
        epoch_steps = (self.params or {}).get("steps")
        if epoch_steps:
            # The last call of an epoch may cover fewer steps.
            steps_in_call = min(steps_in_call, int(epoch_steps) - int(batch))
        self._step = step + max(1, steps_in_call)

    def get_config(self) -> dict:
        """Constructor arguments (``cls(**cb.get_config())`` rebuilds it)."""
        return {"steps_per_epoch": self._steps_per_epoch_arg, "step_offset": self.step_offset}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="davidnet")
class TabulatedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate looked up per optimizer step from a table, in the graph.

    Any of our schedules becomes one through
    :meth:`LearningRateCallback.in_graph`, so the train step computes its own
    learning rate: the host never assigns it between steps, which keeps
    steps queued back to back on an accelerator (and lets a whole epoch run
    as one compiled loop). A table, not the formula in ``keras.ops``, so that
    every schedule (custom scale functions included) is exactly what
    :meth:`LearningRateCallback.lr_at` says; a 24-epoch run is a few thousand
    floats.

    Args:
        values: the learning rate at steps 0, 1, ...; steps past the end keep
            the last value.

    Example:

    >>> schedule = TabulatedSchedule([0.0, 0.1, 0.2])
    >>> [float(schedule(step)) for step in (0, 2, 9)]
    [0.0, 0.2, 0.2]
    """

    def __init__(self, values):
        values = [float(v) for v in values]
        if not values or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"values must be a non-empty list of finite learning rates >= 0. Got: {values[:5]}...")
        self.values = values
        self._table = np.asarray(values, np.float32)

    def __call__(self, step):
        # A NumPy constant, converted in each trace: a cached backend tensor
        # would leak from one traced function into the next.
        index = keras.ops.clip(keras.ops.cast(step, "int32"), 0, len(self.values) - 1)
        return keras.ops.take(keras.ops.convert_to_tensor(self._table), index)

    def get_config(self):
        return {"values": self.values}


class PiecewiseLinear(LearningRateCallback):
    """Piecewise-linear learning rate through (epoch, LR) knots.

    ``lr_at(step) = np.interp(step / steps_per_epoch, knots, values)``: linear
    between knots, constant beyond the first and last knot.  Knots may be
    fractional epochs; a repeated knot gives a step change.

    Args:
        knots: Non-decreasing epochs (at least 2).
        values: Learning rates (>= 0) at the knots, same length as ``knots``.
        steps_per_epoch: Optimizer steps per epoch; ``None`` takes it from
            ``fit``.
        step_offset: 0 or 1, see :class:`LearningRateCallback`.

    Example:

    DavidNet's schedule: linear warm-up from 0 to 0.4 over 5 epochs, then
    linear decay to 0 at epoch 24.

    >>> from davidnet.schedules import PiecewiseLinear
    >>> schedule = PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=10)
    >>> [round(schedule.lr_at(s), 6) for s in (0, 25, 50, 145, 240, 1000)]
    [0.0, 0.2, 0.4, 0.2, 0.0, 0.0]
    >>> # model.fit(x, y, epochs=24, callbacks=[schedule])
    """

    def __init__(self, knots: Sequence[float], values: Sequence[float], steps_per_epoch=None, step_offset=0):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        knots_a = np.asarray(knots, dtype=np.float64)
        values_a = np.asarray(values, dtype=np.float64)
        if knots_a.ndim != 1 or values_a.ndim != 1:
            raise ValueError("knots and values must be 1-D sequences of numbers.")
        if len(knots_a) != len(values_a):
            raise ValueError(
                f"knots and values must have the same length, got "
                f"{len(knots_a)} knots and {len(values_a)} values."
            )
        if len(knots_a) < 2:
            raise ValueError(f"need at least 2 knots, got {len(knots_a)}.")
        if not (np.all(np.isfinite(knots_a)) and np.all(np.isfinite(values_a))):
            raise ValueError("knots and values must be finite numbers.")
        if np.any(np.diff(knots_a) < 0):
            raise ValueError(f"knots must be non-decreasing, got {list(knots)}.")
        if np.any(values_a < 0):
            raise ValueError(f"learning rates must be >= 0, got {list(values)}.")
        self.knots = [float(k) for k in knots_a]
        self.values = [float(v) for v in values_a]
        self._knots_a = knots_a
        self._values_a = values_a

    def _lr(self, steps):
        epochs = steps / self._require_steps_per_epoch()
        return np.interp(epochs, self._knots_a, self._values_a)

    def get_config(self):
        return {"knots": list(self.knots), "values": list(self.values), **super().get_config()}


# ---------------------------------------------------------------------- #
# Safe expression parsing for custom Cyclic scale functions
# ---------------------------------------------------------------------- #
_ALLOWED_FUNCTIONS = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    # Elementwise, so that min(x, 1) works on arrays as well as scalars.
    "min": lambda *args: _reduce_elementwise(np.minimum, args),
    "max": lambda *args: _reduce_elementwise(np.maximum, args),
    "floor": np.floor,
    "ceil": np.ceil,
}
_ALLOWED_CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY_OPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
}
_UNARY_OPS = {ast.USub: np.negative, ast.UAdd: np.positive}


def _reduce_elementwise(fn, args):
    if len(args) < 2:
        raise ValueError("min/max need at least 2 arguments")
    result = args[0]
    for arg in args[1:]:
        result = fn(result, arg)
    return result


def _compile_node(node, expr):
    """Turn a whitelisted AST node into a closure of x; reject anything else."""

    def reject(what):
        return ValueError(
            f"scale expression {expr!r}: {what} is not allowed; use numbers, x, "
            f"+ - * / **, the constants {', '.join(sorted(_ALLOWED_CONSTANTS))} "
            f"and the functions {', '.join(sorted(_ALLOWED_FUNCTIONS))}."
        )

    if isinstance(node, ast.Expression):
        return _compile_node(node.body, expr)
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True/False are not numbers here.
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            value = float(node.value)
            return lambda x: value
        raise reject(f"the constant {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x: x
        if node.id in _ALLOWED_CONSTANTS:
            value = _ALLOWED_CONSTANTS[node.id]
            return lambda x: value
        raise reject(f"the name {node.id!r}")
    if isinstance(node, ast.BinOp):
        op = _BINARY_OPS.get(type(node.op))
        if op is None:
            raise reject(f"the operator {type(node.op).__name__}")
        left, right = _compile_node(node.left, expr), _compile_node(node.right, expr)
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.UnaryOp):
        op = _UNARY_OPS.get(type(node.op))
        if op is None:
            raise reject(f"the operator {type(node.op).__name__}")
        operand = _compile_node(node.operand, expr)
        return lambda x: op(operand(x))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise reject(f"calling {ast.unparse(node.func)!r}")
        if node.func.id not in _ALLOWED_FUNCTIONS:
            raise reject(f"the function {node.func.id!r}")
        if node.keywords:
            raise reject(f"keyword arguments in {node.func.id}()")
        fn = _ALLOWED_FUNCTIONS[node.func.id]
        args = [_compile_node(a, expr) for a in node.args]
        if not args:
            raise reject(f"calling {node.func.id}() without arguments")
        return lambda x: fn(*(a(x) for a in args))
    if isinstance(node, ast.Attribute):
        raise reject(f"attribute access {ast.unparse(node)!r}")
    try:
        token = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every parsed node
        token = type(node).__name__
    raise reject(f"{type(node).__name__} {token!r}")


def scale_fn_from_expression(expr: str) -> Callable:
    """Compile a formula in ``x`` into a scale function, without ``eval``.

    Meant for ``Cyclic(scale_fn=...)`` given on the command line.  The string
    is parsed with :mod:`ast` and only a whitelist is accepted: numbers, the
    name ``x``, ``+ - * / **``, unary ``-``/``+``, the constants ``pi`` and
    ``e`` and calls to ``sin cos tan exp log sqrt abs min max floor ceil``
    (``min``/``max`` are elementwise).  Anything else (attribute access,
    other names, subscripts, lambdas, ...) raises ``ValueError`` naming the
    offending token.  The returned function works on Python scalars and NumPy
    arrays (elementwise).

    Args:
        expr: The formula, e.g. ``"0.5*(1+sin(x*pi/2.5))"``.

    Returns:
        A function ``f(x)`` returning a float for scalar ``x`` and an array
        for array ``x``.

    Example:

    >>> from davidnet.schedules import scale_fn_from_expression
    >>> f = scale_fn_from_expression("0.5*(1+sin(x*pi/2))")
    >>> f(1.0)
    1.0
    >>> scale_fn_from_expression("__import__('os')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: scale expression "__import__('os')": the function '__import__' is not allowed; ...
    """
    if not isinstance(expr, str):
        raise ValueError(f"expected a string expression, got {type(expr).__name__}.")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"scale expression {expr!r} is not a valid formula: {err.msg}.") from None
    body = _compile_node(tree, expr)

    def scale_fn(x):
        is_array = isinstance(x, np.ndarray) and x.ndim > 0
        result = body(np.asarray(x, dtype=np.float64))
        if is_array:
            return np.broadcast_to(np.asarray(result, dtype=np.float64), np.shape(x)).copy()
        return float(result)

    scale_fn.expression = expr
    scale_fn.__name__ = "scale_fn"
    scale_fn.__doc__ = f"Scale function f(x) = {expr}"
    return scale_fn


def _apply_elementwise(fn, arr):
    """Call a user scale function on an array, one element at a time if needed."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 0:
        return np.float64(fn(float(arr)))
    try:
        out = np.asarray(fn(arr), dtype=np.float64)
        if out.shape == arr.shape:
            return out
    except Exception:
        # e.g. lambda x: math.sin(x), which only takes scalars.
        pass
    return np.array([fn(float(v)) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)


class Cyclic(LearningRateCallback):
    """Cyclical learning rate (Smith, 2017).

    Implements "Cyclical Learning Rates for Training Neural Networks"
    (L. N. Smith, WACV 2017) with the global step ``it`` (iterations)::

        cycle = floor(1 + it / (2 * step_size))
        x     = |it / step_size - 2 * cycle + 1|
        lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale

    where ``scale`` is 1 (``"triangular"``), ``1 / 2**(cycle - 1)``
    (``"triangular2"``), ``gamma**it`` (``"exp_range"``), or, if ``scale_fn``
    is given (which then overrides ``mode``), ``scale_fn(cycle)`` or
    ``scale_fn(it)`` according to ``scale_mode``.

    Args:
        base_lr: Lower LR bound (start of each cycle).
        max_lr: Upper LR bound (reached at ``step_size``, ``3*step_size``,
            ...; only exactly for the ``"triangular"`` mode).
        step_size: Iterations in half a cycle (Smith suggests 2-10 epochs'
            worth of steps).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: Per-iteration decay of the amplitude for ``"exp_range"``.
        scale_fn: Custom amplitude scaling: a callable of one argument, or a
            formula string in ``x`` compiled with
            :func:`scale_fn_from_expression` (strings keep ``get_config``
            serialisable).
        scale_mode: ``"cycle"`` (``scale_fn`` gets the cycle number, from 1)
            or ``"iterations"`` (it gets the global step).
        steps_per_epoch: Not needed by the formula (which is in iterations);
            kept for a uniform interface.
        step_offset: 0 or 1, see :class:`LearningRateCallback`.

    Example:

    >>> from davidnet.schedules import Cyclic
    >>> clr = Cyclic(base_lr=0.001, max_lr=0.006, step_size=2000,
    ...              mode="triangular2")
    >>> [round(clr.lr_at(s), 6) for s in (0, 2000, 4000, 6000)]
    [0.001, 0.006, 0.001, 0.0035]
    >>> sine = Cyclic(0.001, 0.006, 2000,
    ...               scale_fn="0.5*(1+sin(x*pi/2))", scale_mode="cycle")
    >>> # model.fit(x, y, epochs=..., callbacks=[clr])
    """

    MODES = ("triangular", "triangular2", "exp_range")
    SCALE_MODES = ("cycle", "iterations")
    requires_steps_per_epoch = False

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size: float,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable | str | None = None,
        scale_mode: str = "cycle",
        steps_per_epoch=None,
        step_offset=0,
    ):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        if mode not in self.MODES:
            raise ValueError(
                f"Unknown mode {mode!r}; allowed modes are {', '.join(map(repr, self.MODES))} "
                "(or pass scale_fn for a custom scaling)."
            )
        if scale_mode not in self.SCALE_MODES:
            raise ValueError(
                f"Unknown scale_mode {scale_mode!r}; allowed: {', '.join(map(repr, self.SCALE_MODES))}."
            )
        if not float(step_size) > 0:
            raise ValueError(f"step_size must be > 0 iterations, got {step_size!r}.")
        if not (float(base_lr) >= 0 and float(max_lr) >= 0):
            raise ValueError(f"learning rates must be >= 0, got base_lr={base_lr!r}, max_lr={max_lr!r}.")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}.")
        if scale_fn is not None and not (callable(scale_fn) or isinstance(scale_fn, str)):
            raise ValueError(
                f"scale_fn must be a callable or a formula string, got {type(scale_fn).__name__}."
            )
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.step_size = float(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self._scale_callable = (
            scale_fn_from_expression(scale_fn) if isinstance(scale_fn, str) else scale_fn
        )

    def _lr(self, steps):
        it = steps
        cycle = np.floor(1.0 + it / (2.0 * self.step_size))
        x = np.abs(it / self.step_size - 2.0 * cycle + 1.0)
        if self._scale_callable is not None:
            arg = cycle if self.scale_mode == "cycle" else it
            scale = _apply_elementwise(self._scale_callable, arg)
        elif self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / 2.0 ** (cycle - 1.0)
        else:  # exp_range
            scale = self.gamma**it
        return self.base_lr + (self.max_lr - self.base_lr) * np.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "scale_fn": self.scale_fn,
            "scale_mode": self.scale_mode,
            **super().get_config(),
        }


class OneCycle(LearningRateCallback):
    """One-cycle learning rate and momentum (Smith), as PyTorch's ``OneCycleLR``.

    With ``T`` total steps and ``W = pct_start * T - 1``: the LR rises from
    ``max_lr / div_factor`` at step 0 to ``max_lr`` at step ``W``, then
    anneals to ``max_lr / (div_factor * final_div_factor)`` at step ``T - 1``
    and stays there.  Both phases use the same annealing curve: cosine
    (``end + (start - end) * (1 + cos(pi * p)) / 2``) or linear, with ``p``
    the fraction of the phase done.  The momentum goes the other way, from
    ``max_momentum`` down to ``base_momentum`` at ``W`` and back up at
    ``T - 1`` (:meth:`momentum_values`; Adam's ``beta_1`` in PyTorch).  This
    is PyTorch's ``OneCycleLR`` (``three_phase=False``) step for step: its
    optimizer step ``k`` (from 0) uses the schedule at ``k``.

    Args:
        max_lr: Peak learning rate.
        total_steps: Length of the cycle in optimizer steps.  Give either
            this or ``epochs``.
        epochs: Length of the cycle in epochs (may be fractional); needs
            ``steps_per_epoch``, given here or taken from ``fit``.
        pct_start: Fraction of the cycle spent warming up, in ``[0, 1)``.
        anneal: ``"cos"`` or ``"linear"``.
        div_factor: Initial LR is ``max_lr / div_factor``.
        final_div_factor: Final LR is ``max_lr / (div_factor *
            final_div_factor)``.
        base_momentum, max_momentum: the momentum's range (PyTorch: 0.85
            and 0.95).
        steps_per_epoch: Optimizer steps per epoch (only used with
            ``epochs``); ``None`` takes it from ``fit``.
        step_offset: 0 or 1, see :class:`LearningRateCallback`.

    Example:

    ResNet-9 with Adam and gradient clipping, one cycle over 8 epochs:

    >>> from davidnet.schedules import OneCycle
    >>> sched = OneCycle(max_lr=0.01, epochs=8, steps_per_epoch=100,
    ...                  pct_start=0.25)
    >>> sched.total_steps
    800
    >>> [round(sched.lr_at(s), 8) for s in (0, 199, 799)]
    [0.0004, 0.01, 4e-08]
    >>> [round(float(m), 4) for m in sched.momentum_values([0, 199, 799])]
    [0.95, 0.85, 0.95]
    >>> # model.compile(optimizer=keras.optimizers.Adam(clipnorm=0.1), ...)
    >>> # model.fit(x, y, epochs=8, callbacks=[sched])
    """

    ANNEALS = ("cos", "linear")

    def __init__(
        self,
        max_lr: float,
        total_steps: int | None = None,
        epochs: float | None = None,
        pct_start: float = 0.25,
        anneal: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        steps_per_epoch=None,
        step_offset=0,
    ):
        super().__init__(steps_per_epoch=steps_per_epoch, step_offset=step_offset)
        if (total_steps is None) == (epochs is None):
            raise ValueError(
                "OneCycle needs exactly one of total_steps (optimizer steps) or "
                f"epochs (with steps_per_epoch); got total_steps={total_steps!r}, "
                f"epochs={epochs!r}."
            )
        if total_steps is not None and (
            isinstance(total_steps, bool)
            or not float(total_steps).is_integer()
            or int(total_steps) <= 0
        ):
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
        if epochs is not None and not float(epochs) > 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}.")
        if not float(max_lr) > 0:
            raise ValueError(f"max_lr must be > 0, got {max_lr!r}.")
        if not 0.0 <= float(pct_start) < 1.0:
            raise ValueError(f"pct_start must be in [0, 1), got {pct_start!r}.")
        if anneal not in self.ANNEALS:
            raise ValueError(
                f"Unknown anneal {anneal!r}; allowed: {', '.join(map(repr, self.ANNEALS))}."
            )
        if not (float(div_factor) > 0 and float(final_div_factor) > 0):
            raise ValueError(
                "div_factor and final_div_factor must be > 0, got "
                f"{div_factor!r} and {final_div_factor!r}."
            )
        if not 0.0 <= float(base_momentum) <= float(max_momentum) < 1.0:
            raise ValueError(
                f"need 0 <= base_momentum <= max_momentum < 1, got {base_momentum!r} and {max_momentum!r}."
            )
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.max_lr = float(max_lr)
        self._total_steps_arg = None if total_steps is None else int(total_steps)
        self.epochs = None if epochs is None else float(epochs)
        self.pct_start = float(pct_start)
        self.anneal = anneal
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.initial_lr = self.max_lr / self.div_factor
        self.final_lr = self.initial_lr / self.final_div_factor

    @property
    def requires_steps_per_epoch(self):
        return self._total_steps_arg is None

    @property
    def total_steps(self) -> int:
        """Cycle length in optimizer steps (from ``epochs`` if needed)."""
        if self._total_steps_arg is not None:
            return self._total_steps_arg
        return max(1, int(round(self.epochs * self._require_steps_per_epoch())))

    def _anneal(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1.0)
        return start + (end - start) * pct

    def _phases(self, steps, start, middle, end):
        """``start`` -> ``middle`` over steps 0 .. W, ``middle`` -> ``end`` over
        W .. T - 1, as PyTorch's ``get_lr``; ``end`` after T - 1."""
        steps = np.asarray(steps, dtype=np.float64)
        peak = self.pct_start * self.total_steps - 1.0
        last = self.total_steps - 1.0
        # Guarded divisions: a warm-up of at most one step is no warm-up.
        up = self._anneal(start, middle, np.clip(steps / max(peak, 1e-12), 0.0, 1.0))
        down = self._anneal(middle, end, np.clip((steps - peak) / max(last - peak, 1e-12), 0.0, 1.0))
        return np.where(steps <= peak, up, down) if peak > 0 else down

    def _lr(self, steps):
        return self._phases(steps, self.initial_lr, self.max_lr, self.final_lr)

    def momentum_values(self, steps) -> np.ndarray:
        """The momentum (Adam's ``beta_1``) at each global step: max -> base -> max."""
        return self._phases(steps, self.max_momentum, self.base_momentum, self.max_momentum)

    def momentum_in_graph(self, total_steps) -> "TabulatedSchedule":
        """:meth:`momentum_values` in the graph (SGD's momentum, Adam's ``beta_1``)."""
        return self._tabulated(self.momentum_values, total_steps)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self._total_steps_arg,
            "epochs": self.epochs,
            "pct_start": self.pct_start,
            "anneal": self.anneal,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            **super().get_config(),
        }


def plot_schedules(
    callbacks: Mapping[str, LearningRateCallback], total_steps: int, path
) -> str:
    """Plot several schedules' LR against the global step into one PNG.

    Args:
        callbacks: Mapping from legend label to schedule.  Schedules defined
            in epochs must know their ``steps_per_epoch``.
        total_steps: Plot steps ``0 .. total_steps - 1``.
        path: Output file (PNG); parent directories are created.

    Returns:
        ``path`` as a string.

    Example:

    >>> from davidnet.schedules import PiecewiseLinear, OneCycle, plot_schedules
    >>> plot_schedules(
    ...     {"davidnet": PiecewiseLinear([0, 5, 24], [0, 0.4, 0], steps_per_epoch=98),
    ...      "one-cycle": OneCycle(0.4, total_steps=24 * 98)},
    ...     total_steps=24 * 98, path="/tmp/schedules.png")
    '/tmp/schedules.png'
    """
    if not callbacks:
        raise ValueError("plot_schedules needs at least one schedule.")
    if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    steps = np.arange(int(total_steps))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for label, callback in callbacks.items():
            ax.plot(steps, callback.lr_values(steps), label=str(label))
        ax.set_xlabel("global step")
        ax.set_ylabel("learning rate")
        ax.set_xlim(0, max(int(total_steps) - 1, 1))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path
