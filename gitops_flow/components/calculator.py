"""Safe arithmetic for the calculator tool: numbers and + - * / // % ** with parentheses, read with ``ast``, never eval.

The expression comes from a model's tool call, so it is untrusted text. It is parsed, every node is checked against a
short allowlist (no names, attributes, calls, subscripts or comprehensions can appear), and the tree is walked by hand.
Sizes are bounded so that no expression can eat the CPU or the memory: the text, the number of nodes, the operands of
``**`` and the magnitude of every intermediate integer.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096  # about 1233 decimal digits: far beyond any real calculation, far below a slow one

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class CalculationError(ValueError):
    """The expression is not plain arithmetic, is too large, or has no value (division by zero, overflow)."""


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; CalculationError saying why when there is none."""
    text = expression.strip()
    if not text:
        raise CalculationError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculationError(f"{text!r} is not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationError(f"the expression has more than {MAX_NODES} parts")
    try:
        return _value(tree.body)
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except (OverflowError, RecursionError):
        raise CalculationError("the result is too large") from None


def format_number(value: int | float) -> str:
    """``14`` for 14 and 14.0, ``0.3333333333`` for 1/3: what a person expects a calculator to show."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


def _value(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    raise CalculationError(f"only numbers, + - * / // % ** and parentheses are allowed, not {_describe(node)}")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculationError(f"exponents are at most {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise CalculationError("the result is too large")
    if base == 0 and exponent < 0:
        raise ZeroDivisionError


def _checked(value: int | float) -> int | float:
    if isinstance(value, complex):  # a negative number to a fractional power
        raise CalculationError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculationError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is too large")
    return value


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Constant):
        return f"the value {node.value!r}"
    return f"a {type(node).__name__} expression"
