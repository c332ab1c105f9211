"""Clarifai's official client (clarifai-grpc) over its JSON channel against a live
`lensbox serve` (keys required): only the base URL changes. The gRPC channel is in
tests/test_sdk_grpc.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk_support import API_KEY, expect, query_photo, record, serve_box

pytest.importorskip("clarifai_grpc", reason="the clients extra")
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import struct_pb2

PKG = "clarifai-grpc"
expect(
    "Clarifai",
    PKG,
    "JSON channel PostAnnotationsSearches by bytes / input_id / concepts, paging",
    "JSON channel metadata filter with Filter.negate",
    "JSON channel status codes (bad key, invalid search)",
)
APP = resources_pb2.UserAppIDSet(user_id="me", app_id="default")
KEY = (("authorization", f"Key {API_KEY}"),)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, bundle: Path):
    with serve_box(tmp_path_factory.mktemp("sdk-clarifai"), bundle) as b:
        yield b


def stub(box) -> service_pb2_grpc.V2Stub:
    return service_pb2_grpc.V2Stub(ClarifaiChannel.get_json_channel(base_url=box.url))


def search(box, *ranks, filters=(), page: int = 1, per_page: int = 5, metadata=KEY):
    query = resources_pb2.Query(ranks=list(ranks), filters=list(filters))
    return stub(box).PostAnnotationsSearches(
        service_pb2.PostAnnotationsSearchesRequest(
            user_app_id=APP,
            searches=[resources_pb2.Search(query=query)],
            pagination=service_pb2.Pagination(page=page, per_page=per_page),
        ),
        metadata=metadata,
    )


def image_rank(data: bytes) -> resources_pb2.Rank:
    image = resources_pb2.Image(base64=data)
    data_ = resources_pb2.Data(image=image)
    return resources_pb2.Rank(annotation=resources_pb2.Annotation(data=data_))


def test_search_paging_input_id_concepts(box) -> None:
    first = search(box, image_rank(query_photo()))
    assert first.status.code == status_code_pb2.SUCCESS, first.status
    assert first.hits[0].input.id == "coffee" and len(first.hits) == 5
    second = search(box, image_rank(query_photo()), page=2)
    assert len(second.hits) == 5
    assert not {h.input.id for h in second.hits} & {h.input.id for h in first.hits}
    by_id = search(box, resources_pb2.Rank(annotation=resources_pb2.Annotation(input_id="hubble")))
    assert by_id.hits[0].input.id == "hubble"
    concept = first.hits[0].annotation.data.concepts[0]
    wanted = resources_pb2.Data(concepts=[resources_pb2.Concept(id=concept.id, value=1.0)])
    by_concept = search(box, resources_pb2.Rank(annotation=resources_pb2.Annotation(data=wanted)))
    assert "coffee" in {h.input.id for h in by_concept.hits}
    record(
        "Clarifai",
        PKG,
        "JSON channel PostAnnotationsSearches by bytes / input_id / concepts, paging",
    )


def test_negated_metadata_filter(box) -> None:
    space = struct_pb2.Struct()
    space.update({"kind": "space"})
    ann = resources_pb2.Annotation(data=resources_pb2.Data(metadata=space))
    kept = search(
        box, image_rank(query_photo()), filters=[resources_pb2.Filter(annotation=ann)], per_page=20
    )
    assert {h.input.id for h in kept.hits} == {"astronaut", "rocket", "hubble"}
    flipped = resources_pb2.Filter(annotation=ann, negate=True)
    rest = search(box, image_rank(query_photo()), filters=[flipped], per_page=20)
    ids = {h.input.id for h in rest.hits}
    assert "coffee" in ids and not ids & {"astronaut", "rocket", "hubble"}
    assert len(ids) == 15  # the 18 photos less the three space ones
    record("Clarifai", PKG, "JSON channel metadata filter with Filter.negate")


def test_status_codes(box) -> None:
    # (the JSON channel itself refuses to send a request without a key)
    bad = search(box, image_rank(query_photo()), metadata=(("authorization", "Key nope"),))
    assert bad.status.code == status_code_pb2.CONN_KEY_INVALID
    empty = search(box, resources_pb2.Rank())
    assert empty.status.code == status_code_pb2.SEARCH_INVALID_REQUEST
    record("Clarifai", PKG, "JSON channel status codes (bad key, invalid search)")
