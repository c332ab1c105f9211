"""POST each lookup's JSON to a URL from a background thread.

The serial answer must never wait for a slow or dead web server, so ``post`` only puts
the payload on a bounded queue; when the queue is full the oldest payload is dropped (the
newest result is the one worth delivering).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger("lensbox.capture.webhook")


class WebhookPoster:
    def __init__(self, url: str, timeout_s: float = 3.0, max_queue: int = 32) -> None:
        self.url = url
        self.timeout = timeout_s
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self.stats = {"sent": 0, "failed": 0, "dropped": 0}
        self.last_error = ""

    def start(self) -> WebhookPoster:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is None:
            return
        self._put(None)
        self._thread.join(timeout)
        self._thread = None

    def post(self, payload: dict[str, Any]) -> None:
        """Queue a payload; returns at once."""
        self._put(payload)

    def _put(self, item: dict[str, Any] | None) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.stats["dropped"] += 1
                except queue.Empty:
                    pass

    def health(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "queued": self._queue.qsize(),
            "last_error": self.last_error,
            **self.stats,
        }

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            self._send(payload)

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "lensbox-kiosk"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.stats["sent"] += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.stats["failed"] += 1
            self.last_error = str(exc)
            log.warning("webhook POST to %s failed: %s", self.url, exc)
