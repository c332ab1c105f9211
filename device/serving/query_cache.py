"""A bounded LRU of query embeddings, so a search by a returned query id skips upload,
decoding and the model (the contracts' CBIR id / path / input_id reuse)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class QueryCache(Generic[T]):
    """Thread-safe LRU keyed by (instance, query id); ``capacity`` 0 disables it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, instance: str, query_id: str) -> T | None:
        with self._lock:
            entry = self._items.get((instance, query_id))
            if entry is not None:
                self._items.move_to_end((instance, query_id))
            return entry

    def put(self, instance: str, query_id: str, entry: T) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[(instance, query_id)] = entry
            self._items.move_to_end((instance, query_id))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
