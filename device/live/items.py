"""Item metadata for live changes: the same fields and shapes a built bundle stores.

An AddImage / Huawei add arrives with whatever fields its contract has; the API layer maps
them onto these (``product_id``, ``custom_content``, ``int_attrs`` ...). Unknown fields and
wrong types are refused here, before anything is journaled, so replay can never fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from lensbox.device.bundle.format import ITEM_COLUMNS, Item

TEXT_FIELDS = (
    "source",
    "title",
    "page_url",
    "host",
    "product_id",
    "custom_content",
    "format",
    "content_sha256",
)
INT_FIELDS = ("category_id", "width", "height")
FIELDS = tuple(c for c in ITEM_COLUMNS if c != "id")
MAX_ID_LENGTH = 512
# SQLite's INTEGER (a compaction writes every field into items.sqlite).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _text_ok(value: str) -> bool:
    """Encodable as UTF-8: no lone surrogate (JSON allows ``"\\ud800"``, SQLite and every
    response encoder refuse it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(key: str, value: str) -> str:
    if not _text_ok(value):
        raise ValueError(f"{key} is not valid Unicode text (it holds a lone surrogate)")
    return value


def blank_item(item_id: str) -> dict[str, Any]:
    """Every column present, with the defaults a built bundle's row would have."""
    item: dict[str, Any] = {c: None for c in ITEM_COLUMNS}
    item.update(id=item_id, tags={}, int_attrs={}, str_attrs={}, concepts=[], adult=False)
    return item


def as_item(record: Mapping[str, Any]) -> Item:
    """A copy of a live item record as an :class:`Item`. Records start as
    :func:`blank_item` (every column) and change only by :func:`normalize_fields`' output
    or a bundle row, so they have an Item's keys and value types."""
    return cast(Item, dict(record))


def check_id(item_id: Any) -> str:
    if not isinstance(item_id, str) or not item_id.strip():
        raise ValueError("item id must be a non-empty string")
    if len(item_id) > MAX_ID_LENGTH or any(ord(c) < 32 for c in item_id):
        raise ValueError(f"item id must be at most {MAX_ID_LENGTH} printable characters")
    return _check_text("item id", item_id)


def _int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {type(value).__name__}")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{key} must be within {INT_MIN}..{INT_MAX}, got {value}")
    return value


def _str_map(key: str, value: Any, ints: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping of name -> value")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"{key} keys must be strings")
        _check_text(f"{key} key", k)
        if ints:
            if v is None:
                raise ValueError(f"{key}.{k} must be an integer")
            out[k] = _int(f"{key}.{k}", v)
        else:
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ValueError(f"{key}.{k} must be text")
            out[k] = _check_text(f"{key}.{k}", str(v))
    return out


def _concepts(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError("concepts must be a list of {id, name, value}")
    out = []
    for c in value:
        if not isinstance(c, Mapping) or not {"id", "name", "value"} <= set(c):
            raise ValueError("each concept must have id, name and value")
        out.append({"id": str(c["id"]), "name": str(c["name"]), "value": float(c["value"])})
    return out


def normalize_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a (possibly partial) field mapping; returns a JSON-safe copy."""
    out: dict[str, Any] = {}
    for key, value in (fields or {}).items():
        if key == "id":
            raise ValueError("the item id is given separately, not as a field")
        if key not in FIELDS:
            raise ValueError(f"unknown item field {key!r}; expected one of {', '.join(FIELDS)}")
        if key in TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be text, got {type(value).__name__}")
            out[key] = value if value is None else _check_text(key, value)
        elif key in INT_FIELDS:
            out[key] = _int(key, value)
        elif key in ("tags", "str_attrs"):
            out[key] = _str_map(key, value)
        elif key == "int_attrs":
            out[key] = _str_map(key, value, ints=True)
        elif key == "adult":
            if not isinstance(value, bool):
                raise ValueError("adult must be true or false")
            out[key] = value
        elif key == "concepts":
            out[key] = _concepts(value)
    return out


_SURROGATES = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value if _text_ok(value) else _SURROGATES.sub("\ufffd", value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if INT_MIN <= value <= INT_MAX else None
    if isinstance(value, Mapping):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def scrub_record(data: Mapping[str, Any]) -> dict[str, Any]:
    """A journal record's data as it can always be stored and answered: lone surrogates
    become U+FFFD and integers outside SQLite's range become null. New writes are refused
    at the door (:func:`normalize_fields`); this keeps a journal written before that rule
    from failing searches, item reads and compactions after a restart."""
    return _scrub(data)
