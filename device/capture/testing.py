"""Real stand-ins for kiosk hardware, shared by the tests and bench/bench_trigger.py.

* :func:`write_video` turns photos into an MJPG .avi that OpenCV plays back like a camera.
* :class:`MjpegServer` is an HTTP MJPEG camera (what an ESP32-CAM or many IP cameras
  serve) on loopback that can be told to stall mid-stream.
* :class:`PtyPort` is a pseudo-terminal pair standing in for a USB-serial adapter: the
  kiosk opens ``path`` (a symlink to the pty slave, like /dev/serial/by-id/...), the test
  or bench writes requests into the master side and reads the answers back. ``unplug()``
  and ``replug()`` do to the kiosk what pulling the adapter does.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

VIDEO_SIZE = (640, 480)


def letterbox(bgr: np.ndarray, size: tuple[int, int] = VIDEO_SIZE) -> np.ndarray:
    """Fit a photo into ``size`` (w, h) keeping its aspect, on a mid-gray canvas."""
    import cv2

    w, h = size
    scale = min(w / bgr.shape[1], h / bgr.shape[0])
    nw, nh = max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))
    canvas = np.full((h, w, 3), 128, np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y : y + nh, x : x + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def write_video(
    path: str | Path,
    frames: Sequence[np.ndarray],
    fps: float = 10.0,
    size: tuple[int, int] = VIDEO_SIZE,
) -> Path:
    """Write BGR frames as MJPG/.avi (readable by opencv-headless); atomic via rename so a
    grabber watching for the file never opens half of it."""
    import cv2

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    for frame in frames:
        writer.write(frame if frame.shape[1::-1] == size else letterbox(frame, size))
    writer.release()
    os.replace(tmp, path)
    return path


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (bounded, never forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class PtyPort:
    """One end of a fake serial cable. Not thread-safe; one reader at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.master = self.slave = -1
        self._buf = b""
        self.replug()

    @property
    def slave_name(self) -> str:
        return os.ttyname(self.slave)

    def replug(self) -> None:
        """A new pty appears and ``path`` points at it (what udev does for a re-plug)."""
        self.unplug()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # a USB adapter does not echo or translate newlines
        tmp = self.path.with_name(f".{self.path.name}.new")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.path)
        self._buf = b""

    def unplug(self) -> None:
        """Both pty ends close: the kiosk's next read fails as with a pulled adapter."""
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    close = unplug

    def send(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def read_line(self, timeout: float = 5.0) -> str | None:
        """The next answer line without its newline, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def ask(self, request: str, timeout: float = 5.0) -> str | None:
        self.send(request + "\n")
        return self.read_line(timeout)

    def drain(self, quiet: float = 0.1) -> list[str]:
        """Every line already sent (stops after ``quiet`` seconds of silence)."""
        lines = []
        while (line := self.read_line(quiet)) is not None:
            lines.append(line)
        return lines


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG stream at ``fps`` on 127.0.0.1; ``stall`` holds it."""

    def __init__(self, bgr: np.ndarray, fps: float = 10.0) -> None:
        import cv2

        self.jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
        self.period = 1.0 / fps
        self.stall = threading.Event()
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = (
                    (
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        % len(owner.jpeg)
                    )
                    + owner.jpeg
                    + b"\r\n"
                )
                try:
                    while not owner._stop.wait(owner.period):
                        if not owner.stall.is_set():
                            self.wfile.write(part)
                            self.wfile.flush()
                except OSError:  # the client went away (a reconnect)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
