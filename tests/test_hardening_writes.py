"""Issue 16, items 2, 3 and 8 (writes): invalid text and out-of-range integers are refused
at the door in each contract's error shape; an old journal holding them cannot fail a
search; a full disk answers "storage full / unavailable", keeps searches going, and
recovers by itself. A real `lensbox serve` process with a live catalog on loopback.
"""

from __future__ import annotations

import base64
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from lensbox.device.live.slot import BundleSlot
from tests.hardening_support import appliance_config, serve

ROOT = Path(__file__).resolve().parent.parent
PHOTO = (ROOT / "examples" / "sample-catalog" / "coffee.jpg").read_bytes()
HUAWEI = "/v1/p-1/default/image"
SURROGATE = '"\\ud800"'  # JSON text: valid JSON, decodes to a lone surrogate


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json(url: str, method: str, path: str, text: str) -> requests.Response:
    return requests.request(
        method,
        f"{url}{path}",
        data=text.encode(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def live(sample_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hardening-writes")
    slot = tmp / "bundles" / "default"
    BundleSlot(slot).install_copy(sample_bundle)
    conf = appliance_config(
        tmp / "lensbox.toml", tmp / "state", {"default": slot}, "[server]\nrate_limit = 0"
    )
    with serve(conf) as srv:
        yield srv


def _photo_b64() -> str:
    return b64(PHOTO)


@pytest.mark.parametrize(
    "where",
    ['{"title": %s}', '{"tags": {"k": %s}}', '{"tags": {%s: "v"}}', '{"str_attrs": {"a": %s}}'],
)
def test_native_put_refuses_a_lone_surrogate(live, where: str) -> None:
    body = f'{{"base64": "{_photo_b64()}", "fields": {where % SURROGATE}}}'
    resp = _json(live.url, "PUT", "/v1/items/sur-native", body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] in ("bad_json", "bad_param")
    assert requests.get(f"{live.url}/v1/items/sur-native", timeout=10).status_code == 404


def test_native_put_refuses_a_surrogate_in_raw_fields_query(live) -> None:
    resp = requests.put(
        f"{live.url}/v1/items/sur-raw",
        params={"fields": '{"title": "\\udfff"}'},
        data=PHOTO,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "fields", resp.text


def test_alibaba_add_refuses_a_lone_surrogate(live) -> None:
    body = (
        '{"Action": "AddImage", "InstanceName": "default", "ProductId": "P-sur", '
        f'"PicName": "s.jpg", "PicContent": "{_photo_b64()}", "CustomContent": {SURROGATE}}}'
    )
    resp = _json(live.url, "POST", "/", body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["Success"] is False and "surrogate" in resp.json()["Message"]


def test_searches_by_a_surrogate_id_are_client_errors(live) -> None:
    native = _json(live.url, "POST", "/v1/search", f'{{"id": {SURROGATE}}}')
    assert native.status_code == 400 and native.json()["error"]["code"] == "bad_json"
    yandex = _json(live.url, "POST", "/v2/image/search_by_image", f'{{"id": {SURROGATE}}}')
    assert yandex.status_code == 400 and yandex.json()["code"] == 3, yandex.text
    huawei = _json(live.url, "POST", f"{HUAWEI}/search", f'{{"path": {SURROGATE}}}')
    assert huawei.status_code == 400 and huawei.json()["error_code"].startswith("IS."), huawei.text


@pytest.mark.parametrize("value", ["9999999999999999999", "-9999999999999999999", "1e400"])
def test_alibaba_category_out_of_range_is_refused(live, value: str) -> None:
    resp = requests.post(
        f"{live.url}/",
        data={
            "Action": "AddImage",
            "InstanceName": "default",
            "ProductId": "P-big",
            "PicName": "big.jpg",
            "PicContent": _photo_b64(),
            "CategoryId": value,
        },
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["Code"] == "InvalidCategory"
    search = requests.post(
        f"{live.url}/",
        data={
            "Action": "SearchImageByPic",
            "InstanceName": "default",
            "PicContent": _photo_b64(),
            "CategoryId": value,
        },
        timeout=60,
    )
    assert search.status_code == 400 and search.json()["Code"] == "InvalidCategory"


def test_native_int_fields_out_of_range_are_refused(live) -> None:
    for fields in ({"category_id": 2**63}, {"int_attrs": {"a": -(2**63) - 1}}):
        resp = requests.put(
            f"{live.url}/v1/items/big-int",
            json={"base64": _photo_b64(), "fields": fields},
            timeout=60,
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_param"


def test_a_full_disk_answers_unavailable_and_recovers(live) -> None:
    """The journal cannot grow (RLIMIT_FSIZE on the daemon: EFBIG, the same path as
    ENOSPC): writes answer each contract's unavailable error, nothing is acknowledged,
    searches go on; once the limit is lifted writes succeed again without a restart."""
    if not sys.platform.startswith("linux"):
        pytest.skip("prlimit is Linux-only")
    pid = live.proc.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, before[1]))
    try:
        put = requests.put(
            f"{live.url}/v1/items/full-disk", json={"base64": _photo_b64()}, timeout=60
        )
        assert put.status_code == 503, put.text
        assert put.json()["error"]["code"] == "read_only" and "storage full" in put.text
        ali = requests.post(
            f"{live.url}/",
            data={
                "Action": "AddImage",
                "InstanceName": "default",
                "ProductId": "P-full",
                "PicName": "f.jpg",
                "PicContent": _photo_b64(),
            },
            timeout=60,
        )
        assert ali.status_code == 409 and ali.json()["Code"] == "InstanceStatusError", ali.text
        hw = requests.post(
            f"{live.url}{HUAWEI}", json={"file": _photo_b64(), "path": "hw-full"}, timeout=60
        )
        assert hw.status_code == 502 and hw.json()["error_code"] == "APIGW.0202", hw.text
        search = requests.post(f"{live.url}/v1/search", json={"id": "coffee"}, timeout=60)
        assert search.status_code == 200, search.text
        assert requests.get(f"{live.url}/v1/items/full-disk", timeout=10).status_code == 404
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)
    put = requests.put(f"{live.url}/v1/items/full-disk", json={"base64": _photo_b64()}, timeout=60)
    assert put.status_code == 201, put.text
    assert requests.get(f"{live.url}/v1/items/full-disk", timeout=10).status_code == 200


@pytest.mark.slow
def test_an_old_journal_with_bad_text_cannot_fail_reads(
    sample_bundle: Path, tmp_path: Path
) -> None:
    """A journal written before the door was shut (lone surrogate in a title, a category
    beyond SQLite's range): after a restart the item reads, searches list it, and a
    compaction folds it into a bundle."""
    from lensbox.device.config.loader import load_config
    from lensbox.device.live.catalog import LiveCatalog, LiveSettings
    from lensbox.device.search.engine import open_engine

    slot = tmp_path / "bundles" / "default"
    BundleSlot(slot).install_copy(sample_bundle)
    conf = appliance_config(tmp_path / "lensbox.toml", tmp_path / "state", {"default": slot})
    config = load_config(conf)
    engine = open_engine(str(BundleSlot(slot).current()), threads=1)
    catalog = LiveCatalog(
        engine,
        config.state.journal_path("default"),
        slot=BundleSlot(slot),
        settings=LiveSettings.from_config(config.state, background=False),
    )
    coffee = catalog.item_vectors("coffee")
    assert coffee is not None
    pooled_dims = (
        len(engine.bundle.projection.mean) if engine.bundle.projection else engine.bundle.dims
    )
    rng = np.random.default_rng(3)
    pooled = rng.standard_normal((1, pooled_dims)).astype(np.float32)
    # What an older lensbox journaled (its door did not check): written as it was.
    catalog._commit(
        "put",
        {
            "id": "poison",
            "fields": {
                "title": "bad \ud800 title",
                "category_id": 10**19,
                "tags": {"k\udfff": "v"},
            },
        },
        pooled,
    )
    catalog.close()
    with serve(conf) as srv:
        item = requests.get(f"{srv.url}/v1/items/poison", timeout=10)
        assert item.status_code == 200, item.text
        assert item.json()["metadata"]["title"] == "bad \ufffd title"
        assert item.json()["metadata"]["category_id"] is None
        search = requests.post(
            f"{srv.url}/v1/search", json={"id": "poison", "top_k": 20}, timeout=60
        )
        assert search.status_code == 200, search.text
        assert "poison" in [h["id"] for h in search.json()["hits"]]
        ali = requests.post(
            f"{srv.url}/",
            data={
                "Action": "SearchImageByPic",
                "InstanceName": "default",
                "PicContent": _photo_b64(),
                "Num": "100",
            },
            timeout=60,
        )
        assert ali.status_code == 200, ali.text
