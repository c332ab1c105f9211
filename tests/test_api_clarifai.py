"""Clarifai v2 `POST /v2/annotations/searches` (ranks by image, input id and concepts),
shaped as documented, through a real server over a real bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.api_support import (
    ImageHost,
    b64,
    metric,
    photo,
    running_server,
)


@pytest.fixture(scope="module")
def api(bundle: Path, images: ImageHost):
    with running_server(
        {"default": bundle, "my-app": bundle}, url_allow_hosts=[f"127.0.0.1:{images.port}"]
    ) as srv:
        yield srv


def image_rank(**image: str) -> dict:
    return {"annotation": {"data": {"image": image}}}


def concept_rank(*concepts: tuple[str, int], key: str = "name") -> dict:
    return {"annotation": {"data": {"concepts": [{key: c, "value": v} for c, v in concepts]}}}


def searches(
    *ranks: dict,
    filters: list | None = None,
    pagination: dict | None = None,
    app: str | None = None,
) -> dict:
    query: dict = {"ranks": list(ranks)}
    if filters:
        query["filters"] = filters
    body: dict = {"searches": [{"query": query}]}
    if pagination:
        body["pagination"] = pagination
    if app:
        body["user_app_id"] = {"user_id": "me", "app_id": app}
    return body


def post(api, body, path: str = "/v2/annotations/searches", headers=None) -> requests.Response:
    return requests.post(f"{api.url}{path}", json=body, headers=headers, timeout=30)


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"]["code"] == 10000 and body["status"]["description"] == "Ok"
    for hit in body["hits"]:
        assert set(hit) == {"score", "input", "annotation"} and 0 <= hit["score"] <= 1
        assert hit["annotation"]["input_id"] == hit["input"]["id"]
        assert hit["input"]["data"]["image"]["url"]
    return body


def failed(resp: requests.Response, http: int, code: int) -> dict:
    assert resp.status_code == http, resp.text
    status = resp.json()["status"]
    assert status["code"] == code, status
    assert status["description"] and status["req_id"]
    return status


def inputs(body: dict) -> list[str]:
    return [h["input"]["id"] for h in body["hits"]]


def concepts_of(api, item: str) -> list[str]:
    return [
        c["name"] for c in requests.get(f"{api.url}/v1/items/{item}", timeout=10).json()["concepts"]
    ]


def test_image_rank_by_base64_and_url(api, images: ImageHost) -> None:
    body = ok(post(api, searches(image_rank(base64=b64(photo("coffee-photo.jpg"))))))
    assert inputs(body)[0] == "coffee" and len(body["hits"]) == 18
    hit = body["hits"][0]
    assert hit["input"]["data"]["metadata"] == {"kind": "drink", "color": "brown"}
    assert [c["name"] for c in hit["annotation"]["data"]["concepts"]] == concepts_of(api, "coffee")
    body = ok(post(api, searches(image_rank(url=images.url("/img/chelsea-cat-photo.jpg")))))
    assert inputs(body)[0] == "chelsea-cat"
    failed(
        post(api, searches(image_rank(url=images.url("/img/x.jpg", host="localhost")))), 400, 30106
    )
    failed(post(api, searches(image_rank(url=images.url("/missing")))), 400, 30002)


def test_input_id_rank_reuses_the_query(api) -> None:
    resp = post(api, searches(image_rank(base64=b64(photo("astronaut-photo.jpg")))))
    first = ok(resp)
    embeddings = metric(api.url, "lensbox_embeddings_total")
    query_id = resp.headers["X-Lensbox-Query-Id"]
    again = ok(post(api, searches({"annotation": {"input_id": query_id}})))
    assert [(h["input"]["id"], h["score"]) for h in again["hits"]] == [
        (h["input"]["id"], h["score"]) for h in first["hits"]
    ]
    assert metric(api.url, "lensbox_embeddings_total") == embeddings
    item = ok(post(api, searches({"annotation": {"input_id": "astronaut"}})))
    assert inputs(item)[0] == "astronaut" and item["hits"][0]["score"] > 0.99
    failed(post(api, searches({"annotation": {"input_id": "nobody"}})), 404, 30102)


def test_concept_ranks_include_and_exclude(api) -> None:
    concept = concepts_of(api, "coffee")[0]
    include = ok(post(api, searches(concept_rank((concept, 1)))))
    assert "coffee" in inputs(include)
    for hit in include["hits"]:
        assert concept in [c["name"] for c in hit["annotation"]["data"]["concepts"]]
    scores = [h["score"] for h in include["hits"]]
    assert scores == sorted(scores, reverse=True)
    by_id = ok(post(api, searches(concept_rank((concept, 1), key="id"))))
    assert inputs(by_id) == inputs(include), "a name in `id` works as well"
    exclude = ok(post(api, searches(concept_rank((concept, 0)))))
    assert "coffee" not in inputs(exclude)
    assert len(include["hits"]) + len(exclude["hits"]) == 18
    both = ok(post(api, searches(concept_rank((concept, 1)), concept_rank((concept, 0)))))
    assert both["hits"] == []


def test_image_rank_combined_with_concepts(api) -> None:
    concept = concepts_of(api, "coffee")[0]
    data = b64(photo("coffee-photo.jpg"))
    plain = inputs(ok(post(api, searches(image_rank(base64=data)))))
    without = ok(post(api, searches(image_rank(base64=data), concept_rank((concept, 0)))))
    assert "coffee" not in inputs(without)
    assert inputs(without) == [i for i in plain if concept not in concepts_of(api, i)]
    only = ok(post(api, searches(image_rank(base64=data), concept_rank((concept, 1)))))
    assert inputs(only)[0] == "coffee"
    meta = ok(
        post(
            api,
            searches(
                image_rank(base64=data),
                filters=[{"annotation": {"data": {"metadata": {"kind": "card"}}}}],
            ),
        )
    )
    assert sorted(inputs(meta)) == [f"card-0{i}" for i in range(6)]


def test_pagination_and_apps(api) -> None:
    query = image_rank(base64=b64(photo("card-04-photo.jpg")))
    whole = inputs(ok(post(api, searches(query, pagination={"page": 1, "per_page": 6}))))
    page2 = inputs(ok(post(api, searches(query, pagination={"page": 2, "per_page": 3}))))
    assert page2 == whole[3:6]
    scoped = post(
        api,
        searches(query, pagination={"per_page": 3}),
        path="/v2/users/me/apps/my-app/annotations/searches",
    )
    assert inputs(ok(scoped))[0] == "card-04"
    assert inputs(ok(post(api, searches(query, app="my-app"))))[0] == "card-04"
    failed(
        post(api, searches(query), path="/v2/users/me/apps/nope/annotations/searches"), 404, 11101
    )
    failed(post(api, searches(query, app="nope")), 404, 11101)
    failed(post(api, searches(query, pagination={"page": 0})), 400, 40002)


def test_bad_requests(api) -> None:
    failed(post(api, {}), 400, 40002)
    failed(post(api, {"searches": [{"query": {"ranks": []}}]}), 400, 40002)
    failed(post(api, searches({"annotation": {"data": {}}})), 400, 40002)
    failed(post(api, searches(concept_rank(("cat", "yes")))), 400, 40002)
    failed(post(api, searches(image_rank(base64="*** not base64 ***"))), 400, 30101)
    failed(post(api, searches(image_rank(base64=b64(b"GIF87a? no")))), 400, 30101)
    resp = requests.post(
        f"{api.url}/v2/annotations/searches",
        data=b"[",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    failed(resp, 400, 11100)
    failed(requests.get(f"{api.url}/v2/annotations/searches", timeout=10), 405, 11103)


def test_key_auth_and_throttling(bundle: Path) -> None:
    with running_server(
        {"default": bundle}, require_auth=True, api_keys=["ck"], rate_limit=0.5, rate_burst=2
    ) as a:
        body = searches({"annotation": {"input_id": "coffee"}})
        failed(post(a, body), 401, 11009)
        failed(post(a, body, headers={"Authorization": "Key other"}), 401, 11008)
        assert inputs(ok(post(a, body, headers={"Authorization": "Key ck"})))[0] == "coffee"
        assert ok(post(a, body, headers={"Authorization": "Key ck"}))
        failed(post(a, body, headers={"Authorization": "Key ck"}), 429, 11005)
