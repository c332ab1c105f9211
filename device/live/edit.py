"""`lensbox add` / `lensbox remove`: live catalog changes without curl.

Both talk to the running daemon through its native write API (``PUT`` / ``DELETE
/v1/items/<id>``), so the change is journaled, fsync'd and searchable the moment the command
returns. The daemon's address comes from ``--url``, else from the config's ``[server]``
(``--config``, ``$LENSBOX_CONFIG`` or /etc/lensbox/lensbox.toml), else 127.0.0.1:8080.

When nothing answers there and the config has a ``[state]`` section (the appliance), the
change goes straight into the instance's journal under ``state.dir`` instead, exactly as
the daemon would write it; the journal's lock refuses this while a daemon holds it, and the
daemon replays the change when it starts. Without ``[state]`` the command says the daemon
is not running and how to start it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensbox.device.console import EXIT_FAIL, EXIT_OK, fail
from lensbox.device.console import error as console_error

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 120.0  # a put embeds the photos on the box: seconds on a busy Pi
MAX_PHOTOS = 16  # the native API's limit per item


class EditError(Exception):
    """A change that did not happen; the message says why and what to do."""


class DaemonDown(EditError):
    """Nothing answers at the daemon's address."""


# -- where the daemon is ----------------------------------------------------------------
@dataclass
class Target:
    url: str
    api_key: str | None
    config: Any  # LensboxConfig or None
    config_path: str | None
    explicit_url: bool

    @property
    def appliance(self) -> bool:
        """The config has a [state] section: there is a state directory to write to."""
        return self.config is not None and "state" in self.config.model_fields_set


def _target(args: argparse.Namespace) -> Target:
    from lensbox.device.appliance.commands import _default_config_path
    from lensbox.device.config import load_config

    path = args.config or _default_config_path()
    config = load_config(path) if path else None
    url = args.url
    if url is None and config is not None:
        host = config.server.host
        if host in ("0.0.0.0", "", "::", "[::]"):
            host = "127.0.0.1"  # bound to every address: this box answers on loopback
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{config.server.port}"
    key = args.api_key or os.environ.get("LENSBOX_API_KEY")
    if key is None and config is not None and config.server.api_keys:
        key = config.server.api_keys[0]  # the operator on the box may read its config
    return Target((url or DEFAULT_URL).rstrip("/"), key, config, path, args.url is not None)


# -- HTTP -------------------------------------------------------------------------------
def _request(target: Target, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(target.url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if target.api_key:
        req.add_header("Authorization", f"Bearer {target.api_key}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            raw = resp.read()
            try:
                return resp.status, json.loads(raw or b"null")
            except ValueError:
                raise EditError(
                    f"{target.url} answered, but not with lensbox's JSON: is it a lensbox daemon?"
                ) from None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        message = err.get("message") if isinstance(err, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        if exc.code == 401 or code in ("unauthenticated", "forbidden"):
            message = (
                f"{message or 'not authorised'}; give --api-key (or $LENSBOX_API_KEY) with "
                "one of the daemon's [server] api_keys"
            )
        if code == "read_only":
            message = (
                f"{message}. The daemon takes live changes only with a [state] section in "
                "its config (`lensbox serve --config lensbox.toml`)"
            )
        return exc.code, {"error": {"code": code, "message": message or f"HTTP {exc.code}"}}
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonDown(f"no lensbox daemon answers at {target.url} ({reason})") from exc


def _error_message(answer: Any) -> str:
    err = answer.get("error") if isinstance(answer, dict) else None
    return str(err.get("message")) if isinstance(err, dict) else str(answer)


def _remote_categories(target: Target, instance: str) -> dict[str, int]:
    status, answer = _request(target, "GET", "/v1/bundles")
    if status != 200:
        raise EditError(f"{target.url}: cannot read the bundles ({_error_message(answer)})")
    for bundle in answer.get("bundles", []):
        if bundle.get("name") == instance:
            return (bundle.get("manifest") or {}).get("categories") or {}
    raise EditError(f"{target.url}: no instance {instance!r} is served there")


def _item_path(item_id: str, instance: str) -> str:
    quoted = urllib.parse.quote(item_id, safe="")
    return f"/v1/items/{quoted}?instance={urllib.parse.quote(instance, safe='')}"


# -- the state directory (daemon stopped) ------------------------------------------------
class _Offline:
    """The instance's live catalog opened from the state directory, as the daemon would."""

    def __init__(self, target: Target, instance: str) -> None:
        from lensbox.device.bundle import BundleError
        from lensbox.device.live.catalog import CatalogReadOnly, LiveCatalog, LiveSettings
        from lensbox.device.live.slot import BundleSlot
        from lensbox.device.search.engine import open_engine

        config = target.config
        if instance not in config.bundles:
            known = ", ".join(sorted(config.bundles)) or "none"
            raise EditError(
                f"{target.config_path}: no instance {instance!r} in [bundles] (have: {known})"
            )
        if config.state.read_only:
            raise EditError(f"{target.config_path}: state.read_only is set; nothing may change")
        try:
            bundle_dir = BundleSlot(config.bundles[instance]).current()
            engine = open_engine(
                str(bundle_dir), config.search.settings(), 1, config.search.runtime
            )
            settings = LiveSettings.from_config(config.state, background=False)
            self.catalog = LiveCatalog(
                engine, config.state.journal_path(instance), settings=settings
            )
        except CatalogReadOnly as exc:
            raise EditError(
                f"{exc}. A lensbox daemon holds this state directory but does not answer "
                f"at {target.url}; give its address with --url"
            ) from exc
        except (BundleError, FileNotFoundError, ValueError) as exc:
            raise EditError(str(exc)) from exc

    def __enter__(self) -> Any:
        return self.catalog

    def __exit__(self, *exc: object) -> None:
        self.catalog.close()


def _offline_note(target: Target, exc: DaemonDown) -> None:
    print(
        f"lensbox: {exc}; changing the state directory {target.config.state.dir} directly "
        "(the daemon replays it when it starts)",
        file=sys.stderr,
    )


def _down_error(target: Target, exc: DaemonDown) -> str:
    how = (
        f"`lensbox serve --config {target.config_path}`"
        if target.config_path
        else ("`lensbox serve --config lensbox.toml` (with a [state] section)")
    )
    return (
        f"{exc}: is the daemon running? Start it with {how} or `systemctl start lensbox`, "
        "or give its address with --url. With the daemon stopped, a config with a [state] "
        "section (--config) lets this command change its state directory instead"
    )


# -- lensbox add -------------------------------------------------------------------------
def add_add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "add",
        help="add (or replace) a catalog item on the running daemon, from its photo(s)",
        description="Send PHOTO(s) to the running daemon as item ID (PUT /v1/items/ID): it "
        "embeds them, journals the change (fsync'd) and the next search finds the item. "
        "An existing ID is replaced. If no daemon answers and the config has a [state] "
        "section, the change is written to its state directory instead.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photo(s) of the item")
    p.add_argument("--id", required=True, help="item id (e.g. the product's SKU)")
    p.add_argument("--title", default=None)
    p.add_argument("--category", default=None, help="category id, or a name the bundle knows")
    p.add_argument("--page-url", default=None)
    p.add_argument("--product-id", default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a string attribute, like an extra manifest column (repeatable: --set price=9.99)",
    )
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)"
    )
    _common(p)
    p.set_defaults(func=cmd_add)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instance", default="default", help="bundle instance (default 'default')")
    p.add_argument(
        "--url", default=None, help=f"daemon address (default from [server] or {DEFAULT_URL})"
    )
    p.add_argument("--api-key", default=None, help="API key (default $LENSBOX_API_KEY)")
    p.add_argument(
        "--config", default=None, help="lensbox.toml (default $LENSBOX_CONFIG or /etc/lensbox)"
    )


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise EditError(f"{option} must be KEY=VALUE, got {text!r}")
        out[key.strip()] = value.strip()
    return out


def _category(text: str, table: dict[str, int]) -> int:
    if text in table:
        return int(table[text])
    try:
        return int(text)
    except ValueError:
        known = ", ".join(table) or "none: the bundle's catalog used integer ids only"
        raise EditError(
            f"--category {text!r}: the bundle has no such category (names: {known}); "
            "give an integer id for a new one"
        ) from None


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"source": Path(args.photos[0]).name}
    for key in ("title", "page_url", "product_id"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.set:
        fields["str_attrs"] = _pairs(args.set, "--set")
    if args.tag:
        fields["tags"] = _pairs(args.tag, "--tag")
    return fields


def _photos(paths: list[str]) -> list[bytes]:
    if len(paths) > MAX_PHOTOS:
        raise EditError(f"at most {MAX_PHOTOS} photos per item, got {len(paths)}")
    out = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            raise EditError(f"{path}: is a folder; give the item's photo file(s)")
        try:
            out.append(p.read_bytes())
        except FileNotFoundError:
            raise EditError(f"{path}: no such photo") from None
        except OSError as exc:
            raise EditError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return out


def cmd_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lensbox.device.config import ConfigError

    try:
        photos = _photos(args.photos)
        fields = _fields(args)
        target = _target(args)
        try:
            return _add_remote(args, target, photos, fields)
        except DaemonDown as exc:
            if target.explicit_url or not target.appliance:
                return fail(_down_error(target, exc))
            _offline_note(target, exc)
            return _add_offline(args, target, photos, fields)
    except (ConfigError, ValidationError) as exc:
        return fail(str(exc))
    except EditError as exc:
        return fail(str(exc))


def _add_remote(
    args: argparse.Namespace, target: Target, photos: list[bytes], fields: dict[str, Any]
) -> int:
    if args.category is not None:
        fields["category_id"] = _category(args.category, _remote_categories(target, args.instance))
    body = {
        "images": [base64.b64encode(p).decode("ascii") for p in photos],
        "fields": fields,
        "instance": args.instance,
    }
    status, answer = _request(target, "PUT", _item_path(args.id, args.instance), body)
    if status not in (200, 201):
        return fail(f"{args.id}: not added: {_error_message(answer)}")
    verb = "added" if answer.get("created") else "replaced"
    print(
        f"{verb} {args.id} in instance {answer.get('instance')} at {target.url} "
        f"(journal seq {answer.get('seq')}); searchable now"
    )
    return EXIT_OK


def _add_offline(
    args: argparse.Namespace, target: Target, photos: list[bytes], fields: dict[str, Any]
) -> int:
    from lensbox.device.imaging.decode import ImageError

    with _Offline(target, args.instance) as catalog:
        if args.category is not None:
            table = catalog.bundle.manifest.get("categories") or {}
            fields["category_id"] = _category(args.category, table)
        existed = args.id in catalog
        try:
            change = catalog.put(args.id, photos, fields)
        except (ImageError, ValueError) as exc:
            return fail(f"{args.id}: not added: {exc}")
    verb = "replaced" if existed else "added"
    print(f"{verb} {args.id} in instance {args.instance} (journal seq {change.seq})")
    return EXIT_OK


# -- lensbox remove ----------------------------------------------------------------------
def add_remove(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "remove",
        help="remove catalog items from the running daemon",
        description="Delete item ID(s) on the running daemon (DELETE /v1/items/ID); the next "
        "search no longer finds them. An id that does not exist is reported and makes the "
        "exit status 1. If no daemon answers and the config has a [state] section, the "
        "change is written to its state directory instead.",
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="item id(s)")
    _common(p)
    p.set_defaults(func=cmd_remove)


def cmd_remove(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lensbox.device.config import ConfigError

    try:
        target = _target(args)
        try:
            return _remove_remote(args, target)
        except DaemonDown as exc:
            if target.explicit_url or not target.appliance:
                return fail(_down_error(target, exc))
            _offline_note(target, exc)
            return _remove_offline(args, target)
    except (ConfigError, ValidationError) as exc:
        return fail(str(exc))
    except EditError as exc:
        return fail(str(exc))


def _remove_remote(args: argparse.Namespace, target: Target) -> int:
    failed = False
    for item_id in dict.fromkeys(args.ids):
        status, answer = _request(target, "DELETE", _item_path(item_id, args.instance))
        if status == 200:
            print(f"removed {item_id} from instance {answer.get('instance')} at {target.url}")
        else:
            console_error(f"{item_id}: not removed: {_error_message(answer)}")
            failed = True
    return EXIT_FAIL if failed else EXIT_OK


def _remove_offline(args: argparse.Namespace, target: Target) -> int:
    with _Offline(target, args.instance) as catalog:
        change = catalog.delete(list(dict.fromkeys(args.ids)))
    gone = set(change.ids) if change else set()
    for item_id in dict.fromkeys(args.ids):
        if item_id in gone:
            print(f"removed {item_id} from instance {args.instance}")
        else:
            console_error(f"{item_id}: not removed: no catalog item with id {item_id!r}")
    return EXIT_OK if gone == set(args.ids) else EXIT_FAIL
