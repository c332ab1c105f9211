"""Alibaba Image Search ``Filter`` expressions, parsed safely (a tokenizer and a small
recursive-descent parser; nothing is ever evaluated as Python).

Grammar (keywords case-insensitive)::

    expr       := and_expr ("OR" and_expr)*
    and_expr   := factor ("AND" factor)*
    factor     := "(" expr ")" | comparison
    comparison := FIELD OP VALUE
    FIELD      := int_attr | int_attr2 | int_attr3 | int_attr4
                | str_attr | str_attr2 | str_attr3 | str_attr4
    OP         := = | != | > | >= | < | <=      (str_attr: = and != only)
    VALUE      := integer (int_attr*) | "quoted" or 'quoted' string (str_attr*)

An item without the attribute fails every comparison except ``!=``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 4096  # the documented limit
MAX_DEPTH = 32  # nesting of parentheses; deeper is refused rather than recursed into

INT_FIELDS = frozenset({"int_attr", "int_attr2", "int_attr3", "int_attr4"})
STR_FIELDS = frozenset({"str_attr", "str_attr2", "str_attr3", "str_attr4"})
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
STR_OPERATORS = frozenset({"=", "!="})

Predicate = Callable[[Mapping[str, Any]], bool]  # over an item (Item, or any mapping of its fields)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>!=|>=|<=|=|>|<) |
        (?P<int>[+-]?\d+)(?![\w.]) |
        (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*') |
        (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """The filter is not valid; the message says where (Alibaba: InvalidFilterClause)."""


@dataclass(frozen=True)
class Token:
    kind: str  # lparen, rparen, op, int, str, word, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FilterError(f"the filter is {len(text)} characters, over the limit of {MAX_LENGTH}")
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise FilterError(f"unexpected character {text[at]!r} at {at}")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, tokens: list[Token], named_str_attrs: bool = False) -> None:
        self.tokens = tokens
        self.i = 0
        self.named_str_attrs = named_str_attrs

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "word" and tok.text.upper() == word:
            self.i += 1
            return True
        return False

    def expr(self, depth: int) -> Predicate:
        parts = [self.and_expr(depth)]
        while self.keyword("OR"):
            parts.append(self.and_expr(depth))
        if len(parts) == 1:
            return parts[0]
        alternatives = tuple(parts)
        return lambda item: any(p(item) for p in alternatives)

    def and_expr(self, depth: int) -> Predicate:
        parts = [self.factor(depth)]
        while self.keyword("AND"):
            parts.append(self.factor(depth))
        if len(parts) == 1:
            return parts[0]
        conditions = tuple(parts)
        return lambda item: all(p(item) for p in conditions)

    def factor(self, depth: int) -> Predicate:
        tok = self.peek()
        if tok.kind == "lparen":
            if depth >= MAX_DEPTH:
                raise FilterError(f"parentheses nested deeper than {MAX_DEPTH}")
            self.take()
            inner = self.expr(depth + 1)
            if self.take().kind != "rparen":
                raise FilterError(f"missing ')' for the '(' at {tok.pos}")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field_tok = self.take()
        name = field_tok.text.lower()
        if (
            self.named_str_attrs
            and field_tok.kind == "word"
            and name not in INT_FIELDS | STR_FIELDS
            and name not in ("and", "or")
        ):
            name = field_tok.text  # a catalog's own column (e.g. price), kept as a string
        elif field_tok.kind != "word" or name not in INT_FIELDS | STR_FIELDS:
            where = (
                "the end" if field_tok.kind == "end" else f"{field_tok.text!r} at {field_tok.pos}"
            )
            raise FilterError(f"expected int_attr..int_attr4 or str_attr..str_attr4, found {where}")
        op_tok = self.take()
        if op_tok.kind != "op":
            raise FilterError(f"expected an operator after {field_tok.text} at {op_tok.pos}")
        value_tok = self.take()
        if name in INT_FIELDS:
            if value_tok.kind != "int":
                raise FilterError(f"{name} needs an integer value (at {value_tok.pos})")
            return _compare("int_attrs", name, OPERATORS[op_tok.text], int(value_tok.text))
        if op_tok.text not in STR_OPERATORS:
            raise FilterError(f"{name} supports only = and != (found {op_tok.text})")
        if value_tok.kind != "str":
            raise FilterError(f"{name} needs a quoted string value (at {value_tok.pos})")
        return _compare("str_attrs", name, OPERATORS[op_tok.text], _unquote(value_tok.text))


def _compare(group: str, name: str, op: Callable[[Any, Any], bool], value: Any) -> Predicate:
    negated = op is operator.ne

    def predicate(item: Mapping[str, Any]) -> bool:
        actual = (item.get(group) or {}).get(name)
        if actual is None:
            return negated
        return bool(op(actual, value))

    return predicate


def parse_filter(text: str, named_str_attrs: bool = False) -> Predicate:
    """``'int_attr >= 100 AND str_attr != "x"'`` -> a predicate over item dicts.

    ``named_str_attrs`` (lensbox's own API): any other field name is a string attribute
    too, i.e. an extra manifest column such as ``price = "9.99"``.
    """
    if not text or not text.strip():
        raise FilterError("the filter is empty")
    parser = _Parser(tokenize(text), named_str_attrs)
    predicate = parser.expr(0)
    tail = parser.peek()
    if tail.kind != "end":
        raise FilterError(f"unexpected {tail.text!r} at {tail.pos}")
    return predicate
