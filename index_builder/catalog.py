"""Read a catalog: a folder of photos, or a CSV / JSONL manifest with metadata.

A folder gives one item per photo (id = file name without extension). A manifest may list
several photos under one id: they become several vectors of one item, which is how a
catalog adds reference shots from other angles.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)
# Photo formats people have in their folders that lensbox cannot decode: they are listed as
# skipped (with what to do) instead of being silently left out.
UNSUPPORTED_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl"})
PATH_KEYS = ("path", "image", "file", "source")
TEXT_FIELDS = ("title", "page_url", "host", "product_id", "custom_content")
# Columns with a meaning of their own; any other column is kept as a string attribute.
KNOWN_COLUMNS = frozenset(
    {"id", "category_id", "category", "tags", "adult", *PATH_KEYS, *TEXT_FIELDS}
)


class CatalogError(ValueError):
    """The catalog as a whole cannot be read; the message names the file and the fix."""


@dataclass
class CatalogItem:
    """One item and its photos, with the metadata the contracts can filter and return."""

    id: str
    paths: list[Path]
    title: str | None = None
    page_url: str | None = None
    host: str | None = None
    category_id: int | None = None
    category: str | None = None  # the name, when the catalog named the category
    tags: dict[str, str] = field(default_factory=dict)
    int_attrs: dict[str, int] = field(default_factory=dict)
    str_attrs: dict[str, str] = field(default_factory=dict)
    product_id: str | None = None
    custom_content: str | None = None
    adult: bool = False


def read_catalog(source: str | Path) -> list[CatalogItem]:
    """Folder, ``.csv`` or ``.jsonl``/``.json`` manifest -> items, in a stable order."""
    source = Path(source)
    if not source.exists():
        raise CatalogError(
            f"{source}: no such file or folder; give a folder of photos or a manifest"
        )
    if source.is_dir():
        items = _read_folder(source)
    elif source.suffix.lower() == ".csv":
        items = _merge(
            _parse_record(rec, source.parent, f"{source}:{n + 2}")
            for n, rec in enumerate(_csv_records(source))
        )
    elif source.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        items = _merge(
            _parse_record(rec, source.parent, f"{source}:{n}") for n, rec in _jsonl_records(source)
        )
    else:
        raise CatalogError(f"{source}: expected a folder, a .csv or a .jsonl manifest")
    if not items:
        raise CatalogError(
            f"{source}: the catalog is empty; add photos ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return items


def assign_categories(
    items: list[CatalogItem], previous: dict[str, int] | None = None
) -> dict[str, int]:
    """Give every category *name* an integer id (Alibaba's ``CategoryId`` is an integer);
    returns the name -> id table the bundle keeps.

    A name the previous bundle already numbered keeps its number, so a rebuild does not
    move clients' ``CategoryId``s; new names get the next free numbers in name order, never
    one a row uses as a plain integer.
    """
    names = sorted({it.category for it in items if it.category is not None})
    taken = {it.category_id for it in items if it.category is None and it.category_id is not None}
    table: dict[str, int] = {}
    for name, num in (previous or {}).items():
        if name in names and isinstance(num, int) and num not in taken:
            table[name] = num
            taken.add(num)
    next_id = max(taken, default=0) + 1
    for name in names:
        if name not in table:
            table[name] = next_id
            taken.add(next_id)
            next_id += 1
    for it in items:
        if it.category is not None:
            it.category_id = table[it.category]
    return dict(sorted(table.items(), key=lambda kv: kv[1]))


def extra_columns(items: list[CatalogItem]) -> list[str]:
    """Manifest columns lensbox has no field for, kept as string attributes."""
    return sorted({k for it in items for k in it.str_attrs if not k.startswith("str_attr")})


def _read_folder(root: Path) -> list[CatalogItem]:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES | UNSUPPORTED_SUFFIXES
        and not p.name.startswith(".")
    )
    stems: dict[str, int] = {}
    for p in files:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    items = []
    for p in files:
        # Two photos named alike in different sub-folders keep their relative path as id.
        item_id = p.stem if stems[p.stem] == 1 else p.relative_to(root).with_suffix("").as_posix()
        items.append(CatalogItem(id=item_id, paths=[p], title=p.stem))
    return items


def _csv_records(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _jsonl_records(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise CatalogError(f"{path}:{n}: not valid JSON ({exc})") from exc
        if not isinstance(rec, dict):
            raise CatalogError(f"{path}:{n}: each line must be a JSON object")
        yield n, rec


def _parse_tags(value: Any, where: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    text = str(value).strip()
    if text.startswith("{"):
        return _parse_tags(json.loads(text), where)
    tags = {}
    for part in text.split(";"):
        if part.strip():
            key, sep, val = part.partition("=")
            if not sep:
                raise CatalogError(f"{where}: tags must look like 'key=value;key2=value2'")
            tags[key.strip()] = val.strip()
    return tags


def _parse_record(rec: dict[str, Any], base: Path, where: str) -> CatalogItem:
    path_value = next((rec[k] for k in PATH_KEYS if rec.get(k)), None)
    if not path_value:
        raise CatalogError(
            f"{where}: no image path (give one of the columns {', '.join(PATH_KEYS)})"
        )
    path = Path(str(path_value))
    path = path if path.is_absolute() else base / path
    item_id = str(rec.get("id") or path.stem)
    item = CatalogItem(id=item_id, paths=[path])
    for key in TEXT_FIELDS:
        if rec.get(key) not in (None, ""):
            setattr(item, key, str(rec[key]))
    category = next(
        (rec[k] for k in ("category_id", "category") if rec.get(k) not in (None, "")), None
    )
    if category is not None:
        item.category_id, item.category = _category(category, where)
    for key, val in rec.items():
        if key is None or val in (None, ""):
            continue  # csv: cells beyond the header come back under the key None
        key = str(key).strip()
        if key.startswith("int_attr"):
            try:
                item.int_attrs[key] = int(val)
            except (TypeError, ValueError) as exc:
                raise CatalogError(f"{where}: {key} must be an integer, got {val!r}") from exc
        elif key.startswith("str_attr") or (key and key not in KNOWN_COLUMNS):
            # JSON manifests: true/false and nested values keep their JSON spelling
            item.str_attrs[key] = (
                json.dumps(val, sort_keys=True) if isinstance(val, (dict, list, bool)) else str(val)
            )
    item.tags = _parse_tags(rec.get("tags"), where)
    item.adult = str(rec.get("adult", "")).strip().lower() in ("1", "true", "yes")
    return item


def _category(value: Any, where: str) -> tuple[int | None, str | None]:
    """``3`` -> (3, None); ``toys`` -> (None, "toys"): the build numbers the names."""
    if isinstance(value, (bool, dict, list)):
        raise CatalogError(f"{where}: category_id must be an integer or a name, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    try:
        return int(text), None
    except ValueError:
        return None, text


def _merge(records) -> list[CatalogItem]:
    """Rows that share an id become one item with several photos (first row's metadata)."""
    by_id: dict[str, CatalogItem] = {}
    for item in records:
        if item.id in by_id:
            by_id[item.id].paths.extend(item.paths)
        else:
            by_id[item.id] = item
    return list(by_id.values())
