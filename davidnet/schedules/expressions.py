"""A safe parser for the formulas of custom ``Cyclic`` scale functions.

:func:`scale_fn_from_expression` turns a command-line string such as
``"0.5*(1+sin(x*pi/2.5))"`` into a scale function, without ``eval``: the
string is parsed with :mod:`ast` and only a whitelist of numbers, ``x``,
arithmetic, two constants and a few NumPy functions is accepted.
"""

from __future__ import annotations

import ast
import math
from typing import Callable

import numpy as np

__all__ = ["scale_fn_from_expression"]

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
