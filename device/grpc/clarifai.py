"""``clarifai.api.V2`` over gRPC: ``PostAnnotationsSearches`` (the search the HTTP side
serves at ``/v2/annotations/searches``); every other V2 RPC answers UNIMPLEMENTED.

The request becomes the REST body (the proto3 JSON mapping with the proto's field names,
image bytes as base64); one difference of the wire format is made explicit: a concept's
``value`` left unset is 0.0 in proto3 (a *negative* concept), where the REST body's missing
value means 1. The REST answer is parsed back into ``MultiSearchResponse``.

Errors stay Clarifai's: like Clarifai's own gRPC API, a failed request is an OK RPC whose
response carries ``status.code`` (11009 no key, 11008 bad key, 40002 invalid search, ...),
which is what the official clients check. Metadata: ``authorization: Key <key>``.
"""

from __future__ import annotations

from typing import Any

import grpc
from clarifai_grpc.grpc.api import service_pb2, service_pb2_grpc
from google.protobuf import json_format

from lensbox.device.grpc.bridge import WsgiBridge, authorization, lensbox_trailers

REST_PATH = "/v2/annotations/searches"


def _unset_concepts_are_negative(body: dict[str, Any]) -> None:
    """proto3 drops a 0.0 concept value from the JSON; put it back (REST reads absent as 1)."""
    for search in body.get("searches") or []:
        query = search.get("query") or {}
        for part in (query.get("ranks") or []) + (query.get("filters") or []):
            data = (part.get("annotation") or part.get("input") or {}).get("data") or {}
            for concept in data.get("concepts") or []:
                concept.setdefault("value", 0.0)


class ClarifaiV2(service_pb2_grpc.V2Servicer):
    def __init__(self, bridge: WsgiBridge) -> None:
        self.bridge = bridge

    def PostAnnotationsSearches(
        self, request: service_pb2.PostAnnotationsSearchesRequest, context: grpc.ServicerContext
    ) -> service_pb2.MultiSearchResponse:
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        _unset_concepts_are_negative(body)
        answer = self.bridge.post(REST_PATH, body, authorization(context), context.peer())
        context.set_trailing_metadata(lensbox_trailers(answer))
        if not isinstance(answer.body, dict) or "status" not in answer.body:
            context.abort(grpc.StatusCode.INTERNAL, "the search answered no status")
        return json_format.ParseDict(
            answer.body, service_pb2.MultiSearchResponse(), ignore_unknown_fields=True
        )


def add_clarifai(server: Any, bridge: WsgiBridge) -> None:
    service_pb2_grpc.add_V2Servicer_to_server(ClarifaiV2(bridge), server)
