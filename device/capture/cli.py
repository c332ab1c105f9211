"""`lensbox kiosk`: camera-triggered lookups as their own process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from lensbox.device.console import EXIT_OK, fail


def add_kiosk(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kiosk",
        help="answer lookups triggered over a serial line, by motion or on a timer",
        description=(
            "Keep a camera open and answer lookups: a line such as 'LOOKUP 42' on the serial "
            "port grabs a fresh frame, checks it is neither dark nor blurred, searches the "
            "bundle and answers on the same line ('OK 42 coffee 0.830', 'NOMATCH 0.310', "
            "'RETAKE dark', ...; see device/capture/PROTOCOL.md). Motion and a fixed interval "
            "can trigger too; every result can be POSTed to a webhook. Settings come from "
            "the [camera] and [kiosk] tables of --config; options here override them."
        ),
    )
    p.add_argument("bundle", help="bundle directory written by `lensbox build`")
    p.add_argument(
        "--camera",
        default=None,
        help="/dev/video0, an index, a GStreamer pipeline, an rtsp/http URL or a "
        "video file (default: [camera] source)",
    )
    p.add_argument("--serial", default=None, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=None, help="serial speed (default 115200)")
    p.add_argument(
        "--token", default=None, help="request word (default LOOKUP; '' makes any line a trigger)"
    )
    p.add_argument("--motion", action="store_true", help="also look up when the scene settles")
    p.add_argument("--interval", type=float, default=None, help="also look up every N seconds")
    p.add_argument("--webhook", default=None, help="POST every result's JSON to this URL")
    p.add_argument("--min-score", type=float, default=None, help="below: NOMATCH")
    p.add_argument(
        "--stable-frames",
        type=int,
        default=None,
        help="frames whose top match must agree (default 1)",
    )
    p.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="also serve POST /v1/trigger and GET /v1/last (e.g. 127.0.0.1:8081)",
    )
    p.add_argument("--config", default=None, help="lensbox.toml")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=cmd_kiosk)


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Command-line options -> ([camera] updates, [kiosk] updates)."""
    camera = {"source": args.camera} if args.camera is not None else {}
    kiosk: dict[str, Any] = {}
    serial = {
        k: v
        for k, v in (("port", args.serial), ("baud", args.baud), ("token", args.token))
        if v is not None
    }
    trigger: dict[str, Any] = {}
    if args.motion:
        trigger["motion"] = True
    if args.interval is not None:
        trigger["interval_seconds"] = args.interval
    for key, val in (
        ("webhook_url", args.webhook),
        ("min_score", args.min_score),
        ("stable_frames", args.stable_frames),
    ):
        if val is not None:
            kiosk[key] = val
    if serial:
        kiosk["serial"] = serial
    if trigger:
        kiosk["trigger"] = trigger
    return camera, kiosk


def _merged(section: Any, updates: dict[str, Any]) -> Any:
    """Re-validate a section with updates (nested tables merged, not replaced)."""
    data = section.model_dump()
    for key, val in updates.items():
        data[key] = {**data[key], **val} if isinstance(val, dict) else val
    return type(section).model_validate(data)


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--http must be HOST:PORT, got {text!r}")
    return host, int(port)


def cmd_kiosk(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lensbox.device.bundle import BundleError
    from lensbox.device.config import ConfigError, load_config

    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load_config(args.config)
        cam_up, kiosk_up = _overrides(args)
        camera, kiosk = _merged(cfg.camera, cam_up), _merged(cfg.kiosk, kiosk_up)
        http = _parse_hostport(args.http) if args.http else None
    except (ConfigError, ValidationError, ValueError) as exc:
        return fail(str(exc))
    from lensbox.device.capture.grabber import FrameGrabber
    from lensbox.device.capture.kiosk import KioskLoop
    from lensbox.device.live.catalog import open_catalog

    def reopen() -> Any:
        return open_catalog(
            args.bundle, cfg.search.settings(), cfg.search.threads, cfg.search.runtime
        )

    try:
        catalog = reopen()
    except (BundleError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    if not _has_trigger(kiosk, http):
        logging.getLogger("lensbox.capture.kiosk").warning(
            "no trigger configured: nothing will start a lookup. Give --serial PORT, "
            "--motion, --interval SECONDS or --http HOST:PORT (or [kiosk.serial] port, "
            "[kiosk.trigger] motion / interval_seconds in --config)"
        )
    loop = KioskLoop(catalog, FrameGrabber(camera), kiosk)
    return _serve(loop, http, reopen)


def _has_trigger(kiosk: Any, http: tuple[str, int] | None) -> bool:
    """Something can start a lookup: a serial line, motion, a timer or the HTTP face."""
    trigger = kiosk.trigger
    return bool(kiosk.serial.port or trigger.motion or trigger.interval_seconds > 0 or http)


def _reload(loop: Any, reopen: Callable[[], Any]) -> None:
    """SIGHUP: reopen the bundle path (a new deploy) and search it from the next lookup."""
    log = logging.getLogger("lensbox.capture.kiosk")
    try:
        loop.swap_catalog(reopen())
    except Exception as exc:  # keep serving the old bundle rather than die
        log.error("reload failed, still serving the previous bundle: %s", exc)
        return
    log.info("bundle reloaded")


def _serve(loop: Any, http: tuple[str, int] | None, reopen: Callable[[], Any]) -> int:
    """Run until SIGINT/SIGTERM (SIGHUP reloads the bundle); the optional HTTP server runs
    on a daemon thread."""
    done, hup = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    loop.start()
    server = None
    if http is not None:
        from waitress.server import create_server

        from lensbox.device.capture.http import create_app

        try:
            server = create_server(create_app(loop), host=http[0], port=http[1], threads=4)
        except (OSError, ValueError) as exc:  # port taken, unknown host: say so, no traceback
            loop.stop()
            return fail(f"--http {http[0]}:{http[1]}: cannot listen there ({exc})")
        threading.Thread(target=server.run, name="kiosk-http", daemon=True).start()
        logging.getLogger("lensbox.capture.kiosk").info(
            # waitress reports effective_port as a string (getnameinfo): %s, not %d
            "kiosk HTTP on http://%s:%s/v1/trigger",
            http[0],
            # Set by waitress's BaseWSGIServer.__init__; types-waitress does not declare it.
            server.effective_port,  # type: ignore[union-attr]
        )
    try:
        while not done.wait(0.5):
            if hup.is_set():
                hup.clear()
                _reload(loop, reopen)
    finally:
        if server is not None:
            server.close()
        loop.stop()
    return EXIT_OK
