"""The Alibaba Filter language: parsed by a tokenizer + parser, never evaluated as code."""

from __future__ import annotations

import pytest

from lensbox.device.search.expression import MAX_DEPTH, FilterError, parse_filter, tokenize

ITEMS = [
    {
        "id": "a",
        "int_attrs": {"int_attr": 1000, "int_attr2": 3},
        "str_attrs": {"str_attr": "value1"},
    },
    {
        "id": "b",
        "int_attrs": {"int_attr": 50},
        "str_attrs": {"str_attr": "value2", "str_attr4": "x"},
    },
    {"id": "c", "int_attrs": {"int_attr": 150, "int_attr4": -7}, "str_attrs": {}},
    {"id": "d", "int_attrs": {}, "str_attrs": {"str_attr": 'say "hi"'}},
]


def matching(expr: str) -> list[str]:
    predicate = parse_filter(expr)
    return [it["id"] for it in ITEMS if predicate(it)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("int_attr >= 100", ["a", "c"]),
        ("int_attr>100", ["a", "c"]),
        ("int_attr < 100", ["b"]),
        ("int_attr <= 150", ["b", "c"]),
        ("int_attr = 1000", ["a"]),
        ("int_attr != 1000", ["b", "c", "d"]),  # d has no int_attr: only != holds
        ('str_attr != "value1"', ["b", "c", "d"]),
        ('str_attr = "value1"', ["a"]),
        ("str_attr = 'value2'", ["b"]),
        ('int_attr = 1000 AND str_attr = "value1"', ["a"]),
        ('int_attr = 1000 and str_attr = "value2"', []),
        ('int_attr = 50 OR str_attr = "value1"', ["a", "b"]),
        ('int_attr >= 100 AND (str_attr = "value1" OR int_attr4 < 0)', ["a", "c"]),
        ('(int_attr >= 100 AND str_attr = "value1") OR int_attr4 < 0', ["a", "c"]),
        ("int_attr2 = 3 OR int_attr4 = -7", ["a", "c"]),
        ('str_attr4 = "x"', ["b"]),
        ('str_attr = "say \\"hi\\""', ["d"]),
        # AND binds tighter than OR
        ('str_attr = "value2" OR int_attr = 1000 AND int_attr2 = 4', ["b"]),
    ],
)
def test_valid_filters_select_the_right_items(expr: str, expected: list[str]) -> None:
    assert matching(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "   ",
        "int_attr",
        "int_attr >=",
        "int_attr >>= 3",
        "int_attr = 1.5",
        'int_attr = "100"',
        "str_attr = value1",
        'str_attr > "a"',
        'str_attr >= "a"',
        "price = 3",
        "int_attr5 = 1",
        "int_attr = 1 AND",
        "int_attr = 1 OR OR int_attr = 2",
        "(int_attr = 1",
        "int_attr = 1)",
        "int_attr = 1 int_attr = 2",
        "__import__('os').system('true')",
        "int_attr = 1; int_attr = 2",
        'str_attr = "unterminated',
    ],
)
def test_invalid_filters_are_refused(expr: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(expr)


def test_depth_and_length_are_bounded() -> None:
    deep = "(" * (MAX_DEPTH + 1) + "int_attr = 1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(FilterError, match="nested"):
        parse_filter(deep)
    ok = "(" * MAX_DEPTH + "int_attr = 1000" + ")" * MAX_DEPTH
    assert [it["id"] for it in ITEMS if parse_filter(ok)(it)] == ["a"]
    with pytest.raises(FilterError, match="4096"):
        parse_filter("int_attr = 1 OR " * 300 + "int_attr = 2")


def test_tokenizer_reports_positions() -> None:
    tokens = tokenize('int_attr >= 10 AND str_attr = "a b"')
    assert [t.kind for t in tokens] == ["word", "op", "int", "word", "word", "op", "str", "end"]
    assert tokens[6].text == '"a b"'
    with pytest.raises(FilterError, match="at 9"):
        tokenize("int_attr @ 3")
