"""Issue 16, item 9: no request ever yields a 5xx or a body outside its contract.

Hypothesis builds requests from each contract's own request schema (Yandex, Alibaba,
Huawei, Clarifai, native: searches *and* catalog changes), mixing valid values, values of
the wrong type or range, lone-surrogate JSON escapes, broken images and random bytes, and
sends them over HTTP to a real `lensbox serve` process (a live catalog on loopback). Every
answer must be below 500 and shaped as that contract's success or error. Bounded in time:
the whole module stops sending after FUZZ_SECONDS.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from lensbox.device.live.slot import BundleSlot
from tests.hardening_support import appliance_config, serve

FUZZ_SECONDS = 45.0
HUAWEI = "/v1/p-1/{}/image"


def _img(fmt: str, w: int, h: int) -> bytes:
    rng = np.random.default_rng(w * h)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


JPEG = _img("JPEG", 160, 120)
PHOTOS = [
    JPEG,
    _img("PNG", 120, 110),
    _img("PNG", 3, 4),
    JPEG[: len(JPEG) * 2 // 3],  # truncated: header fine, data cut
    JPEG[:40],
    b"GIF89a" + b"\x00" * 20,
    b"not an image at all",
    b"",
]
B64 = [base64.b64encode(p).decode() for p in PHOTOS] + ["!!!notbase64", "data:image/png;base64,"]
SURROGATE = "\ud800"  # sent as the JSON escape \ud800

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.just(SURROGATE),
    st.sampled_from(["default", "coffee", "0", "-1", "1e400", "9999999999999999999", "x=y"]),
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
b64s = st.sampled_from(B64)
ints = st.one_of(st.integers(min_value=-5, max_value=120), st.sampled_from(["3", "x", 2**64]))
boxes = st.one_of(
    st.fixed_dictionaries(
        {k: st.integers(min_value=-10, max_value=5000) for k in ("x", "y", "width", "height")}
    ),
    st.sampled_from(["0,0,2,2", "0,0,100,100", "5,5,5", "a,b,c,d", "900,900,9,9"]),
)
ids = st.one_of(
    st.sampled_from(["coffee", "astronaut", "missing", "", SURROGATE]), st.text(max_size=8)
)


def some(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A dict with any subset of ``fields``, each value from its strategy or anything."""
    keys = st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields))
    return keys.flatmap(
        lambda chosen: st.fixed_dictionaries(
            {k: st.one_of(fields[k], fields[k], scalars, anything) for k in chosen}
        )
    )


native_filters = some(
    {
        "category_id": ints,
        "tags": st.one_of(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2), st.just("k=v;x")
        ),
        "host": st.text(max_size=10),
        "family_mode": st.sampled_from(["none", "strict", "bogus"]),
        "distinct_product": st.booleans(),
        "expression": st.sampled_from(
            ["category_id=3", "int_attr>1 AND str_attr='a'", "((", "x IN (1,2", "1=1 OR"]
        ),
        "concepts": anything,
    }
)
native_search = some(
    {
        "base64": b64s,
        "id": ids,
        "url": st.sampled_from(["http://127.0.0.1:1/x.jpg", "ftp://x", "http://10.0.0.1/a"]),
        "top_k": ints,
        "offset": ints,
        "region": boxes,
        "crop": st.booleans(),
        "filters": native_filters,
        "instance": st.sampled_from(["default", "nope"]),
    }
)
native_put = some(
    {
        "base64": b64s,
        "images": st.lists(b64s, max_size=3),
        "fields": some(
            {
                "title": st.text(max_size=8),
                "category_id": ints,
                "tags": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
                "int_attrs": st.dictionaries(st.text(max_size=3), ints, max_size=2),
                "adult": st.booleans(),
                "bogus": st.just(1),
            }
        ),
        "instance": st.sampled_from(["default", "nope"]),
    }
)
yandex = some(
    {
        "data": b64s,
        "id": ids,
        "url": st.just("http://127.0.0.1:1/a.jpg"),
        "page": ints,
        "site": st.text(max_size=8),
        "familyMode": st.sampled_from(["FAMILY_MODE_STRICT", "FAMILY_MODE_NONE", "x", 3]),
    }
)
huawei_search = some(
    {
        "file": b64s,
        "path": ids,
        "limit": ints,
        "offset": ints,
        "tags": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
        "is_crop": st.booleans(),
        "box": boxes,
    }
)
huawei_write = some({"file": b64s, "path": ids, "tags": anything})
text_params = st.one_of(
    st.sampled_from(["0", "1", "20", "-1", "abc", "9999999999999999999", "0,100,0,100", ""]),
    st.text(max_size=10),
)
alibaba = some(
    {
        "PicContent": b64s,
        "CategoryId": text_params,
        "Crop": st.sampled_from(["true", "false", "x"]),
        "Region": st.sampled_from(["0,100,0,100", "0,2,0,2", "5,1,5,1", "x", "900,950,900,950"]),
        "Num": text_params,
        "Start": text_params,
        "Filter": st.sampled_from(["int_attr>=100", 'str_attr="a"', "((", "int_attr IN (1", ""]),
        "DistinctProductId": st.sampled_from(["true", "false", "2"]),
        "ProductId": st.text(max_size=8),
        "PicName": st.text(max_size=8),
        "CustomContent": st.text(max_size=8),
        "IntAttr": text_params,
        "StrAttr": st.text(max_size=8),
    }
)
clarifai_image = some({"base64": b64s, "url": st.just("http://127.0.0.1:1/x"), "input_id": ids})
clarifai_concepts = st.lists(
    some(
        {
            "id": st.text(max_size=6),
            "name": st.text(max_size=6),
            "value": st.sampled_from([0, 1, 0.5, "x"]),
        }
    ),
    max_size=2,
)
# A rank that parses, so what follows it (filters, pagination) is reached too.
VALID_RANK = st.just({"annotation": {"data": {"image": {"base64": B64[0]}}}})
clarifai_rank = VALID_RANK | st.fixed_dictionaries(
    {
        "annotation": some(
            {
                "data": some({"image": clarifai_image, "concepts": clarifai_concepts}),
                "input_id": ids,
            }
        )
    }
)
clarifai_filter = st.fixed_dictionaries(
    {"annotation": some({"data": some({"metadata": anything, "concepts": clarifai_concepts})})}
)
clarifai_query = st.fixed_dictionaries(
    {"ranks": st.one_of(st.lists(clarifai_rank, min_size=1, max_size=2), scalars, anything)},
    optional={"filters": st.one_of(st.lists(clarifai_filter, max_size=2), scalars, anything)},
)
clarifai = st.fixed_dictionaries(
    {
        "searches": st.one_of(
            st.lists(st.fixed_dictionaries({"query": clarifai_query}), min_size=1, max_size=1),
            anything,
        ),
    },
    optional={"pagination": some({"page": ints, "per_page": ints})},
)


# -- the contract shapes ------------------------------------------------------------------
def _native_ok(status: int, body: Any) -> bool:
    if status >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        return isinstance(err, dict) and isinstance(err.get("code"), str) and "message" in err
    return isinstance(body, dict)


def _yandex_ok(status: int, body: Any) -> bool:
    if status >= 400:
        return isinstance(body.get("code"), int) and isinstance(body.get("message"), str)
    return "images" in body or "id" in body


def _alibaba_ok(status: int, body: Any) -> bool:
    if not isinstance(body.get("RequestId"), str):
        return False
    return (
        body.get("Success") is False and isinstance(body.get("Code"), str)
        if status >= 400
        else True
    )


def _huawei_ok(status: int, body: Any) -> bool:
    if status >= 400:
        return isinstance(body.get("error_code"), str) and isinstance(body.get("error_msg"), str)
    return "result" in body


def _clarifai_ok(status: int, body: Any) -> bool:
    return isinstance(body.get("status"), dict) and isinstance(body["status"].get("code"), int)


# 5xx answers the provider's own contract prescribes for a request: Alibaba Image Search
# answers an unknown Action with HTTP 500 UnsupportedOperationType (tests/fakes/alibaba.py
# models the cloud doing so); counted apart, never hidden.
DOCUMENTED_5XX = {("alibaba", "UnsupportedOperationType")}

SHAPES = {
    "native": _native_ok,
    "yandex": _yandex_ok,
    "alibaba": _alibaba_ok,
    "huawei": _huawei_ok,
    "clarifai": _clarifai_ok,
}


def _json_text(body: Any) -> bytes:
    """JSON with a lone surrogate written as the escape a client would send."""
    return json.dumps(body).encode()


class Fuzzer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.started = time.monotonic()
        self.count = 0
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}
        self.documented = 0

    @property
    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > FUZZ_SECONDS

    def send(self, contract: str, method: str, path: str, **kw: Any) -> None:
        if self.out_of_time:
            return
        resp = self.session.request(method, f"{self.url}{path}", timeout=60, **kw)
        self.count += 1
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        try:
            body = resp.json()
            shaped = isinstance(body, dict) and SHAPES[contract](resp.status_code, body)
        except ValueError:
            shaped = False
        if shaped and (contract, body.get("Code")) in DOCUMENTED_5XX:
            self.documented += 1
        elif resp.status_code >= 500 or not shaped:
            sent = kw.get("data") or kw.get("json")
            self.failures.append(
                f"{method} {path} -> {resp.status_code} {resp.text[:300]!r} for {str(sent)[:300]}"
            )


@pytest.fixture(scope="module")
def fuzzer(sample_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    slot = tmp / "bundles" / "default"
    BundleSlot(slot).install_copy(sample_bundle)
    conf = appliance_config(
        tmp / "lensbox.toml",
        tmp / "state",
        {"default": slot},
        # no url allow-list: a URL is refused (403) before any fetch, so every 5xx is ours;
        # fetch failures (502/504, the image host's fault) are tested in _urlfetch.
        "[server]\nrate_limit = 0",
    )
    with serve(conf) as srv:
        fz = Fuzzer(srv.url)
        yield fz
        fives = sum(v for k, v in fz.statuses.items() if k >= 500) - fz.documented
        print(
            f"\nfuzz: {fz.count} requests in {time.monotonic() - fz.started:.0f} s, "
            f"statuses {dict(sorted(fz.statuses.items()))}, {fives} x 5xx "
            f"(+{fz.documented} x Alibaba's documented 500 UnsupportedOperationType)"
        )


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.slow
@FUZZ
@given(body=native_search, form=st.booleans())
def test_fuzz_native_search(fuzzer: Fuzzer, body: dict, form: bool) -> None:
    if form and "base64" in body:
        photo = (
            base64.b64decode(body.pop("base64")) if body["base64"] in B64[: len(PHOTOS)] else b"x"
        )
        flat = {
            k: (v if isinstance(v, str) else json.dumps(v)).encode("utf-8", "surrogatepass")
            for k, v in body.items()
        }
        fuzzer.send("native", "POST", "/v1/search", data=flat, files={"image": ("q.jpg", photo)})
    else:
        fuzzer.send(
            "native",
            "POST",
            "/v1/search",
            data=_json_text(body),
            headers={"Content-Type": "application/json"},
        )


@pytest.mark.slow
@FUZZ
@given(body=native_put, item=ids, method=st.sampled_from(["PUT", "PATCH", "DELETE", "GET"]))
def test_fuzz_native_items(fuzzer: Fuzzer, body: dict, item: str, method: str) -> None:
    path = "/v1/items/" + requests.utils.quote(item.encode("utf-8", "surrogatepass"), safe="")
    fuzzer.send(
        "native", method, path, data=_json_text(body), headers={"Content-Type": "application/json"}
    )


@pytest.mark.slow
@FUZZ
@given(body=yandex)
def test_fuzz_yandex(fuzzer: Fuzzer, body: dict) -> None:
    fuzzer.send(
        "yandex",
        "POST",
        "/v2/image/search_by_image",
        data=_json_text(body),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.slow
@FUZZ
@given(
    params=alibaba,
    action=st.sampled_from(["SearchImageByPic", "AddImage", "DeleteImage", "Nope", ""]),
    as_json=st.booleans(),
)
def test_fuzz_alibaba(fuzzer: Fuzzer, params: dict, action: str, as_json: bool) -> None:
    params = {"Action": action, "InstanceName": "default", **params}
    if as_json:
        fuzzer.send(
            "alibaba",
            "POST",
            "/",
            data=_json_text(params),
            headers={"Content-Type": "application/json"},
        )
    else:
        clean = {k: str(v).encode("utf-8", "surrogatepass") for k, v in params.items()}
        fuzzer.send("alibaba", "POST", "/", data=clean)


@pytest.mark.slow
@FUZZ
@given(
    body=st.one_of(huawei_search, huawei_write),
    route=st.sampled_from(["/search", "", "", "/delete"]),
    method=st.sampled_from(["POST", "PUT", "DELETE"]),
    instance=st.sampled_from(["default", "nope"]),
)
def test_fuzz_huawei(fuzzer: Fuzzer, body: dict, route: str, method: str, instance: str) -> None:
    method = "POST" if route else method
    fuzzer.send(
        "huawei",
        method,
        HUAWEI.format(instance) + route,
        data=_json_text(body),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.slow
@FUZZ
@given(body=clarifai)
def test_fuzz_clarifai(fuzzer: Fuzzer, body: dict) -> None:
    fuzzer.send(
        "clarifai",
        "POST",
        "/v2/annotations/searches",
        data=_json_text(body),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.slow
@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=200), st.sampled_from(PHOTOS)),
    target=st.sampled_from(
        [
            ("native", "/v1/search"),
            ("yandex", "/v2/image/search_by_image"),
            ("alibaba", "/"),
            ("huawei", HUAWEI.format("default") + "/search"),
            ("clarifai", "/v2/annotations/searches"),
            ("native", "/v1/items/fuzz-raw"),
        ]
    ),
    ctype=st.sampled_from(
        [
            "application/json",
            "image/jpeg",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "text/plain",
        ]
    ),
)
def test_fuzz_raw_bodies(fuzzer: Fuzzer, raw: bytes, target: tuple[str, str], ctype: str) -> None:
    contract, path = target
    method = "PUT" if path.startswith("/v1/items/") else "POST"
    fuzzer.send(contract, method, path, data=raw, headers={"Content-Type": ctype})


def test_fuzz_found_no_5xx_and_no_foreign_body(fuzzer: Fuzzer) -> None:
    """Runs last in this module: the verdict over every request sent above."""
    assert fuzzer.count >= 200, f"only {fuzzer.count} requests were sent"
    assert not fuzzer.failures, "\n".join(fuzzer.failures[:20])
