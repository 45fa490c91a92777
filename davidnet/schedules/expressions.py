"""A safe parser for the formulas of custom ``Cyclic`` scale functions.

:func:`scale_fn_from_expression` turns a command-line string such as
``"0.5*(1+sin(x*pi/2.5))"`` into a scale function, without ``eval``: the
string is parsed with :mod:`ast` and only a whitelist of numbers, ``x``,
arithmetic, two constants and a few NumPy functions is accepted. The formula
is bounded (its length, its nesting, its literals and constant exponents, each
function's arguments), so that no string can exhaust the parser, the memory or
the time; :func:`checked_scale_fn` also evaluates it over every cycle of a run
before the run starts, and refuses a scale that is not a finite number in
``[0, MAX_SCALE]`` at some ``x``.
"""

from __future__ import annotations

import ast
import math
from typing import Callable

import numpy as np

__all__ = ["scale_fn_from_expression", "checked_scale_fn", "scale_problem", "ScaleExpressionError"]

MAX_LENGTH = 500  # characters
MAX_DEPTH = 64  # levels of the syntax tree (a chain a+b+c+... is one level a term)
MAX_LITERAL = 1e9  # the largest number written in a formula
MAX_EXPONENT = 100  # the largest constant exponent: 10**100 still fits a float64
MAX_SCALE = 1e6  # an amplitude scale, usually in [0, 1]; beyond, the float32 rates overflow soon
CHECKED_CYCLES = 2**16  # every x up to this is evaluated, then a geometric sample to the last

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
# (fewest, most) arguments of each function.
_ARITY = {name: (1, 1) for name in _ALLOWED_FUNCTIONS} | {"min": (2, 16), "max": (2, 16)}
_ALLOWED_CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY_OPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
}
_UNARY_OPS = {ast.USub: np.negative, ast.UAdd: np.positive}


class ScaleExpressionError(ValueError):
    """A refused scale formula. ``str(e)`` is one line naming the formula;
    ``e.reason`` is what is wrong, without it."""

    def __init__(self, expr, reason):
        self.expr, self.reason = expr, reason.rstrip(".")
        super().__init__(f"scale expression {_quoted(expr)}: {self.reason}.")


def _g(value):
    """A number as a message writes it: 1e6, 1.6e16, -0.5."""
    return f"{value:.6g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _quoted(expr, limit=60):
    text = repr(expr) if isinstance(expr, str) else f"of type {type(expr).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reduce_elementwise(fn, args):
    result = args[0]
    for arg in args[1:]:
        result = fn(result, arg)
    return result


def _depth(tree):
    """Levels of the syntax tree, without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _uses_x(node):
    return any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(node))


def _compile_node(node, expr):
    """Turn a whitelisted AST node into a closure of x; reject anything else.
    A part without x is evaluated once, here, and must be a finite number."""
    closure = _compile_parts(node, expr)
    if isinstance(node, (ast.Constant, ast.Name, ast.Expression)) or _uses_x(node):
        return closure
    with np.errstate(all="ignore"):
        value = float(closure(np.float64(1.0)))
    if not math.isfinite(value):
        raise ScaleExpressionError(expr, f"its part {_quoted(ast.unparse(node))} is {value}, not a finite number")
    return lambda x: value


def _compile_parts(node, expr):
    def reject(what):
        return ScaleExpressionError(
            expr,
            f"{what} is not allowed; use numbers, x, "
            f"+ - * / **, the constants {', '.join(sorted(_ALLOWED_CONSTANTS))} "
            f"and the functions {', '.join(sorted(_ALLOWED_FUNCTIONS))}",
        )

    if isinstance(node, ast.Expression):
        return _compile_node(node.body, expr)
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True/False are not numbers here.
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if not abs(node.value) <= MAX_LITERAL:  # also inf (1e999) and an int past float's range
                written = ast.get_source_segment(expr.strip(), node) or ast.unparse(node)
                raise ScaleExpressionError(expr, f"the number {_quoted(written, 30)} is larger than {_g(MAX_LITERAL)}")
            value = float(node.value)
            return lambda x: value
        raise reject(f"the constant {_quoted(node.value, 30)}")
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
        if isinstance(node.op, ast.Pow) and not _uses_x(node.right):
            exponent = right(np.float64(1.0))
            if not abs(exponent) <= MAX_EXPONENT:
                raise ScaleExpressionError(expr, f"the exponent {_quoted(ast.unparse(node.right), 30)} is beyond +-{MAX_EXPONENT}")
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.UnaryOp):
        op = _UNARY_OPS.get(type(node.op))
        if op is None:
            raise reject(f"the operator {type(node.op).__name__}")
        operand = _compile_node(node.operand, expr)
        return lambda x: op(operand(x))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise reject(f"calling {_quoted(ast.unparse(node.func), 30)}")
        name = node.func.id
        if name not in _ALLOWED_FUNCTIONS:
            raise reject(f"the function {name!r}")
        if node.keywords:
            raise reject(f"keyword arguments in {name}()")
        fewest, most = _ARITY[name]
        if not fewest <= len(node.args) <= most:
            wanted = f"{fewest}" if fewest == most else f"{fewest} to {most}"
            raise ScaleExpressionError(expr, f"{name}() takes {wanted} argument{'s' if most > 1 else ''}, got {len(node.args)}")
        fn = _ALLOWED_FUNCTIONS[name]
        args = [_compile_node(a, expr) for a in node.args]
        return lambda x: fn(*(a(x) for a in args))
    if isinstance(node, ast.Attribute):
        raise reject(f"attribute access {_quoted(ast.unparse(node), 30)}")
    try:
        token = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every parsed node
        token = type(node).__name__
    raise reject(f"{type(node).__name__} {_quoted(token, 30)}")


def scale_fn_from_expression(expr: str) -> Callable:
    """Compile a formula in ``x`` into a scale function, without ``eval``.

    Meant for ``Cyclic(scale_fn=...)`` given on the command line.  The string
    is parsed with :mod:`ast` and only a whitelist is accepted: numbers, the
    name ``x``, ``+ - * / **``, unary ``-``/``+``, the constants ``pi`` and
    ``e`` and calls to ``sin cos tan exp log sqrt abs`` (one argument) and
    ``floor ceil`` (one) and ``min max`` (2 to 16, elementwise).  Anything
    else (attribute access, other names, subscripts, lambdas, ...) raises
    ``ScaleExpressionError`` (a ``ValueError``, one line) naming the offending
    token; so do a formula longer than ``MAX_LENGTH`` characters or deeper
    than ``MAX_DEPTH`` levels, a number beyond ``MAX_LITERAL``, a constant
    exponent beyond ``MAX_EXPONENT`` and a part without ``x`` that is not a
    finite number (``log(0)``, ``exp(1000)``).  The returned function works on
    Python scalars and NumPy arrays (elementwise); what it gives at the ``x``
    of a run is checked by :func:`checked_scale_fn`.

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
    davidnet.schedules.expressions.ScaleExpressionError: scale expression "__import__('os')": the function '__import__' is not allowed; ...
    """
    if not isinstance(expr, str):
        raise ScaleExpressionError(expr, f"expected a string expression, got {type(expr).__name__}")
    if len(expr) > MAX_LENGTH:
        raise ScaleExpressionError(expr, f"{len(expr)} characters, more than the {MAX_LENGTH} a formula may have")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise ScaleExpressionError(expr, f"not a valid formula: {err.msg}") from None
    except (ValueError, MemoryError, RecursionError) as err:  # e.g. a NUL character
        raise ScaleExpressionError(expr, f"not a valid formula: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if _depth(tree) > MAX_DEPTH:
        raise ScaleExpressionError(expr, f"nested more than {MAX_DEPTH} levels deep")
    body = _compile_node(tree, expr)

    def scale_fn(x):
        is_array = isinstance(x, np.ndarray) and x.ndim > 0
        with np.errstate(all="ignore"):  # a non-finite value is refused by checked_scale_fn, not warned about
            result = body(np.asarray(x, dtype=np.float64))
        if is_array:
            return np.broadcast_to(np.asarray(result, dtype=np.float64), np.shape(x)).copy()
        return float(result)

    scale_fn.expression = expr
    scale_fn.__name__ = "scale_fn"
    scale_fn.__doc__ = f"Scale function f(x) = {expr}"
    return scale_fn


def scale_problem(values, xs):
    """The first bad value of a scale function: ``(x, value)`` where a value of
    ``values`` (the function at ``xs``) is not a finite number in
    ``[0, MAX_SCALE]``, or None if all are."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= MAX_SCALE))
    if not bad.any():
        return None
    first = int(np.flatnonzero(bad.ravel())[0])
    return float(np.asarray(xs, dtype=np.float64).ravel()[first]), float(values.ravel()[first])


def describe_scale_problem(x, value, last=None):
    """One line: what a scale function gives at `x`, against what it must give."""
    got = _g(value) if math.isfinite(value) else str(value)
    run = "" if last is None else f" (x: the cycle, 1 to {last} in this run)" if last > 1 else " (x: the cycle, from 1)"
    return f"it is {got} at x = {_g(x)}{run}; a scale must be a finite number from 0 to {_g(MAX_SCALE)}"


def checked_scale_fn(expr, last_cycle):
    """Compiles `expr` (:func:`scale_fn_from_expression`) and evaluates it at
    every cycle x = 1 .. `last_cycle` of a run (above ``CHECKED_CYCLES`` cycles,
    at a geometric sample of them up to the last): a ``ScaleExpressionError``
    (one line, naming the formula and the first x where it fails) unless every
    value is a finite number in ``[0, MAX_SCALE]``. Returns the function."""
    scale_fn = scale_fn_from_expression(expr)
    last = max(1, int(last_cycle))
    xs = np.arange(1, min(last, CHECKED_CYCLES) + 1, dtype=np.float64)
    if last > CHECKED_CYCLES:
        xs = np.concatenate([xs, np.unique(np.floor(np.geomspace(CHECKED_CYCLES, last, 512))), [float(last)]])
    found = scale_problem(scale_fn(xs), xs)
    if found:
        raise ScaleExpressionError(expr, describe_scale_problem(*found, last=last))
    return scale_fn
