"""The native API (/v1), probes, metrics, security and the `lensbox serve` command, through a
real waitress server over a real bundle, driven with `requests`."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from tests.api_support import (
    ImageHost,
    b64,
    jpeg_bytes,
    metric,
    photo,
    png_bytes,
    running_server,
)

OPENAPI = Path(__file__).resolve().parent.parent / "device" / "api" / "openapi.yaml"
SPEC = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))


def check_schema(name: str, body: object) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)


@pytest.fixture(scope="module")
def api(bundle: Path, images: ImageHost):
    with running_server({"default": bundle}, url_allow_hosts=[f"127.0.0.1:{images.port}"]) as srv:
        yield srv


def search(api, timeout: float = 30, **kwargs) -> requests.Response:
    return requests.post(f"{api.url}/v1/search", timeout=timeout, **kwargs)


def raw(api, data: bytes, params: dict | None = None) -> requests.Response:
    return search(api, data=data, params=params, headers={"Content-Type": "image/jpeg"})


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    check_schema("SearchResponse", body)
    return body


def ids(body: dict) -> list[str]:
    return [h["id"] for h in body["hits"]]


def error(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    check_schema("Error", body)
    assert body["error"]["code"] == code, body
    assert "Traceback" not in resp.text
    return body["error"]


# -- search: the three ways of sending the image ----------------------------------------
def test_raw_body_finds_its_catalog_item(api) -> None:
    resp = raw(api, photo("coffee-photo.jpg"))
    body = ok(resp)
    assert ids(body)[0] == "coffee"
    assert body["hits"][0]["metadata"]["page_url"] == "https://shop.example.com/coffee"
    assert body["hits"][0]["score"] > body["hits"][1]["score"]
    assert body["query_id"] and resp.headers["X-Lensbox-Query-Id"] == body["query_id"]
    assert body["total"] == 18 and len(body["hits"]) == 10
    assert body["query"]["image"] == {"width": 640, "height": 480}
    assert body["query"]["subjects"], "the device finds at least one subject"
    assert body["timings"]["embed_ms"] > 0


def test_multipart_upload_with_form_parameters(api) -> None:
    files = {"image": ("q.jpg", photo("chelsea-cat-photo.jpg"), "image/jpeg")}
    body = ok(search(api, files=files, data={"top_k": "3", "filters": "ignored"}))
    assert ids(body)[0] == "chelsea-cat"
    assert len(body["hits"]) == 3 and body["top_k"] == 3


def test_json_base64_and_data_uri(api) -> None:
    body = ok(search(api, json={"base64": b64(photo("rocket-photo.jpg")), "top_k": 2}))
    assert ids(body)[0] == "rocket"
    uri = "data:image/jpeg;base64," + b64(photo("rocket-photo.jpg"))
    again = ok(search(api, json={"base64": uri, "top_k": 2}))
    assert again["query_id"] == body["query_id"], "same bytes, same content-hash id"


def test_json_url_fetched_from_an_allowed_host(api, images: ImageHost) -> None:
    body = ok(search(api, json={"url": images.url("/img/astronaut-photo.jpg")}))
    assert ids(body)[0] == "astronaut"
    body = ok(search(api, json={"url": images.url("/redirect/127.0.0.1/card-02-photo.jpg")}))
    assert ids(body)[0] == "card-02"
    assert metric(api.url, "lensbox_url_fetches_total", result="ok") >= 2


def test_url_queries_are_confined_to_the_allow_list(api, images: ImageHost) -> None:
    other = images.url("/img/astronaut-photo.jpg", host="localhost")
    error(search(api, json={"url": other}), 403, "url_not_allowed")
    redirect_out = images.url("/redirect/localhost/astronaut-photo.jpg")
    assert (
        "localhost"
        in error(search(api, json={"url": redirect_out}), 403, "url_not_allowed")["message"]
    )
    error(search(api, json={"url": "file:///etc/passwd"}), 403, "url_not_allowed")
    error(search(api, json={"url": images.url("/missing")}), 502, "url_fetch_failed")
    error(search(api, json={"url": images.url("/big")}), 413, "too_many_bytes")


# -- query ids ------------------------------------------------------------------------------
def test_search_by_query_id_skips_upload_and_embedding(api) -> None:
    first = ok(raw(api, photo("card-04-photo.jpg"), {"top_k": 5}))
    embeddings = metric(api.url, "lensbox_embeddings_total")
    hits_before = metric(api.url, "lensbox_query_cache_total", result="hit")
    again = ok(search(api, json={"id": first["query_id"], "top_k": 5}))
    assert again["query"]["cached"] is True
    assert again["timings"]["embed_ms"] == 0
    assert [(h["id"], h["score"]) for h in again["hits"]] == [
        (h["id"], h["score"]) for h in first["hits"]
    ]
    assert metric(api.url, "lensbox_embeddings_total") == embeddings
    assert metric(api.url, "lensbox_query_cache_total", result="hit") == hits_before + 1
    # the same bytes again are recognised by their hash: no model run either
    repeat = ok(raw(api, photo("card-04-photo.jpg"), {"top_k": 5}))
    assert repeat["query"]["cached"] is True
    assert metric(api.url, "lensbox_embeddings_total") == embeddings


def test_catalog_item_id_is_a_query(api) -> None:
    body = ok(search(api, json={"id": "rocket", "top_k": 3}))
    assert ids(body)[0] == "rocket" and body["hits"][0]["score"] > 0.99
    assert body["query"]["cached"] is True
    error(search(api, json={"id": "no-such-thing"}), 404, "not_found")


# -- paging and filters ------------------------------------------------------------------
def test_paging_cuts_one_ranking(api) -> None:
    query_id = ok(raw(api, photo("coffee-photo.jpg")))["query_id"]
    whole = ok(search(api, json={"id": query_id, "top_k": 6}))
    first = ok(search(api, json={"id": query_id, "top_k": 3, "offset": 0}))
    second = ok(search(api, json={"id": query_id, "top_k": 3, "offset": 3}))
    assert ids(first) + ids(second) == ids(whole)
    assert first["total"] == second["total"] == 18
    last = ok(search(api, json={"id": query_id, "top_k": 5, "offset": 16}))
    assert len(last["hits"]) == 2
    error(search(api, json={"id": query_id, "top_k": 0}), 400, "bad_param")
    error(search(api, json={"id": query_id, "top_k": 101}), 400, "bad_param")
    error(search(api, json={"id": query_id, "offset": -1}), 400, "bad_param")


def test_metadata_filters(api) -> None:
    qid = ok(raw(api, photo("coffee-photo.jpg")))["query_id"]

    def run(filters: dict) -> dict:
        return ok(search(api, json={"id": qid, "top_k": 20, "filters": filters}))

    cards = run({"category_id": 7})
    assert sorted(ids(cards)) == [f"card-0{i}" for i in range(6)] and cards["total"] == 6
    space = run({"tags": {"kind": "space"}})
    assert sorted(ids(space)) == ["astronaut", "hubble", "rocket"]
    assert sorted(ids(run({"host": "example.org"}))) == ["astronaut", "hubble", "rocket"]
    assert ids(run({"host": "shop.example.com"})) == ["coffee"]
    assert sorted(ids(run({"expression": "int_attr >= 100"}))) == ["coffee", "rocket"]
    assert ids(run({"expression": 'int_attr >= 100 AND str_attr != "hot"'})) == ["rocket"]
    error(
        search(api, json={"id": qid, "filters": {"expression": "int_attr >> 1"}}), 400, "bad_filter"
    )
    error(search(api, json={"id": qid, "filters": {"colour": "red"}}), 400, "bad_param")


def test_distinct_product_and_family_mode(api) -> None:
    qid = ok(raw(api, photo("card-02-photo.jpg")))["query_id"]
    plain = ok(search(api, json={"id": qid, "top_k": 20}))
    products = [h["metadata"]["product_id"] for h in plain["hits"]]
    assert products.count("P-cards") == 6
    distinct = ok(search(api, json={"id": qid, "top_k": 20, "filters": {"distinct_product": True}}))
    products = [h["metadata"]["product_id"] for h in distinct["hits"]]
    assert products.count("P-cards") == 1 and distinct["total"] == 13
    assert ids(distinct)[0] == "card-02", "the best card represents the product"

    cat = ok(raw(api, photo("chelsea-cat-photo.jpg"), {"top_k": 20}))
    assert "chelsea-cat" in ids(cat)
    for mode in ("moderate", "strict"):
        safe = ok(
            search(api, json={"id": cat["query_id"], "top_k": 20, "filters": {"family_mode": mode}})
        )
        assert "chelsea-cat" not in ids(safe) and safe["total"] == 17


def test_concepts_include_and_exclude(api) -> None:
    item = requests.get(f"{api.url}/v1/items/coffee", timeout=10).json()
    check_schema("Item", item)
    concept = item["concepts"][0]["name"]
    qid = ok(raw(api, photo("coffee-photo.jpg")))["query_id"]
    inc = ok(
        search(api, json={"id": qid, "top_k": 20, "filters": {"concepts": {"include": [concept]}}})
    )
    assert ids(inc)[0] == "coffee"
    for hit in inc["hits"]:
        names = [
            c["name"]
            for c in requests.get(f"{api.url}/v1/items/{hit['id']}", timeout=10).json()["concepts"]
        ]
        assert concept in names
    exc = ok(
        search(api, json={"id": qid, "top_k": 20, "filters": {"concepts": {"exclude": [concept]}}})
    )
    assert "coffee" not in ids(exc)
    assert inc["total"] + exc["total"] == 18


def test_region_and_subject_crop(api) -> None:
    data = photo("coffee-photo.jpg")
    body = ok(raw(api, data, {"region": "100,80,440,320"}))
    assert body["query"]["region"] == {"x": 100, "y": 80, "width": 440, "height": 320}
    assert ids(body)[0] == "coffee"
    assert body["query_id"] != ok(raw(api, data))["query_id"], "a region is another query"
    crop = ok(search(api, json={"base64": b64(data), "crop": True}))
    assert crop["query"]["region"] == crop["query"]["subjects"][0]
    assert ids(crop)[0] == "coffee"
    error(raw(api, data, {"region": "5000,10,100,100"}), 400, "bad_region")
    error(raw(api, data, {"region": "1,2,3"}), 400, "bad_region")


# -- image and request errors ------------------------------------------------------------
def _bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge size (decoding it would need gigabytes)."""
    data = png_bytes(64, 64)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:8] + patched + data[8 + 25 :]


def test_a_request_sets_its_own_verification_budget(api) -> None:
    """`verify` = how many candidates geometric verification checks first for this request:
    0 ranks by the global descriptor and visual words alone (no hit has inliers), 1 checks
    only the head; unset, the daemon's [search] verify checks several."""

    def verified(**params: str) -> list[str]:
        files = {"image": ("q.jpg", photo("card-04-photo.jpg"), "image/jpeg")}
        body = ok(search(api, files=files, data={"top_k": "5", **params}))
        assert ids(body)[0] == "card-04"
        return [h["id"] for h in body["hits"] if h.get("inliers") is not None]

    assert len(verified()) >= 3  # the card's siblings share its template and are checked
    assert verified(verify="1") == ["card-04"]
    assert verified(verify="0") == []
    as_json = ok(search(api, json={"base64": b64(photo("card-04-photo.jpg")), "verify": 0}))
    assert all(h.get("inliers") is None for h in as_json["hits"])
    for bad in ("-1", "101", "some"):
        error(raw(api, photo("card-04-photo.jpg"), {"verify": bad}), 400, "bad_param")


def test_a_bundle_has_its_own_verification_budget(bundle: Path) -> None:
    """[search.bundles.<name>] sets one bundle's budget: the same catalog served twice,
    once checking a single candidate, verifies several items for the same photo, then
    one; a request's own `verify` still wins. (A bundle set to 0 finds no keypoints at
    all, so there a request cannot turn verification on.)"""
    sections = {"search": {"bundles": {"cheap": {"verify": 1, "verify_more": 0}}}}
    with running_server({"default": bundle, "cheap": bundle}, sections=sections) as srv:
        jpeg = b64(photo("card-04-photo.jpg"))

        def inliers(instance: str, **extra: object) -> list[int]:
            body = ok(search(srv, json={"base64": jpeg, "instance": instance, **extra}))
            assert ids(body)[0] == "card-04"
            return [h["inliers"] for h in body["hits"] if h.get("inliers") is not None]

        assert len(inliers("default")) >= 3
        assert len(inliers("cheap")) == 1
        assert inliers("cheap", verify=0) == []
        assert len(inliers("cheap", verify=3)) >= 3


def test_bad_images_get_precise_errors(api) -> None:
    error(raw(api, b"this is not an image at all"), 400, "not_an_image")
    error(raw(api, png_bytes(8, 8)), 422, "too_small")
    error(raw(api, _bomb_png(60000, 60000)), 422, "too_many_pixels")
    error(raw(api, jpeg_bytes(300, 200)[:400]), 400, "truncated_image")
    error(search(api, json={"base64": "%%%not base64%%%"}), 400, "bad_base64")
    error(search(api, json={"base64": ""}), 400, "missing_image")
    error(search(api, json={"base64": b64(b"x"), "id": "coffee"}), 400, "ambiguous_image")
    error(search(api, data=b"", headers={"Content-Type": "image/jpeg"}), 400, "missing_image")
    error(search(api, data=b"{nope", headers={"Content-Type": "application/json"}), 400, "bad_json")
    error(search(api, json=[1, 2]), 400, "bad_json")
    error(search(api, files={"other": ("a", b"b")}), 400, "missing_image")


def test_unknown_things_are_404_in_the_native_shape(api) -> None:
    error(search(api, json={"id": "coffee", "instance": "nope"}), 404, "unknown_instance")
    error(requests.get(f"{api.url}/v1/items/nope", timeout=10), 404, "not_found")
    error(requests.get(f"{api.url}/v1/nothing-here", timeout=10), 404, "route_not_found")
    error(requests.get(f"{api.url}/v1/search", timeout=10), 405, "method_not_allowed")


def test_a_crash_is_an_internal_error_without_a_traceback(api) -> None:
    service = api.app.extensions["lensbox"]["service"]

    def boom(query):
        raise RuntimeError("secret internals")

    original, service.run = service.run, boom
    try:
        err = error(raw(api, photo("coffee-photo.jpg")), 500, "internal")
        assert "secret" not in err["message"]
    finally:
        service.run = original


# -- the other endpoints -----------------------------------------------------------------
def test_bundles_items_probes_and_openapi(api, bundle: Path) -> None:
    bundles = requests.get(f"{api.url}/v1/bundles", timeout=10).json()
    check_schema("BundleList", bundles)
    assert [b["name"] for b in bundles["bundles"]] == ["default"]
    assert bundles["bundles"][0]["items"] == 18 and bundles["bundles"][0]["path"] == str(bundle)
    item = requests.get(f"{api.url}/v1/items/chelsea-cat", timeout=10).json()
    check_schema("Item", item)
    assert item["metadata"]["adult"] is True and item["metadata"]["tags"] == {"kind": "animal"}
    health = requests.get(f"{api.url}/healthz", timeout=10)
    assert health.status_code == 200
    check_schema("Health", health.json())
    ready = requests.get(f"{api.url}/readyz", timeout=10)
    assert ready.status_code == 200
    check_schema("Ready", ready.json())
    spec = requests.get(f"{api.url}/v1/openapi.yaml", timeout=10)
    assert yaml.safe_load(spec.text)["paths"].keys() >= {"/v1/search", "/v1/items/{id}"}


def test_metrics_exposition(api) -> None:
    raw(api, photo("coffee-photo.jpg"))
    requests.get(f"{api.url}/v1/items/nope", timeout=10)
    text = requests.get(f"{api.url}/metrics", timeout=10)
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE lensbox_http_requests_total counter" in text.text
    assert "# TYPE lensbox_http_request_duration_seconds histogram" in text.text
    assert metric(api.url, "lensbox_http_requests_total", route="/v1/search", status="200") > 0
    assert (
        metric(
            api.url, "lensbox_http_requests_total", route="/v1/items/<path:item_id>", status="404"
        )
        >= 1
    )
    count = metric(api.url, "lensbox_http_request_duration_seconds_count", route="/v1/search")
    inf = metric(
        api.url, "lensbox_http_request_duration_seconds_bucket", route="/v1/search", le="+Inf"
    )
    assert count == inf > 0
    assert metric(api.url, "lensbox_embed_seconds_count") > 0
    assert metric(api.url, "lensbox_search_seconds_count") > 0


# -- security ----------------------------------------------------------------------------
def test_api_keys_when_required(bundle: Path) -> None:
    with running_server({"default": bundle}, require_auth=True, api_keys=["k-one", "k-two"]) as a:
        error(requests.get(f"{a.url}/v1/bundles", timeout=10), 401, "unauthenticated")
        error(
            requests.get(f"{a.url}/v1/bundles", headers={"X-API-Key": "nope"}, timeout=10),
            403,
            "forbidden",
        )
        error(
            requests.get(
                f"{a.url}/v1/bundles", headers={"Authorization": "Basic k-one"}, timeout=10
            ),
            401,
            "unauthenticated",
        )
        assert (
            requests.get(
                f"{a.url}/v1/bundles", headers={"Authorization": "Bearer k-one"}, timeout=10
            ).status_code
            == 200
        )
        assert (
            requests.get(
                f"{a.url}/v1/bundles", headers={"X-API-Key": "k-two"}, timeout=10
            ).status_code
            == 200
        )
        assert requests.get(f"{a.url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{a.url}/metrics", timeout=10).status_code == 200


def test_non_loopback_without_keys_is_refused_at_startup() -> None:
    from pydantic import ValidationError

    from lensbox.device.config.server import ServerConfig

    with pytest.raises(ValidationError, match="api_keys"):
        ServerConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="api_keys"):
        ServerConfig(require_auth=True)
    assert ServerConfig(host="0.0.0.0", api_keys=("k",)).auth_required
    assert not ServerConfig(host="0.0.0.0", require_auth=False).auth_required
    assert not ServerConfig().auth_required


def test_rate_limit_answers_429_with_retry_after(bundle: Path) -> None:
    with running_server({"default": bundle}, rate_limit=0.5, rate_burst=2) as a:
        codes = [requests.get(f"{a.url}/v1/bundles", timeout=10) for _ in range(3)]
        assert [r.status_code for r in codes[:2]] == [200, 200]
        err = error(codes[2], 429, "throttled")
        assert "retry" in err["message"]
        assert int(codes[2].headers["Retry-After"]) >= 1
        assert requests.get(f"{a.url}/healthz", timeout=10).status_code == 200


def test_request_body_cap(bundle: Path) -> None:
    with running_server({"default": bundle}, max_request_bytes=64 * 1024) as a:
        big = photo("coffee-photo.jpg") * 2
        resp = requests.post(
            f"{a.url}/v1/search", data=big, headers={"Content-Type": "image/jpeg"}, timeout=10
        )
        error(resp, 413, "request_too_large")


# -- concurrency -------------------------------------------------------------------------
def test_concurrent_requests_get_the_answers_of_sequential_ones(bundle: Path) -> None:
    names = ["coffee-photo.jpg", "rocket-photo.jpg", "card-04-photo.jpg", "astronaut-photo.jpg"]
    with running_server({"default": bundle}, interpreters=2, threads=4, query_cache_size=0) as a:

        def one(name: str) -> list:
            resp = requests.post(
                f"{a.url}/v1/search",
                data=photo(name),
                timeout=60,
                headers={"Content-Type": "image/jpeg"},
                params={"top_k": 5},
            )
            assert resp.status_code == 200, resp.text
            return [(h["id"], h["score"]) for h in resp.json()["hits"]]

        expected = {name: one(name) for name in names}
        results: list[tuple[str, list]] = []
        errors: list[BaseException] = []

        def worker(name: str) -> None:
            try:
                results.append((name, one(name)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(names[i % 4],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and len(results) == 8
        for name, hits in results:
            assert hits == expected[name], name
        assert metric(a.url, "lensbox_interpreter_wait_seconds_count") == 12


# -- the command -------------------------------------------------------------------------
def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "lensbox.device.cli", "serve", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        pytest.fail(line + proc.stderr.read())
    return proc, line.split(" on ")[1].split()[0]


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=15) == 0, "SIGTERM is a clean shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_lensbox_serve_with_just_a_bundle(bundle: Path) -> None:
    proc, url = _serve(str(bundle), "--port", "0")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/readyz", timeout=10).json()["instances"] == ["default"]
        hits = requests.post(
            f"{url}/v1/search",
            data=photo("coffee-photo.jpg"),
            timeout=30,
            headers={"Content-Type": "image/jpeg"},
        ).json()["hits"]
        assert hits[0]["id"] == "coffee"
    finally:
        _stop(proc)


def test_lensbox_serve_with_a_config_file(bundle: Path, tmp_path: Path) -> None:
    config = tmp_path / "lensbox.toml"
    config.write_text(
        f'[server]\nport = 0\nwarmup = false\napi_keys = ["cfg-key"]\nrequire_auth = true\n'
        f'\n[bundles]\nshop = "{bundle}"\n'
    )
    proc, url = _serve("--config", str(config))
    try:
        assert requests.get(f"{url}/readyz", timeout=10).json()["instances"] == ["default", "shop"]
        body = {"id": "coffee", "instance": "shop"}
        assert requests.post(f"{url}/v1/search", json=body, timeout=30).status_code == 401
        hits = requests.post(
            f"{url}/v1/search", json=body, timeout=30, headers={"X-API-Key": "cfg-key"}
        ).json()["hits"]
        assert hits[0]["id"] == "coffee"
    finally:
        _stop(proc)


def test_lensbox_serve_reports_bad_setups(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lensbox.device.cli", "serve", str(tmp_path / "none.lbx")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no such bundle" in done.stderr
    done = subprocess.run(
        [*cmd[:-1], "--host", "0.0.0.0", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "api_keys" in done.stderr
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no bundle" in done.stderr
    assert time.perf_counter() - started < 30
