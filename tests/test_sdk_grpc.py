"""The gRPC listener (TLS on, keys required) with the providers' official gRPC clients:

* Yandex: ``yandex-ai-studio-sdk`` (``sdk.search_api.by_image``: endpoint discovery, then
  ``ImageSearchService/SearchByImage``, API key as ``Api-Key``) and the generated stub of
  ``yandexcloud`` (``ImageSearchServiceStub``) with ``Api-Key`` / ``Bearer`` metadata;
* Clarifai: ``clarifai-grpc``'s ``ClarifaiChannel.get_grpc_channel`` + ``V2Stub``
  (``PostAnnotationsSearches``, ``Key`` metadata).

Only the endpoint (and the box's certificate, as any private TLS endpoint needs) changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk_support import API_KEY, expect, query_photo, record, serve_box

grpc = pytest.importorskip("grpc", reason="the grpc extra")
pytest.importorskip("clarifai_grpc", reason="the clients extra")
pytest.importorskip("yandex_ai_studio_sdk", reason="the clients extra")
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel  # noqa: E402
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc  # noqa: E402
from clarifai_grpc.grpc.api.status import status_code_pb2  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402
from yandex.cloud.searchapi.v2 import img_search_service_pb2 as ya  # noqa: E402
from yandex.cloud.searchapi.v2.img_search_service_pb2_grpc import (  # noqa: E402
    ImageSearchServiceStub,
)

YA_STUDIO = "yandex-ai-studio-sdk"
YA_CLOUD = "yandexcloud"
CLARIFAI = "clarifai-grpc"
expect(
    "Yandex",
    YA_STUDIO,
    "search_api.by_image run / run_from_id / next_page (gRPC, TLS, Api-Key)",
    "by_image site and family_mode filters",
    "gRPC status for a wrong key (UNAUTHENTICATED / PERMISSION_DENIED)",
)
expect(
    "Yandex",
    YA_CLOUD,
    "ImageSearchServiceStub.SearchByImage (gRPC, TLS, Api-Key and Bearer)",
    "missing oneof -> INVALID_ARGUMENT; oversize message -> RESOURCE_EXHAUSTED",
    "yandexcloud.SDK().client(ImageSearchServiceStub)",
)
expect(
    "Clarifai",
    CLARIFAI,
    "gRPC channel PostAnnotationsSearches by bytes / input_id / concepts, paging",
    "gRPC channel metadata filter with Filter.negate",
    "gRPC channel status codes (bad key, invalid search)",
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, bundle: Path):
    with serve_box(tmp_path_factory.mktemp("sdk-grpc"), bundle, grpc=True, tls=True) as b:
        yield b


def channel(box) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(box.cert.read_bytes())
    return grpc.secure_channel(box.grpc, creds)


# -- Yandex ------------------------------------------------------------------------------
def studio(box, key: str = API_KEY):
    from yandex_ai_studio_sdk import AIStudio
    from yandex_ai_studio_sdk.auth import APIKeyAuth

    return AIStudio(
        folder_id="b1gtestfolder", auth=APIKeyAuth(key), endpoint=box.grpc, verify=box.cert
    )


def test_yandex_ai_studio_by_image(box) -> None:
    search = studio(box).search_api.by_image()
    first = search.run(query_photo())
    assert len(first.images) == 10 and first.cbir_id
    assert first.images[0].page_url == "https://shop.example.com/coffee"
    assert first.images[0].url.startswith("http://127.0.0.1:")  # the HTTP daemon's item link
    again = search.run_from_id(first.cbir_id)
    assert [i.page_url for i in again.images] == [i.page_url for i in first.images]
    second = first.next_page()
    assert second.page == 1 and second.images
    assert not {i.page_url for i in second.images} & {i.page_url for i in first.images}
    record(
        "Yandex",
        YA_STUDIO,
        "search_api.by_image run / run_from_id / next_page (gRPC, TLS, Api-Key)",
    )


def test_yandex_ai_studio_filters(box) -> None:
    sdk = studio(box)
    space = sdk.search_api.by_image(site="space.example.org").run(query_photo())
    assert {i.host for i in space.images} == {"space.example.org"}
    strict = sdk.search_api.by_image(family_mode="strict").run(query_photo())
    none = sdk.search_api.by_image(family_mode="none").run(query_photo())
    # the cat is marked adult in the catalog: gone under the strict family filter
    assert not any("chelsea-cat" in i.page_url for i in strict.images)
    assert len(none.images) == 10
    record("Yandex", YA_STUDIO, "by_image site and family_mode filters")


def test_yandex_ai_studio_wrong_key(box) -> None:
    from yandex_ai_studio_sdk.exceptions import AioRpcError

    with pytest.raises(AioRpcError) as err:
        studio(box, key="not-a-key").search_api.by_image().run(query_photo())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    record("Yandex", YA_STUDIO, "gRPC status for a wrong key (UNAUTHENTICATED / PERMISSION_DENIED)")


def test_yandexcloud_stub(box) -> None:
    stub = ImageSearchServiceStub(channel(box))
    request = ya.ImageSearchByImageRequest(data=query_photo(), folder_id="b1gtestfolder", page=0)
    resp = stub.SearchByImage(request, metadata=(("authorization", f"Api-Key {API_KEY}"),))
    assert resp.images[0].page_url == "https://shop.example.com/coffee"
    assert resp.images[0].format == ya.ImageSpec.IMAGE_FORMAT_JPEG
    assert resp.max_page >= 1 and resp.id
    by_id = stub.SearchByImage(
        ya.ImageSearchByImageRequest(id=resp.id, page=1),
        metadata=(("authorization", f"Bearer {API_KEY}"),),
    )
    assert by_id.page == 1 and by_id.images
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchByImage(request)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    record(
        "Yandex", YA_CLOUD, "ImageSearchServiceStub.SearchByImage (gRPC, TLS, Api-Key and Bearer)"
    )


def test_yandex_bad_messages(box) -> None:
    stub = ImageSearchServiceStub(channel(box))
    key = (("authorization", f"Api-Key {API_KEY}"),)
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchByImage(ya.ImageSearchByImageRequest(folder_id="b1g", page=0), metadata=key)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = ya.ImageSearchByImageRequest(data=b"\0" * (30 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchByImage(huge, metadata=key)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    junk = ya.ImageSearchByImageRequest(data=b"not an image at all")
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchByImage(junk, metadata=key)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    record(
        "Yandex",
        YA_CLOUD,
        "missing oneof -> INVALID_ARGUMENT; oversize message -> RESOURCE_EXHAUSTED",
    )


# -- Clarifai ----------------------------------------------------------------------------
def clarifai_stub(box) -> service_pb2_grpc.V2Stub:
    ch = ClarifaiChannel.get_grpc_channel(base=box.grpc, root_certificates_path=str(box.cert))
    return service_pb2_grpc.V2Stub(ch)


KEY = (("authorization", f"Key {API_KEY}"),)
APP = resources_pb2.UserAppIDSet(user_id="me", app_id="default")


def _search(stub, *ranks, filters=(), page: int = 1, per_page: int = 5, metadata=KEY):
    query = resources_pb2.Query(ranks=list(ranks), filters=list(filters))
    return stub.PostAnnotationsSearches(
        service_pb2.PostAnnotationsSearchesRequest(
            user_app_id=APP,
            searches=[resources_pb2.Search(query=query)],
            pagination=service_pb2.Pagination(page=page, per_page=per_page),
        ),
        metadata=metadata,
    )


def _image_rank(data: bytes) -> resources_pb2.Rank:
    image = resources_pb2.Image(base64=data)
    return resources_pb2.Rank(
        annotation=resources_pb2.Annotation(data=resources_pb2.Data(image=image))
    )


def test_clarifai_grpc_search(box) -> None:
    stub = clarifai_stub(box)
    resp = _search(stub, _image_rank(query_photo()))
    assert resp.status.code == status_code_pb2.SUCCESS, resp.status
    assert resp.hits[0].input.id == "coffee" and len(resp.hits) == 5
    page2 = _search(stub, _image_rank(query_photo()), page=2)
    assert not {h.input.id for h in page2.hits} & {h.input.id for h in resp.hits}
    by_id = _search(
        stub, resources_pb2.Rank(annotation=resources_pb2.Annotation(input_id="rocket"))
    )
    assert by_id.hits[0].input.id == "rocket"
    concept = resp.hits[0].annotation.data.concepts[0]
    positive = resources_pb2.Concept(id=concept.id, value=1.0)
    by_concept = _search(
        stub,
        resources_pb2.Rank(
            annotation=resources_pb2.Annotation(data=resources_pb2.Data(concepts=[positive]))
        ),
    )
    assert by_concept.status.code == status_code_pb2.SUCCESS
    assert "coffee" in {h.input.id for h in by_concept.hits}
    record(
        "Clarifai",
        CLARIFAI,
        "gRPC channel PostAnnotationsSearches by bytes / input_id / concepts, paging",
    )


def test_clarifai_grpc_negated_filter(box) -> None:
    stub = clarifai_stub(box)
    space = struct_pb2.Struct()
    space.update({"kind": "space"})
    only = resources_pb2.Filter(
        annotation=resources_pb2.Annotation(data=resources_pb2.Data(metadata=space))
    )
    not_space = resources_pb2.Filter(
        annotation=resources_pb2.Annotation(data=resources_pb2.Data(metadata=space)), negate=True
    )
    kept = _search(stub, _image_rank(query_photo()), filters=[only], per_page=20)
    assert {h.input.id for h in kept.hits} == {"astronaut", "rocket", "hubble"}
    dropped = _search(stub, _image_rank(query_photo()), filters=[not_space], per_page=20)
    ids = {h.input.id for h in dropped.hits}
    assert ids and not ids & {"astronaut", "rocket", "hubble"} and "coffee" in ids
    record("Clarifai", CLARIFAI, "gRPC channel metadata filter with Filter.negate")


def test_clarifai_grpc_status_codes(box) -> None:
    stub = clarifai_stub(box)
    bad = _search(stub, _image_rank(query_photo()), metadata=(("authorization", "Key nope"),))
    assert bad.status.code == status_code_pb2.CONN_KEY_INVALID
    missing = _search(stub, _image_rank(query_photo()), metadata=())
    assert missing.status.code == status_code_pb2.CONN_KEY_NOT_FOUND
    empty = _search(stub, resources_pb2.Rank())
    assert empty.status.code == status_code_pb2.SEARCH_INVALID_REQUEST
    record("Clarifai", CLARIFAI, "gRPC channel status codes (bad key, invalid search)")


def test_yandexcloud_sdk_client_cannot_make_a_searchapi_stub(box) -> None:
    """yandexcloud.SDK.client() maps a stub's module to a service id through its own
    _supported_modules list, which has no yandex.cloud.searchapi entry: it raises before
    any connection, whatever the endpoint. The stub itself works (test_yandexcloud_stub)."""
    import yandexcloud

    sdk = yandexcloud.SDK(iam_token=API_KEY, endpoint=box.grpc)
    with pytest.raises(RuntimeError, match="Unknown service"):
        sdk.client(ImageSearchServiceStub, endpoint=box.grpc, insecure=True)
    record(
        "Yandex",
        YA_CLOUD,
        "yandexcloud.SDK().client(ImageSearchServiceStub)",
        "cannot: the SDK raises `Unknown service` before connecting (yandexcloud/_sdk.py "
        "`_service_for_ctor`: no `yandex.cloud.searchapi` in `_supported_modules`); use "
        "the generated stub on a channel to the box",
    )
