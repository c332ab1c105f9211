"""`lensbox serve`: the production WSGI server (waitress) over the API app.

``lensbox serve catalog.lbx`` is enough: 127.0.0.1:8080, the bundle as instance
``default``, no API keys on loopback. ``--config lensbox.toml`` reads ``[server]`` and
``[bundles]`` (name = path); a bundle given on the command line is added as ``default``.
Heavy imports (Flask, the TFLite runtime) happen inside functions so ``lensbox --help``
stays instant.

The daemon around the app is :func:`lensbox.device.serving.daemon.open_daemon`; this
module binds it to a port: READY=1 once the bundles are loaded *and* the port is bound,
WATCHDOG=1 while healthy, RELOADING=1 around SIGHUP, STOPPING=1 on SIGTERM.

With a ``[state]`` section (the appliance config) catalog changes are journaled under
``state.dir`` and an instance that fails to load is reported on /readyz while the daemon
waits for a good deploy. Without one (``lensbox serve catalog.lbx``, or a config with no
``[state]``) the bundles are served as they are: read-only, and a bundle that does not
load is a startup error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from lensbox.device.console import EXIT_FAIL, EXIT_OK, fail
from lensbox.device.console import error as console_error

if TYPE_CHECKING:
    from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("lensbox.api")


def waitress_options(server) -> dict[str, Any]:
    return {
        "threads": server.threads,
        # Let Flask answer oversized bodies itself (in the contract's error shape):
        # waitress only steps in well past MAX_CONTENT_LENGTH (and then in JSON too, see
        # _JsonErrorTask).
        "max_request_body_size": server.max_request_bytes + 1024 * 1024,
        "ident": "lensbox",
        # Idle keep-alive connections; a request still arriving is bounded separately by
        # request_timeout_s (guard_slow_clients).
        "channel_timeout": server.idle_timeout_s,
        "cleanup_interval": 1,
        # Connections cost a socket and a little memory each (waitress buffers a request
        # before a worker sees it), so many slow clients can be held open without taking
        # a worker; poll() instead of select() so more than 1024 descriptors work.
        "connection_limit": server.connection_limit,
        "asyncore_use_poll": True,
        "clear_untrusted_proxy_headers": True,
        "request_timeout_s": server.request_timeout_s,
    }


# -- slow clients and waitress' own errors ------------------------------------------------
def _guarded_channel(base: type) -> type:
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        """waitress' own refusals (body over max_request_body_size, bad headers) in the
        contract's JSON error shape instead of waitress' plain text."""

        def execute(self) -> None:
            render = getattr(self.channel.server, "lensbox_render_error", None)
            rendered = None
            if render is not None:
                try:
                    rendered = render(self.request)
                except Exception:  # never worse than waitress' own answer
                    log.exception("rendering a waitress error failed")
            if rendered is None:
                super().execute()
                return
            status, headers, body = rendered
            self.status = status
            # A list at run time; types-waitress declares it a Sequence.
            self.response_headers.extend(headers)  # type: ignore[attr-defined]
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class GuardedChannel(base):
        """Remembers since when the request now arriving has been arriving."""

        error_task_class = JsonErrorTask
        partial_since: float | None = None

        def received(self, data: bytes) -> bool:
            before = self.request
            result = super().received(data)
            if self.request is None:
                self.partial_since = None
            elif self.request is not before or self.partial_since is None:
                self.partial_since = time.time()
            return result

    return GuardedChannel


def guard_slow_clients(server: Any, request_timeout_s: float) -> None:
    """Drop connections whose request has been arriving for longer than
    ``request_timeout_s`` (slowloris: headers or a body dribbled a byte at a time, which
    waitress' inactivity timeout never catches). Checked every ``cleanup_interval``."""
    server.channel_class = _guarded_channel(server.channel_class)
    idle_cleanup = server.maintenance

    def maintenance(now: float) -> None:
        idle_cleanup(now)
        cutoff = now - request_timeout_s
        for channel in list(server.active_channels.values()):
            since = getattr(channel, "partial_since", None)
            if since is not None and since < cutoff and not channel.requests:
                channel.will_close = True

    server.maintenance = maintenance


FD_RESERVE = 128  # bundle files, journal, interpreters, logs, the image host sockets


def fit_fd_limit(connections: int) -> int:
    """Raise the soft open-file limit so ``connections`` sockets fit (systemd's default
    soft limit is 1024); if the hard limit forbids it, serve fewer connections, never fail
    on accept()."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connections + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    except (ImportError, OSError, ValueError):
        return connections
    if soft != resource.RLIM_INFINITY and soft - FD_RESERVE < connections:
        fitted = max(16, soft - FD_RESERVE)
        log.warning("open-file limit %d: serving at most %d connections", soft, fitted)
        return fitted
    return connections


def error_renderer(app: Any) -> Any:
    """``request -> (status, headers, body)`` in the owning contract's error shape, for
    errors waitress answers before the app sees the request (None: not a lensbox app)."""
    ext = getattr(app, "extensions", {}).get("lensbox")
    if not ext:
        return None
    from lensbox.device.api.errors import ApiError

    contracts = ext["contracts"]

    def render(request: Any) -> tuple[str, list[tuple[str, str]], bytes]:
        err = request.error
        path = request.path if isinstance(getattr(request, "path", None), str) else "/"
        path = path if path.startswith("/") else "/"
        if getattr(err, "code", 400) == 413:
            api = ApiError("request_too_large", f"the request body is too large ({err.body})")
        else:
            api = ApiError("bad_request", f"{err.reason}: {err.body}")
        contract = next(c for c in contracts if c.owns(path))
        with app.test_request_context(path, method=request.command or "POST"):
            resp = contract.render_error(api)
            return resp.status, list(resp.headers.items()), resp.get_data()

    return render


class _TcpServer(Protocol):
    """What :class:`BackgroundServer` uses of waitress' TCP server. types-waitress lacks
    ``effective_port`` and ``_map`` and types ``trigger`` as an int (it is a
    ``waitress.trigger.trigger``, whose stub wants thunks that take an argument);
    ``lensbox_render_error`` is ours (:func:`error_renderer`)."""

    effective_port: int
    lensbox_render_error: Callable[[Any], tuple[str, list[tuple[str, str]], bytes]] | None
    task_dispatcher: ThreadedTaskDispatcher
    trigger: Any
    _map: dict[int, Any]

    def run(self) -> None: ...

    def close(self) -> None: ...


class BackgroundServer:
    """waitress on a thread (tests, embedding in another process); ``port`` 0 picks one."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        from waitress.server import create_server

        request_timeout = options.pop("request_timeout_s", None)
        if "connection_limit" in options:
            options["connection_limit"] = fit_fd_limit(int(options["connection_limit"]))
        # A single TcpWSGIServer for a host that is one address (what this class serves;
        # a name resolving to several would give a MultiSocketServer, with no port).
        self._server = cast(_TcpServer, create_server(app, host=host, port=port, **options))
        if request_timeout is not None:
            guard_slow_clients(self._server, request_timeout)
        self._server.lensbox_render_error = error_renderer(app)
        self.host = host
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="waitress", daemon=True)

    def alive(self) -> bool:
        """The serving thread runs (part of the watchdog's health check)."""
        return self._thread.is_alive()

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
            try:
                server.trigger.pull_trigger(close_all)
            except OSError:  # the loop ended and closed its trigger since the check
                close_all()  # nothing runs select() any more: safe from this thread
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
            "address set [server] api_keys in --config. With a [state] section in --config "
            "the catalog takes live changes (AddImage / DeleteImage, Huawei add / delete, "
            "PUT/PATCH/DELETE /v1/items), journaled under state.dir, and new bundles from "
            "`lensbox deploy` are swapped in without dropping requests; SIGHUP reloads the "
            "config. Under systemd (Type=notify) it sends READY=1, WATCHDOG=1, STOPPING=1."
        ),
    )
    p.add_argument("bundle", nargs="?", help="bundle to serve as instance 'default'")
    p.add_argument(
        "--config",
        default=None,
        help="TOML file with [server], [bundles], [state], [service], [fallback], "
        "[camera], [kiosk]",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8080; 0: any)")
    p.add_argument("--threads", type=int, default=None, help="waitress worker threads")
    p.add_argument("--interpreters", type=int, default=None, help="TFLite interpreters")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def _config(args: argparse.Namespace) -> tuple[Any, bool]:
    """(effective config, appliance): the file + environment + command line. Appliance
    mode is a config with a ``[state]`` section (file or LENSBOX__STATE__*); without one the
    bundles are served read-only (no journal is written anywhere)."""
    from lensbox.device.config.loader import LensboxConfig, load_config
    from lensbox.device.config.server import ServerConfig

    config = load_config(args.config)
    appliance = "state" in config.model_fields_set
    updates = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "threads": args.threads,
            "interpreters": args.interpreters,
        }.items()
        if v is not None
    }
    bundles = dict(config.bundles)
    if args.bundle:
        bundles["default"] = args.bundle
    server = ServerConfig.model_validate({**config.server.model_dump(), **updates})
    data = {**config.model_dump(), "server": server.model_dump(), "bundles": bundles}
    if not appliance:
        data["state"] = {**data["state"], "read_only": True}
    return LensboxConfig.model_validate(data), appliance


def _check_paths(bundles: dict[str, str]) -> None:
    """Read-only mode: a bundle path that does not exist is an error right away."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.live.slot import BundleSlot

    for path in bundles.values():
        if not Path(path).exists() and not BundleSlot(path).generations():
            open_bundle(path)  # raises BundleError: no such bundle (and how to build one)


def _quiet(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.getLogger("lensbox.access").setLevel(level)  # one line per request with -v
    if not verbose:  # "task queue depth is 1" is routine when every thread is busy
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lensbox.device.bundle import BundleError
    from lensbox.device.config.loader import ConfigError, format_errors

    try:
        config, appliance = _config(args)
        if not config.bundles:
            raise ValueError("no bundle to serve: give a bundle path, or [bundles] in --config")
        if not appliance:
            _check_paths(config.bundles)
        from lensbox.device.serving.daemon import open_daemon

        daemon = open_daemon(config)
    except ValidationError as exc:
        return fail(f"invalid settings:\n{format_errors(exc)}")
    except (ConfigError, BundleError, ValueError, FileNotFoundError, RuntimeError) as exc:
        return fail(str(exc))
    _quiet(args.verbose)
    failed = {n: e["error"] for n, e in daemon.manager.ready()[1].items() if not e["ready"]}
    if failed and not appliance:
        for name, error in failed.items():
            console_error(f"instance {name}: {error}")
        daemon.close()
        return EXIT_FAIL
    return _run(args, config, daemon)


def _run(args: argparse.Namespace, config, daemon: Any) -> int:
    """Bind, READY=1, serve until SIGTERM / SIGINT; SIGHUP reloads the config."""
    from lensbox.device.live.manager import install_sighup

    server = config.server
    try:
        background = BackgroundServer(
            daemon.app, server.host, server.port, **waitress_options(server)
        )
    except OSError as exc:
        daemon.close()
        return fail(f"cannot listen on {server.host}:{server.port}: {exc}")
    from lensbox.device.api.tls import start_https
    from lensbox.device.grpc import start_grpc

    grpc_listener = https = None
    try:  # server.grpc_port / server.https_port; None: off
        grpc_listener = start_grpc(server, daemon.app, background.port)
        https = start_https(server, daemon.app)
    except (OSError, RuntimeError) as exc:  # ssl.SSLError is an OSError
        if grpc_listener is not None:
            grpc_listener.stop()
        background.stop()
        daemon.close()
        return fail(f"cannot start the gRPC / HTTPS listener: {exc}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = daemon.runtime
    install_sighup(
        daemon.manager,
        args.config or "(command line)",
        loader=lambda _path: _config(args)[0],
        notifier=runtime.notifier,
    )
    runtime.health = background.alive
    names = ", ".join(sorted(config.bundles))
    print(
        f"lensbox: serving {names} on {background.url} "
        f"({server.threads} threads, {server.interpreters} interpreters, "
        f"auth {'on' if server.auth_required else 'off'})"
        + (f"; gRPC on {grpc_listener.address}" if grpc_listener else "")
        + (f"; HTTPS on {https.address}" if https else ""),
        flush=True,
    )
    background.start()
    waiting = [n for n, e in daemon.manager.ready()[1].items() if not e["ready"]]
    runtime.ready(
        f"serving {names} on {background.url}"
        + (f"; waiting for a bundle for {', '.join(waiting)}" if waiting else "")
    )
    while not stop.wait(0.5):
        pass
    runtime.notifier.stopping("finishing requests")
    if grpc_listener is not None:
        grpc_listener.stop()
    if https is not None:
        https.stop()
    background.stop()  # requests in flight finish first
    daemon.close()  # the in-daemon kiosk (camera, serial port), STOPPING=1, the catalogs
    return EXIT_OK
