"""Catalog changes from the API: add or replace an item, change its fields, delete it.

Every contract's write endpoint comes here (native ``PUT / PATCH / DELETE /v1/items/<id>``,
Alibaba ``AddImage`` / ``DeleteImage``, Huawei image add / modify / delete). The contract
parses its own request and renders its own answer; this module

* refuses early, before any photo is decoded, on an instance that takes no changes
  (``read_only``: ``state.read_only`` or no ``[state]``, a failed journal) and on fields an
  API client may not set;
* checks each photo against the contract's image limits from its header, then lets
  :meth:`LiveCatalog.put` decode and embed it on an interpreter leased from the daemon's
  pool (the same slots searches lease, so no interpreter ever runs in two threads);
* runs the change through the registry's ``write`` (the bundle manager retries it on the
  new catalog when a hot swap closed the old one mid-request).

A change is acknowledged only when LiveCatalog returns, i.e. once its journal record is
fsync'd; a refused change (bad photo, bad fields, read-only) has written nothing, so
nothing already stored can be lost by it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import pic_name
from lensbox.device.imaging.decode import ImageError
from lensbox.device.live.catalog import CatalogClosed, CatalogReadOnly, Change
from lensbox.device.serving.instances import Instance
from lensbox.device.serving.interpreters import PooledEmbedder
from lensbox.device.serving.metrics import Metrics
from lensbox.device.serving.query import ImageLimits

# Item fields an API client may set; the rest (size, format, concepts, hash) are measured
# from the photo itself.
EDITABLE = (
    "source",
    "title",
    "page_url",
    "host",
    "category_id",
    "tags",
    "product_id",
    "custom_content",
    "int_attrs",
    "str_attrs",
    "adult",
)

ItemId = Union[str, Callable[[Any], str]]


@dataclass(frozen=True)
class WriteResult:
    """An acknowledged change (``change`` None: a delete that found nothing to delete)."""

    instance: str
    change: Change | None
    ids: tuple[str, ...]
    item: dict | None = None  # the item as stored now (put / update)
    replaced: bool = False  # put: an item with that id existed before


def check_fields(fields: Any, where: str = "fields") -> dict[str, Any]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise ApiError("bad_param", f"{where} must be an object", where)
    unknown = sorted(set(fields) - set(EDITABLE))
    if unknown:
        raise ApiError(
            "bad_param",
            f"{where}: {', '.join(unknown)} cannot be set; settable: {', '.join(EDITABLE)}",
            where,
        )
    return dict(fields)


def pic_matches(item: Mapping[str, Any], name: str) -> bool:
    """Alibaba's PicName of an item: the photo's file name (``source``), else its id."""
    return item.get("source") == name or pic_name(dict(item)) == name


def product_items(catalog: Any, product_id: str, name: str | None = None) -> list[dict]:
    """Live items of an Alibaba product: ``product_id`` matches (an item without one is
    its own product, named by its id), optionally only the photo named ``name``."""
    ids = list(catalog.find_ids(product_id))
    own = catalog.get(product_id)
    if own is not None and not own.get("product_id"):
        ids.append(product_id)
    items = [catalog.get(i) for i in dict.fromkeys(ids)]
    return [it for it in items if it is not None and (name is None or pic_matches(it, name))]


def _slot_embedder(catalog: Any, slot: int, inst: Instance) -> Any:
    """The embedder of ``slot`` for this catalog (its bundle's pooling)."""
    emb = getattr(catalog, "embedder", None)
    return emb.at(slot) if isinstance(emb, PooledEmbedder) else inst.embedder_at(slot)


class CatalogWriter:
    def __init__(self, service: Any, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics

    # -- the changes ----------------------------------------------------------------------
    def put(
        self,
        instance: str | None,
        item_id: ItemId,
        images: Sequence[bytes],
        fields: Mapping[str, Any] | None,
        limits: ImageLimits,
    ) -> WriteResult:
        """Add an item, or replace the one with that id (photos and fields).

        ``item_id`` may be a function of the catalog (Alibaba: the id of the photo that
        ProductId + PicName already names, or a new one), evaluated on the catalog the
        change is written to.
        """
        inst = self.writable(instance)
        clean = check_fields(fields)
        if not images:
            raise ApiError("missing_image", "at least one photo is needed")
        for data in images:
            self.service.check_image(data, limits)
        decode = limits.decode_limits(self.service.max_pixels)
        state: dict[str, Any] = {}

        def change(catalog: Any) -> Change:
            wanted = item_id(catalog) if callable(item_id) else item_id
            state["id"], state["replaced"] = wanted, wanted in catalog
            with self.service.slots.lease() as (slot, _waited):
                return catalog.put(
                    wanted,
                    list(images),
                    clean,
                    limits=decode,
                    embedder=_slot_embedder(catalog, slot, inst),
                )

        done = self._run(inst, change)
        self.metrics.changed(inst.name, "put")
        return WriteResult(
            inst.name, done, (state["id"],), self._current(inst, state["id"]), state["replaced"]
        )

    def update(
        self, instance: str | None, item_id: str, fields: Mapping[str, Any] | None
    ) -> WriteResult:
        """Change some fields of an item, keeping its photos (``not_found`` if absent)."""
        inst = self.writable(instance)
        clean = check_fields(fields)
        if not clean:
            raise ApiError("bad_param", "no field to change", "fields")
        done = self._run(inst, lambda catalog: catalog.update(item_id, clean))
        self.metrics.changed(inst.name, "update")
        return WriteResult(inst.name, done, (item_id,), self._current(inst, item_id), True)

    def delete(
        self, instance: str | None, ids: Sequence[str] | Callable[[Any], Sequence[str]]
    ) -> WriteResult:
        """Delete items; ``ids`` may be a function of the catalog. Ids that do not exist
        are ignored (``change`` None when none did)."""
        inst = self.writable(instance)
        found: list[str] = []

        def change(catalog: Any) -> Change | None:
            wanted = list(ids(catalog) if callable(ids) else ids)
            found[:] = [i for i in dict.fromkeys(wanted) if i in catalog]
            return catalog.delete(found) if found else None

        done = self._run(inst, change)
        if done is not None:
            self.metrics.changed(inst.name, "delete")
        return WriteResult(inst.name, done, tuple(done.ids) if done else ())

    # -- helpers --------------------------------------------------------------------------
    def writable(self, name: str | None) -> Instance:
        """The instance, if it takes changes now; ``read_only`` (503) otherwise."""
        inst = self.service.instance(name)
        reason = inst.catalog.writable_reason()
        if reason is not None and reason != "closed":  # closed: a swap; the retry handles it
            raise ApiError(
                "read_only", f"instance {inst.name!r} takes no catalog changes: {reason}"
            )
        return inst

    def _run(self, inst: Instance, change: Callable[[Any], Any]) -> Any:
        try:
            return self.service.instances.write(inst.name, change)
        except ImageError as exc:  # before ValueError: it is one
            raise ApiError.from_image_error(exc) from exc
        except CatalogReadOnly as exc:
            raise ApiError(
                "read_only", f"instance {inst.name!r} takes no catalog changes: {exc}"
            ) from exc
        except CatalogClosed as exc:
            raise ApiError("not_ready", "the catalog is being swapped; try again") from exc
        except KeyError as exc:
            raise ApiError("not_found", f"no catalog item with id {exc.args[0]!r}") from exc
        except ValueError as exc:
            raise ApiError("bad_param", str(exc)) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                # Nothing was acknowledged (the journal cut the failed append back);
                # searches go on, and writes work again once space is freed.
                raise ApiError(
                    "read_only",
                    f"instance {inst.name!r}: storage full ({exc.strerror}); the change was "
                    "not stored, searches still work, retry once space is freed",
                ) from exc
            raise

    def _current(self, inst: Instance, item_id: str) -> dict | None:
        """The item as the instance's *current* catalog has it (after the change)."""
        now = self.service.instances.get(inst.name)
        return None if now is None else now.catalog.get(item_id)
