"""sd_notify(3) in plain Python: tell systemd we are ready, alive, reloading or stopping.

With ``Type=notify`` systemd waits for ``READY=1`` before it considers the daemon started
(so units ordered after it start only once the HTTP port answers), and with ``WatchdogSec``
it restarts the daemon when ``WATCHDOG=1`` stops arriving. The :class:`Heartbeat` pets the
watchdog only while a health check passes, so a wedged process (a failed journal, a dead
worker thread) gets restarted instead of silently serving stale answers.

Outside systemd ($NOTIFY_SOCKET unset) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("lensbox.sdnotify")


def _address(path: str) -> str | bytes:
    """'@name' is a Linux abstract socket: a leading NUL byte instead of the '@'."""
    return b"\0" + path[1:].encode() if path.startswith("@") else path


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET. Thread-safe; one socket per notifier."""

    def __init__(
        self, socket_path: str | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET")
        self._environ = env
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    def send(self, message: str) -> bool:
        """Send ``KEY=value`` lines; False (never an exception) if systemd is not there."""
        if not self.socket_path:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(message.encode("utf-8"), _address(self.socket_path))
                return True
            except OSError as exc:
                log.debug("sd_notify to %s failed: %s", self.socket_path, exc)
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self, status: str = "reloading configuration") -> bool:
        return self.send(f"RELOADING=1\nSTATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(f"STOPPING=1\nSTATUS={status}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """$WATCHDOG_USEC in seconds, if the watchdog is on and meant for this process."""
        usec = self._environ.get("WATCHDOG_USEC")
        pid = self._environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1e6 if value > 0 else None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Heartbeat:
    """Pets the watchdog every ``interval`` seconds (WatchdogSec/2) while ``healthy()``.

    When the check fails (or raises) the pet is skipped and STATUS says why; systemd then
    restarts the service after WatchdogSec. A transient failure that recovers before then
    costs nothing.
    """

    def __init__(
        self, notifier: Notifier, interval: float, healthy: Callable[[], bool] | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.notifier = notifier
        self.interval = interval
        self.healthy = healthy or (lambda: True)
        self.beats = 0
        self.missed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(
        cls, notifier: Notifier, healthy: Callable[[], bool] | None = None
    ) -> Heartbeat | None:
        """A heartbeat at half of $WATCHDOG_USEC, or None when there is no watchdog."""
        period = notifier.watchdog_interval()
        return cls(notifier, period / 2, healthy) if period else None

    def beat(self) -> bool:
        try:
            ok = bool(self.healthy())
            reason = "health check failed"
        except Exception as exc:
            ok, reason = False, f"health check raised {type(exc).__name__}: {exc}"
        if ok:
            self.notifier.watchdog()
            self.beats += 1
        else:
            self.missed += 1
            self.notifier.status(f"unhealthy: {reason}; not petting the watchdog")
            log.warning("watchdog not petted: %s", reason)
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="lensbox-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
