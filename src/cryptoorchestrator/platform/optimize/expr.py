"""Safe boolean expressions over named numbers: ``"fast < slow"``, ``"trade_count >= 10"``.

Expressions are parsed with :mod:`ast` and walked by a small interpreter that knows only
comparisons, ``and``/``or``/``not``, arithmetic (``+ - * / // % **``, unary minus), numbers,
``True``/``False`` and the names it is given.  Nothing is ever passed to ``eval``: a call, an
attribute, a subscript or an unknown name is rejected when the expression is parsed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: lambda a, b: _safe_pow(a, b),
}
_ALLOWED_TEXT = "comparisons (< <= > >= == !=), and/or/not, + - * / // % **, numbers and names"


def _safe_pow(base: Any, exp: Any) -> Any:
    # ``9 ** 9 ** 9`` would hang the driver; no sane constraint needs a large exponent.
    if abs(exp) > 64:
        raise ArithmeticError(f"exponent {exp!r} too large")
    return base**exp


class Expression:
    """A parsed, validated expression; call :meth:`evaluate` with a mapping of names to numbers.

    Parameters
    ----------
    text
        The expression, e.g. ``"fast < slow"`` or ``"slow >= 2 * fast and fast > 3"``.
    names
        The names it may use (parameter names, or metric names).
    field
        Field named in error messages (``"constraint"``, ``"result_constraint"``).
    """

    def __init__(self, text: str, names: Collection[str], *, field: str = "constraint") -> None:
        self.text = text.strip()
        self.field = field
        if not self.text:
            raise InvalidInputError(field, "empty expression", allowed=_ALLOWED_TEXT)
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise InvalidInputError(
                field, f"cannot parse {text!r}: {exc.msg}", allowed=_ALLOWED_TEXT
            ) from exc
        self.names: frozenset[str] = frozenset()
        used: set[str] = set()
        self._check(tree.body, frozenset(names), used)
        self.names = frozenset(used)
        self._body = tree.body

    def _check(self, node: ast.AST, names: frozenset[str], used: set[str]) -> None:
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE:
                    raise InvalidInputError(
                        self.field,
                        f"operator {type(op).__name__} is not allowed in {self.text!r}",
                        allowed=_ALLOWED_TEXT,
                    )
            for child in (node.left, *node.comparators):
                self._check(child, names, used)
        elif isinstance(node, ast.BoolOp):
            for child in node.values:
                self._check(child, names, used)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            self._check(node.operand, names, used)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left, names, used)
            self._check(node.right, names, used)
        elif isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return
            if node.id not in names:
                raise InvalidInputError(
                    self.field, f"unknown name {node.id!r} in {self.text!r}", allowed=sorted(names)
                )
            used.add(node.id)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                if not isinstance(node.value, bool):
                    raise InvalidInputError(
                        self.field,
                        f"constant {node.value!r} is not a number in {self.text!r}",
                        allowed=_ALLOWED_TEXT,
                    )
        else:
            raise InvalidInputError(
                self.field,
                f"{type(node).__name__} is not allowed in {self.text!r}",
                allowed=_ALLOWED_TEXT,
            )

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Return the value of the expression for ``values`` (missing names raise ``KeyError``)."""
        return self._eval(self._body, values)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Return whether the expression is true (NaN comparisons, arithmetic errors: false)."""
        try:
            result = self._eval(self._body, values)
        except (ArithmeticError, TypeError):
            return False
        if isinstance(result, float) and math.isnan(result):
            return False
        return bool(result)

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, values)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self._eval(v, values) for v in node.values)
            return any(self._eval(v, values) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, values)
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](
                self._eval(node.left, values), self._eval(node.right, values)
            )
        if isinstance(node, ast.Name):
            if node.id == "True":
                return True
            if node.id == "False":
                return False
            return values[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        raise AssertionError(f"unchecked node {type(node).__name__}")  # parse rejected it

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles constraints into tasks: rebuild from the text rather than pickling ast.
        return (_rebuild, (self.text, tuple(sorted(self.names)), self.field))


def _rebuild(text: str, names: tuple[str, ...], field: str) -> Expression:
    return Expression(text, names, field=field)
