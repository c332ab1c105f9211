"""`lensbox serve`: the production WSGI server (waitress) over the API app.

``lensbox serve catalog.lbx`` is enough: 127.0.0.1:8080, the bundle as instance
``default``, no API keys on loopback. ``--config lensbox.toml`` reads ``[server]`` and
``[bundles]`` (name = path); a bundle given on the command line is added as ``default``.
Heavy imports (Flask, the TFLite runtime) happen inside functions so ``lensbox --help``
stays instant.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

EXIT_OK, EXIT_FAIL = 0, 1
log = logging.getLogger("lensbox.api")


def waitress_options(server) -> dict[str, Any]:
    return {
        "threads": server.threads,
        # Let Flask answer oversized bodies itself (in the contract's error shape):
        # waitress only steps in well past MAX_CONTENT_LENGTH.
        "max_request_body_size": server.max_request_bytes + 1024 * 1024,
        "ident": "lensbox",
        "channel_timeout": 60,
        "connection_limit": 100,
        "clear_untrusted_proxy_headers": True,
    }


def load_app(config):
    """Open the configured bundles with ``server.interpreters`` interpreters -> Flask app."""
    from lensbox.device.api.app import create_app
    from lensbox.device.api.engines import load_engines

    if not config.bundles:
        raise ValueError("no bundle to serve: give a bundle path, or [bundles] in --config")
    server = config.server
    engines = load_engines(
        config.bundles,
        interpreters=server.interpreters,
        threads=server.interpreter_threads or config.search.threads,
        runtime=config.search.runtime,
        settings=config.search.settings(),
        warmup=server.warmup,
    )
    return create_app(config, engines)


class BackgroundServer:
    """waitress on a thread (tests, embedding in another process); ``port`` 0 picks one."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        from waitress import create_server

        self._server = create_server(app, host=host, port=port, **options)
        self.host = host
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="waitress", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the requests in flight and stop the worker threads first (a finishing
        worker wakes the loop through its trigger), then close every socket from inside
        the loop: closing them from this thread would pull them from under a running
        select()."""
        server = self._server
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=10)

        def close_all() -> None:
            for channel in list(server._map.values()):
                channel.close()

        if self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout=10)
        else:
            server.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve bundles over HTTP: native API plus Yandex, Alibaba, Huawei, Clarifai shapes",
        description=(
            "Run the LAN search daemon (waitress). Native API under /v1 (see "
            "device/api/openapi.yaml), and endpoints shaped like Yandex search_by_image, "
            "Alibaba SearchImageByPic, Huawei ImageSearch and Clarifai annotation searches, "
            "so existing clients can point at the box unchanged. /healthz, /readyz and "
            "Prometheus /metrics too. Bound to 127.0.0.1 it needs no API key; on any other "
            "address set [server] api_keys in --config."
        ),
    )
    p.add_argument("bundle", nargs="?", help="bundle to serve as instance 'default'")
    p.add_argument("--config", default=None,
                   help="TOML file with [server], [bundles], [fallback], [camera], [kiosk]")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8080; 0: any)")
    p.add_argument("--threads", type=int, default=None, help="waitress worker threads")
    p.add_argument("--interpreters", type=int, default=None, help="TFLite interpreters")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def _config(args: argparse.Namespace):
    from lensbox.device.config.loader import LensboxConfig, load_config
    from lensbox.device.config.server import ServerConfig

    config = load_config(args.config)
    updates = {k: v for k, v in {"host": args.host, "port": args.port, "threads": args.threads,
                                 "interpreters": args.interpreters}.items() if v is not None}
    bundles = dict(config.bundles)
    if args.bundle:
        bundles["default"] = args.bundle
    server = ServerConfig.model_validate({**config.server.model_dump(), **updates})
    return LensboxConfig.model_validate(
        {**config.model_dump(), "server": server.model_dump(), "bundles": bundles}
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from lensbox.device.bundle import BundleError
    from lensbox.device.config.loader import ConfigError, format_errors
    from pydantic import ValidationError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:  # "task queue depth is 1" is routine when every thread is busy
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        config = _config(args)
        app = load_app(config)
    except ValidationError as exc:
        print(f"lensbox: error: invalid settings:\n{format_errors(exc)}", file=sys.stderr)
        return EXIT_FAIL
    except (ConfigError, BundleError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"lensbox: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    from lensbox.device.api.app import close_app

    server = config.server
    try:
        background = BackgroundServer(app, server.host, server.port, **waitress_options(server))
    except OSError as exc:
        close_app(app)
        print(f"lensbox: error: cannot listen on {server.host}:{server.port}: {exc}",
              file=sys.stderr)
        return EXIT_FAIL
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    names = ", ".join(sorted(config.bundles))
    print(f"lensbox: serving {names} on {background.url} "
          f"({server.threads} threads, {server.interpreters} interpreters, "
          f"auth {'on' if server.auth_required else 'off'})", flush=True)
    background.start()
    while not stop.wait(0.5):
        pass
    background.stop()
    close_app(app)  # the in-daemon kiosk loop, camera and serial port
    return EXIT_OK
