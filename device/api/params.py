"""Small, strict converters for request parameters (JSON values or form strings).

They raise ``ApiError("bad_param")`` naming the parameter; contracts that have their own
name for an out-of-range value check the range themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from flask import Request

from lensbox.device.api.errors import ApiError
from lensbox.device.embedding.subject import Box

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})


# Every integer a request carries must fit SQLite's INTEGER (filters and stored fields).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_int(value: Any, name: str, code: str = "bad_param") -> int:
    if isinstance(value, bool):
        raise ApiError(code, f"{name} must be an integer, not a boolean", name)
    out: int | None = None
    if isinstance(value, int):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 24:
        out = int(value.strip())
    if out is None:
        raise ApiError(code, f"{name} must be an integer, got {value!r:.40}", name)
    if not INT64_MIN <= out <= INT64_MAX:
        raise ApiError(code, f"{name} must be within {INT64_MIN}..{INT64_MAX}", name)
    return out


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise ApiError("bad_param", f"{name} must be true or false, got {value!r:.40}", name)


def as_str(value: Any, name: str, max_len: int = 1024) -> str:
    if not isinstance(value, str):
        raise ApiError("bad_param", f"{name} must be a string", name)
    if len(value) > max_len:
        raise ApiError("bad_param", f"{name} is longer than {max_len} characters", name)
    return value


def in_range(value: int, name: str, lo: int | None, hi: int | None, code="bad_param") -> int:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise ApiError(code, f"{name} must be in {span}, got {value}", name)
    return value


def as_tags(value: Any, name: str = "tags", max_tags: int = 32) -> dict[str, str]:
    """A JSON object of strings, or ``k=v;k2=v2`` text (the catalog's own syntax)."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                return as_tags(json.loads(text), name, max_tags)
            except ValueError as exc:
                raise ApiError("bad_param", f"{name} is not valid JSON", name) from exc
        pairs = [p.partition("=") for p in text.split(";") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ApiError("bad_param", f"{name} must look like key=value;key2=value2", name)
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise ApiError("bad_param", f"{name} must be an object of string values", name)
    if len(value) > max_tags:
        raise ApiError("bad_param", f"at most {max_tags} {name}", name)
    return {k: str(v) for k, v in value.items()}


def box_from_xywh(value: Any, name: str = "region") -> Box:
    """``{"x","y","width","height"}`` or ``"x,y,w,h"`` (pixels)."""
    if isinstance(value, str):
        parts = value.split(",")
        if len(parts) != 4:
            raise ApiError("bad_region", f"{name} must be x,y,width,height in pixels", name)
        x, y, w, h = (as_int(p, name, "bad_region") for p in parts)
    elif isinstance(value, dict):
        try:
            x, y, w, h = (
                as_int(value[k], f"{name}.{k}", "bad_region") for k in ("x", "y", "width", "height")
            )
        except KeyError as exc:
            raise ApiError("bad_region", f"{name} needs x, y, width and height", name) from exc
    else:
        raise ApiError("bad_region", f"{name} must be an object or x,y,width,height", name)
    if w < 2 or h < 2 or x < 0 or y < 0:
        raise ApiError("bad_region", f"{name} must have x, y >= 0 and width, height >= 2", name)
    return Box(x, y, w, h)


def load_json(request: Request) -> Any:
    """The body as JSON, or ``bad_json``. Reading the body enforces MAX_CONTENT_LENGTH."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError("bad_json", "the request body is empty; expected JSON")
    return loads_text(raw, "the request body")


_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def _valid_text(value: Any) -> bool:
    """No string in ``value`` holds a lone surrogate (which no encoder can write back)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_text(k) and _valid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_text(v) for v in value)
    return True


def loads_text(
    raw: bytes | str, what: str, code: str = "bad_json", param: str | None = None
) -> Any:
    """JSON text -> value, or ``code``: invalid JSON, too deep, or a ``\\ud800`` escape that
    decodes to a lone surrogate (valid JSON, but not text anything can store or answer)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(code, f"{what} is not valid JSON ({exc})", param) from exc
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _SURROGATE_ESCAPE.search(data) and not _valid_text(value):
        raise ApiError(code, f"{what} holds invalid Unicode (a lone surrogate escape)", param)
    return value


def json_object(request: Request) -> dict[str, Any]:
    body = load_json(request)
    if not isinstance(body, dict):
        raise ApiError("bad_json", "the request body must be a JSON object")
    return body


def item_url(item: Mapping[str, Any], host_url: str) -> str:
    """Where a client can see the item's picture: its own http(s) source, else this
    server's ``/v1/items/<id>/image`` (the thumbnail the bundle carries; the source photos
    stay on the workstation)."""
    source = str(item.get("source") or "")
    if source.startswith(("http://", "https://")):
        return source
    return f"{host_url.rstrip('/')}/v1/items/{quote(str(item['id']), safe='')}/image"


def pic_name(item: Mapping[str, Any]) -> str:
    source = str(item.get("source") or "")
    return source.replace("\\", "/").rsplit("/", 1)[-1] or str(item["id"])
