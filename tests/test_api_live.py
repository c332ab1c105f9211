"""The daemon over live catalogs: changes through every contract, visible at once; journal
replay after kill -9; hot swaps under load; /readyz, /metrics; sd_notify.

Real components throughout: a real bundle (the session's sample bundle deployed into a
slot under a tmp state dir), a real waitress server on loopback driven with ``requests``,
and for the restart and systemd checks a real ``lensbox serve`` process with its
NOTIFY_SOCKET bound by the test.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from PIL import Image

from tests.api_support import metric, photo, running_server

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "examples" / "sample-catalog"
OPENAPI = ROOT / "device" / "api" / "openapi.yaml"
SPEC = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
HUAWEI = "/v1/p-1/default/image"


def check_schema(name: str, body: object) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)


# -- photos that are not in the sample catalog ----------------------------------------------
def _examples():
    spec = importlib.util.spec_from_file_location(
        "make_sample_catalog", ROOT / "examples" / "make_sample_catalog.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SAMPLES = _examples()


def _encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _sign() -> np.ndarray:
    """A road-sign-like card: green ground, white cross, magenta disc."""
    import cv2

    img = np.full((480, 640, 3), 250, np.uint8)
    cv2.rectangle(img, (20, 20), (620, 460), (0, 90, 60), -1)
    cv2.line(img, (120, 80), (520, 400), (250, 250, 250), 60)
    cv2.line(img, (520, 80), (120, 400), (250, 250, 250), 60)
    cv2.circle(img, (320, 240), 70, (230, 40, 160), -1)
    return img


def _orange_star() -> np.ndarray:
    """A new product: an orange label with a star and its own lettering.

    Not a recoloured catalog card: keypoints are grey-level, so a catalog item with the same
    design in another colour verifies as well as the item itself, and items added on the
    box have no stored keypoints yet (see the README's "Recognition" limits)."""
    import cv2

    img = np.full((480, 640, 3), 245, np.uint8)
    cv2.rectangle(img, (20, 20), (620, 460), (250, 130, 20), -1)
    star = np.array(
        [
            [320, 70],
            [365, 190],
            [490, 190],
            [390, 265],
            [430, 390],
            [320, 315],
            [210, 390],
            [250, 265],
            [150, 190],
            [275, 190],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [star], (255, 255, 255))
    cv2.putText(img, "SUNNY 77", (60, 440), cv2.FONT_HERSHEY_DUPLEX, 1.6, (40, 20, 0), 3)
    cv2.circle(img, (560, 80), 30, (30, 30, 200), -1)
    return img


def _camera(rgb: np.ndarray, seed: int) -> bytes:
    """The kiosk-camera rendering the sample queries use (perspective, background,
    blur, noise, exposure), as JPEG."""
    brick = np.asarray(Image.open(CATALOG / "brick.jpg").convert("RGB"))
    return _encode(SAMPLES.camera_like(rgb, brick, seed), "JPEG")


SIGN, STAR = _sign(), _orange_star()
SIGN_PNG, STAR_PNG = _encode(SIGN), _encode(STAR)
SIGN_QUERY, STAR_QUERY = _camera(SIGN, 2), _camera(STAR, 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- an in-process daemon over a tmp state dir ------------------------------------------------
def _config(state: Path, server: dict | None = None, **state_extra):
    from lensbox.device.config.loader import LensboxConfig

    return LensboxConfig.model_validate(
        {
            "bundles": {"default": str(state / "bundles" / "default")},
            "state": {"dir": str(state), "watch_interval_seconds": 0.05, **state_extra},
            "server": {"rate_limit": 0, "interpreters": 1, "warmup": False, **(server or {})},
            "search": {"threads": 1},
        }
    )


@contextlib.contextmanager
def live_server(state: Path, server: dict | None = None, **state_extra):
    """`lensbox serve`'s daemon (interpreter pool, bundle manager, runtime, app) on a free
    loopback port; sd_notify off."""
    from lensbox.device.api.server import BackgroundServer, waitress_options
    from lensbox.device.appliance.sdnotify import Notifier
    from lensbox.device.serving.daemon import open_daemon

    config = _config(state, server, **state_extra)
    daemon = open_daemon(config, notifier=Notifier(socket_path=""), configure_logging=False)
    try:
        with BackgroundServer(daemon.app, "127.0.0.1", 0, **waitress_options(config.server)) as srv:
            daemon.url = srv.url
            yield daemon
    finally:
        daemon.close()


def _deployed(tmp: Path, sample_bundle: Path) -> Path:
    from lensbox.device.live.slot import BundleSlot

    BundleSlot(tmp / "bundles" / "default").install_copy(sample_bundle)
    return tmp


@pytest.fixture(scope="module")
def live(tmp_path_factory, sample_bundle):
    with live_server(_deployed(tmp_path_factory.mktemp("live-state"), sample_bundle)) as d:
        yield d


def native_search(url: str, data: bytes, **params) -> dict:
    resp = requests.post(
        f"{url}/v1/search",
        data=data,
        params=params,
        timeout=30,
        headers={"Content-Type": "image/jpeg"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def ids(body: dict) -> list[str]:
    return [h["id"] for h in body["hits"]]


def alibaba(url: str, **params) -> requests.Response:
    return requests.post(f"{url}/", data={"InstanceName": "default", **params}, timeout=30)


def alibaba_search(url: str, data: bytes, **params) -> dict:
    resp = alibaba(url, Action="SearchImageByPic", PicContent=b64(data), **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def huawei_search(url: str, **body) -> dict:
    resp = requests.post(f"{url}{HUAWEI}/search", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def put_item(
    url: str, item_id: str, data: bytes, fields: dict | None = None, **params
) -> requests.Response:
    form = {"fields": json.dumps(fields)} if fields is not None else {}
    return requests.put(
        f"{url}/v1/items/{item_id}",
        files={"image": ("p.png", data)},
        data=form,
        params=params,
        timeout=30,
    )


# -- (a) additions ----------------------------------------------------------------------------
def test_added_item_is_found_at_once_in_every_contract(live):
    url = live.url
    before = native_search(url, SIGN_QUERY)
    assert "sign-9" not in ids(before)
    fields = {
        "title": "Sign nine",
        "tags": {"kind": "sign"},
        "product_id": "P-sign",
        "int_attrs": {"int_attr": 7},
    }
    resp = put_item(url, "sign-9", SIGN_PNG, fields)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    check_schema("ItemChange", body)
    assert body["created"] and body["op"] == "put" and body["seq"] >= 1
    assert body["item"]["metadata"]["title"] == "Sign nine" and body["item"]["vectors"] == 1

    hits = native_search(url, SIGN_QUERY)["hits"]
    assert hits[0]["id"] == "sign-9" and hits[0]["metadata"]["tags"] == {"kind": "sign"}
    yandex = requests.post(
        f"{url}/v2/image/search_by_image", json={"data": b64(SIGN_QUERY)}, timeout=30
    ).json()
    assert yandex["images"][0]["url"].endswith("/v1/items/sign-9/image")
    assert yandex["images"][0]["pageTitle"] == "Sign nine"
    huawei = huawei_search(url, file=b64(SIGN_QUERY))
    assert huawei["result"][0] == {
        "path": "sign-9",
        "sim": huawei["result"][0]["sim"],
        "tags": {"kind": "sign"},
    }
    clarifai = requests.post(
        f"{url}/v2/annotations/searches",
        timeout=30,
        json={
            "searches": [
                {
                    "query": {
                        "ranks": [{"annotation": {"data": {"image": {"base64": b64(SIGN_QUERY)}}}}]
                    }
                }
            ]
        },
    ).json()
    assert clarifai["hits"][0]["input"]["id"] == "sign-9"
    auctions = alibaba_search(url, SIGN_QUERY)["Auctions"]
    assert auctions[0]["ProductId"] == "P-sign" and auctions[0]["IntAttr"] == 7

    # id-based queries and look-ups see the live item
    item = requests.get(f"{url}/v1/items/sign-9", timeout=10)
    assert item.status_code == 200
    check_schema("Item", item.json())
    assert huawei_search(url, path="sign-9")["result"][0]["path"] == "sign-9"
    by_id = requests.post(f"{url}/v1/search", json={"id": "sign-9", "top_k": 1}, timeout=30)
    assert ids(by_id.json()) == ["sign-9"]


def test_alibaba_add_image_then_search(live):
    url = live.url
    assert all(a["ProductId"] != "P-star" for a in alibaba_search(url, STAR_QUERY)["Auctions"])
    resp = alibaba(
        url,
        Action="AddImage",
        ProductId="P-star",
        PicName="star.png",
        PicContent=b64(STAR_PNG),
        CategoryId="12",
        IntAttr="42",
        StrAttr="new",
        CustomContent="an orange star",
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["Success"] is True and body["Code"] == 0 and body["Message"] == "success"
    assert body["PicInfo"] == {"CategoryId": 12, "Region": "0,640,0,480"}
    top = alibaba_search(url, STAR_QUERY)["Auctions"][0]
    assert (top["ProductId"], top["PicName"], top["CategoryId"]) == ("P-star", "star.png", 12)
    assert top["IntAttr"] == 42 and top["StrAttr"] == "new"
    assert top["CustomContent"] == "an orange star"
    only = alibaba_search(url, STAR_QUERY, Filter='int_attr=42 AND str_attr="new"')
    assert [a["ProductId"] for a in only["Auctions"]] == ["P-star"]
    assert ids(native_search(url, STAR_QUERY))[0] == "P-star/star.png"
    # The same ProductId + PicName replaces that photo instead of adding one.
    count = live.manager["default"].count()
    again = alibaba(
        url,
        Action="AddImage",
        ProductId="P-star",
        PicName="star.png",
        PicContent=b64(STAR_PNG),
        IntAttr="43",
    )
    assert again.status_code == 200 and live.manager["default"].count() == count
    assert alibaba_search(url, STAR_QUERY)["Auctions"][0]["IntAttr"] == 43


def test_cached_query_embeddings_search_the_current_catalog(live):
    url = live.url
    query = _camera(SIGN, 5)
    first = native_search(url, query)
    assert "sign-cache" not in ids(first)
    assert put_item(url, "sign-cache", SIGN_PNG).status_code == 201
    again = requests.post(f"{url}/v1/search", json={"id": first["query_id"]}, timeout=30)
    assert again.headers["X-Lensbox-Cached"] == "true"  # the embedding came from the cache
    assert "sign-cache" in ids(again.json())  # the results did not
    patched = requests.patch(
        f"{url}/v1/items/sign-cache", timeout=30, json={"fields": {"title": "Renamed"}}
    )
    assert patched.status_code == 200, patched.text
    check_schema("ItemChange", patched.json())
    hit = next(h for h in native_search(url, query)["hits"] if h["id"] == "sign-cache")
    assert hit["metadata"]["title"] == "Renamed"
    assert requests.delete(f"{url}/v1/items/sign-cache", timeout=30).status_code == 200
    gone = requests.post(f"{url}/v1/search", json={"id": first["query_id"]}, timeout=30)
    assert "sign-cache" not in ids(gone.json())


def test_bad_changes_are_refused_in_each_contract_and_lose_nothing(live):
    url = live.url
    catalog = live.manager["default"]
    count, coffee = catalog.count(), catalog.get("coffee")
    tiny = _encode(np.full((10, 10, 3), 90, np.uint8))  # under every limit
    bad = put_item(url, "coffee", tiny)  # replacing an item with an unusable photo
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "too_small"
    check_schema("Error", bad.json())
    junk = put_item(url, "coffee", b"not an image at all")
    assert junk.status_code == 400 and junk.json()["error"]["code"] == "not_an_image"
    fields = put_item(url, "coffee", SIGN_PNG, {"width": 5})
    assert fields.status_code == 400 and fields.json()["error"]["code"] == "bad_param"
    types = put_item(url, "coffee", SIGN_PNG, {"category_id": "three"})
    assert types.status_code == 400 and "category_id" in types.json()["error"]["message"]
    pixels = alibaba(url, Action="AddImage", ProductId="P", PicName="x.png", PicContent=b64(tiny))
    assert pixels.status_code == 400 and pixels.json()["Code"] == "UnsupportedPicPixels"
    nopic = alibaba(url, Action="AddImage", ProductId="P", PicName="x.png")
    assert nopic.json()["Code"] == "NoSpecifiedPic"
    hw = requests.post(f"{url}{HUAWEI}", json={"path": "x", "file": b64(tiny)}, timeout=30)
    assert hw.status_code == 400 and hw.json()["error_code"] == "IS.0002"
    hw = requests.post(f"{url}{HUAWEI}", json={"file": b64(SIGN_PNG)}, timeout=30)
    assert hw.json() == {"error_code": "IS.0003", "error_msg": "Arguments of path can not be null."}
    missing = requests.patch(f"{url}/v1/items/nope", json={"fields": {"title": "x"}}, timeout=30)
    assert missing.status_code == 404
    assert catalog.count() == count and catalog.get("coffee") == coffee


# -- (b) deletions ----------------------------------------------------------------------------
def test_deletions_vanish_from_results_at_once(live):
    url = live.url
    assert (
        alibaba(
            url,
            Action="AddImage",
            ProductId="P-del",
            PicName="star-del.png",
            PicContent=b64(STAR_PNG),
        ).status_code
        == 200
    )
    assert alibaba_search(url, STAR_QUERY)["Auctions"][0]["ProductId"] in ("P-del", "P-star")
    resp = alibaba(url, Action="DeleteImage", ProductId="P-del", PicName="star-del.png")
    assert resp.status_code == 200, resp.text
    assert resp.json()["Data"] == {"PicNames": ["star-del.png"]}
    assert all(a["ProductId"] != "P-del" for a in alibaba_search(url, STAR_QUERY)["Auctions"])
    nothing = alibaba(url, Action="DeleteImage", ProductId="P-del")  # documented: success
    assert nothing.json()["Success"] is True and nothing.json()["Data"]["PicNames"] == []

    # Huawei: add by file, search, delete; then delete an item of the bundle itself
    added = requests.post(
        f"{url}{HUAWEI}",
        timeout=30,
        json={"file": b64(SIGN_PNG), "path": "hw-sign", "tags": {"shelf": "3"}},
    )
    assert added.json() == {"result": "success"}
    assert (
        huawei_search(url, file=b64(SIGN_QUERY), tags={"shelf": "3"})["result"][0]["path"]
        == "hw-sign"
    )
    tagged = requests.put(
        f"{url}{HUAWEI}", json={"path": "hw-sign", "tags": {"shelf": "4"}}, timeout=30
    )
    assert tagged.json() == {"result": "success"}
    assert huawei_search(url, file=b64(SIGN_QUERY), tags={"shelf": "3"})["count"] == 0
    deleted = requests.delete(f"{url}{HUAWEI}", json={"path": "hw-sign"}, timeout=30)
    assert deleted.json() == {"result": "Success"}
    assert "hw-sign" not in [r["path"] for r in huawei_search(url, file=b64(SIGN_QUERY))["result"]]

    coffee = photo("coffee-photo.jpg")
    assert huawei_search(url, file=b64(coffee))["result"][0]["path"] == "coffee"
    resp = requests.post(f"{url}{HUAWEI}/delete", json={"path": "coffee"}, timeout=30)
    assert resp.json() == {"result": "Success"}
    assert "coffee" not in [r["path"] for r in huawei_search(url, file=b64(coffee))["result"]]
    assert "coffee" not in ids(native_search(url, coffee, top_k=50))
    assert requests.get(f"{url}/v1/items/coffee", timeout=10).status_code == 404
    by_id = requests.post(f"{url}/v1/search", json={"id": "coffee"}, timeout=30)
    assert by_id.status_code == 404
    again = requests.delete(f"{url}{HUAWEI}", json={"path": "coffee"}, timeout=30)
    assert again.status_code == 400 and again.json()["error_code"] == "IS.0001"
    native = requests.delete(f"{url}/v1/items/coffee", timeout=30)
    assert native.status_code == 404
    # put it back for the other tests
    assert put_item(url, "coffee", (CATALOG / "coffee.jpg").read_bytes()).status_code == 201


# -- (e) readiness and metrics ----------------------------------------------------------------
def test_readyz_and_metrics_report_the_live_catalog(live):
    url = live.url
    assert put_item(url, "sign-metrics", SIGN_PNG).status_code in (200, 201)
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200
    check_schema("Ready", ready.json())
    entry = ready.json()["details"]["default"]
    assert entry["ready"] and entry["writable"] and entry["error"] is None
    assert entry["pending_changes"] >= 1 and entry["delta_items"] >= 1
    assert metric(url, "lensbox_index_items", instance="default") == entry["items"]
    assert metric(url, "lensbox_pending_changes", instance="default") == entry["pending_changes"]
    assert metric(url, "lensbox_delta_items", instance="default") == entry["delta_items"]
    assert metric(url, "lensbox_index_vectors", instance="default") == 18
    assert metric(url, "lensbox_instance_ready", instance="default") == 1
    assert metric(url, "lensbox_catalog_changes_total", instance="default", op="put") >= 1
    assert metric(url, "lensbox_last_compaction_timestamp_seconds", instance="default") == 0

    report = live.manager["default"].compact()  # fold the changes into a new generation
    assert report is not None and report["items"] == entry["items"]
    assert metric(url, "lensbox_pending_changes", instance="default") == 0
    assert metric(url, "lensbox_delta_items", instance="default") == 0
    assert metric(url, "lensbox_index_vectors", instance="default") == entry["items"]
    assert (
        metric(url, "lensbox_last_compaction_timestamp_seconds", instance="default")
        > time.time() - 600
    )
    assert "sign-metrics" in ids(native_search(url, SIGN_QUERY))  # now in the bundle itself
    bundles = requests.get(f"{url}/v1/bundles", timeout=10).json()
    check_schema("BundleList", bundles)
    assert bundles["bundles"][0]["items"] == entry["items"]


def test_readyz_is_503_until_a_bundle_is_deployed(tmp_path, sample_bundle, capsys):
    from lensbox.device.cli import main as cli

    with live_server(tmp_path) as daemon:  # an empty slot: the appliance before a deploy
        url = daemon.url
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        check_schema("Ready", ready.json())
        assert "no bundle deployed" in ready.json()["details"]["default"]["error"]
        early = requests.post(
            f"{url}/v1/search",
            data=photo("coffee-photo.jpg"),
            timeout=30,
            headers={"Content-Type": "image/jpeg"},
        )
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert (
            cli(["deploy", str(sample_bundle), "--to", str(tmp_path / "bundles" / "default")]) == 0
        )
        assert _wait(lambda: requests.get(f"{url}/readyz", timeout=10).status_code == 200)
        assert ids(native_search(url, photo("coffee-photo.jpg")))[0] == "coffee"
    capsys.readouterr()


def test_read_only_boxes_refuse_changes_in_each_contract(tmp_path, sample_bundle):
    with live_server(_deployed(tmp_path, sample_bundle), read_only=True) as daemon:
        url = daemon.url
        resp = put_item(url, "x", SIGN_PNG)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "read_only"
        check_schema("Error", resp.json())
        ali = alibaba(
            url, Action="AddImage", ProductId="P", PicName="x.png", PicContent=b64(SIGN_PNG)
        )
        assert ali.status_code == 409 and ali.json()["Code"] == "InstanceStatusError"
        hw = requests.delete(f"{url}{HUAWEI}", json={"path": "coffee"}, timeout=30)
        assert hw.status_code == 502 and hw.json()["error_code"] == "APIGW.0202"
        assert ids(native_search(url, photo("coffee-photo.jpg")))[0] == "coffee"
        assert (
            requests.get(f"{url}/readyz", timeout=10).json()["details"]["default"]["writable"]
            is False
        )
    with running_server({"default": sample_bundle}) as fixed:  # no [state]: read-only
        resp = requests.delete(f"{fixed.url}/v1/items/coffee", timeout=30)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "read_only"


def test_changes_need_the_api_key_of_each_contract(tmp_path, sample_bundle):
    keys = {"require_auth": True, "api_keys": ["k-1"]}
    with live_server(_deployed(tmp_path, sample_bundle), server=keys) as daemon:
        url = daemon.url
        assert put_item(url, "x", SIGN_PNG).status_code == 401
        assert requests.delete(f"{url}/v1/items/coffee", timeout=30).status_code == 401
        ali = alibaba(url, Action="DeleteImage", ProductId="coffee")
        assert ali.status_code == 403 and ali.json()["Code"] == "NoPermission"
        hw = requests.delete(f"{url}{HUAWEI}", json={"path": "coffee"}, timeout=30)
        assert hw.json()["error_code"] == "IS.0005"
        assert "coffee" in daemon.manager["default"]
        ok = requests.put(
            f"{url}/v1/items/x",
            files={"image": ("p.png", SIGN_PNG)},
            headers={"X-API-Key": "k-1"},
            timeout=30,
        )
        assert ok.status_code == 201
        ali = alibaba(url, Action="DeleteImage", ProductId="coffee", AccessKeyId="k-1")
        assert ali.json()["Data"] == {"PicNames": ["coffee.jpg"]}
        assert "coffee" not in daemon.manager["default"]


# -- (d) hot swap under load ------------------------------------------------------------------
def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _subset_bundle(folder: Path) -> tuple[Path, set[str]]:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    names = ["astronaut", "rocket", "hubble", "chelsea-cat", "clock", "card-01"]
    photos = folder / "photos"
    photos.mkdir(parents=True)
    for name in names:
        shutil.copyfile(CATALOG / f"{name}.jpg", photos / f"{name}.jpg")
    out = folder / "subset.lbx"
    build_bundle(photos, out, BuildSettings(cache_dir=None, workers=1), progress=False)
    return out, set(names)


@pytest.mark.slow
def test_hot_swap_under_load_fails_no_request(tmp_path, sample_bundle, capsys):
    from lensbox.device.cli import main as cli
    from lensbox.device.live.slot import BundleSlot

    subset, subset_ids = _subset_bundle(tmp_path / "build")
    slot = BundleSlot(tmp_path / "bundles" / "default")
    with live_server(_deployed(tmp_path, sample_bundle)) as daemon:
        url, manager = daemon.url, daemon.manager
        query = photo("coffee-photo.jpg")
        results: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def load() -> None:
            for _ in range(150):  # bounded: at most 600 requests in all
                if stop.wait(0.005):
                    return
                try:
                    resp = requests.post(
                        f"{url}/v1/search",
                        data=query,
                        timeout=30,
                        headers={"Content-Type": "image/jpeg"},
                    )
                    top = resp.json()["hits"][0]["id"] if resp.status_code == 200 else None
                    results.append((resp.status_code, top))
                except requests.RequestException as exc:
                    results.append((0, repr(exc)))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            assert _wait(lambda: len(results) >= 20)
            first = manager["default"]
            assert cli(["deploy", str(subset), "--to", str(slot.path)]) == 0
            assert _wait(lambda: manager["default"] is not first), "the watcher swapped it in"
            swapped_at = len(results)
            assert _wait(lambda: len(results) >= swapped_at + 20)
            serving = manager["default"].base_path

            # A corrupt bundle put into the slot behind the CLI's back is refused.
            bad = tmp_path / "bad.lbx"
            shutil.copytree(subset, bad)
            with open(bad / "vectors.i8", "r+b") as fh:
                fh.truncate(100)
            slot.install_copy(bad)
            assert _wait(lambda: "refused" in (manager.ready()[1]["default"]["error"] or ""))
            refused_at = len(results)
            assert _wait(lambda: len(results) >= refused_at + 20)
            assert not manager.deploy("default", bad).ok
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        assert 60 <= len(results) <= 600
        assert [r for r in results if r[0] != 200] == []  # zero failed requests
        tops = [top for _, top in results]
        assert tops[0] == "coffee" and tops[-1] in subset_ids
        assert manager["default"].base_path == serving == slot.current()
        body = native_search(url, query, top_k=50)
        assert set(ids(body)) == subset_ids  # results come from the new bundle
        ready = requests.get(f"{url}/readyz", timeout=10).json()["details"]["default"]
        assert ready["ready"] and "kept serving" in ready["error"]
    capsys.readouterr()


# -- (c) journal replay after kill -9, (f) sd_notify ------------------------------------------
def _serve(
    config: Path,
    notify: str,
    log: Path,
    **env_extra: str,
) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": notify, **env_extra}
    cmd = [sys.executable, "-m", "lensbox.device.cli", "serve", "--config", str(config)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        pytest.fail(line + log.read_text())
    return proc, line.split(" on ")[1].split()[0]


def _notices(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline and not any(until in m for m in got):
        with contextlib.suppress(TimeoutError, socket.timeout):
            got.append(sock.recv(4096).decode())
    return got


@pytest.mark.slow
def test_restart_after_kill_replays_the_journal_and_speaks_sd_notify(tmp_path, sample_bundle):
    state = _deployed(tmp_path, sample_bundle)
    config = tmp_path / "lensbox.toml"
    config.write_text(
        f"[server]\nport = 0\ninterpreters = 1\nwarmup = false\n"
        f'[bundles]\ndefault = "{state / "bundles" / "default"}"\n'
        f'[state]\ndir = "{state}"\nwatch_interval_seconds = 0\n'
        f'[service]\nlog_format = "json"\n'
    )
    short = Path(tempfile.mkdtemp(prefix="lbx-", dir="/tmp"))  # AF_UNIX paths are short
    notify = str(short / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    log = tmp_path / "serve.log"
    proc = None
    try:
        proc, url = _serve(config, notify, log, WATCHDOG_USEC="400000")
        got = _notices(sock, "READY=1")
        assert any("READY=1" in m for m in got), got
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200  # bound & loaded
        assert any("WATCHDOG=1" in m for m in _notices(sock, "WATCHDOG=1"))  # healthy
        assert put_item(url, "sign-9", SIGN_PNG, {"title": "kept"}).status_code == 201
        proc.kill()  # SIGKILL right after the acknowledgement
        proc.wait(timeout=30)

        proc, url = _serve(config, notify, log)
        assert any("READY=1" in m for m in _notices(sock, "READY=1"))
        hits = native_search(url, SIGN_QUERY)["hits"]
        assert hits[0]["id"] == "sign-9" and hits[0]["metadata"]["title"] == "kept"
        ready = requests.get(f"{url}/readyz", timeout=10).json()["details"]["default"]
        assert ready["pending_changes"] == 1 and ready["items"] == 19
        proc.send_signal(signal.SIGHUP)  # `systemctl reload lensbox`
        reload = _notices(sock, "READY=1")
        assert any("RELOADING=1" in m for m in reload) and any("READY=1" in m for m in reload)
        assert native_search(url, SIGN_QUERY)["hits"][0]["id"] == "sign-9"
        proc.send_signal(signal.SIGTERM)
        stopping = _notices(sock, "STOPPING=1")
        assert any("STOPPING=1" in m for m in stopping), stopping
        assert proc.wait(timeout=30) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        sock.close()
        shutil.rmtree(short, ignore_errors=True)
