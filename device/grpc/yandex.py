"""``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage`` and the endpoint discovery
Yandex's SDKs call first (``yandex.cloud.endpoint.ApiEndpointService/List``).

The request is the REST body of ``POST /v2/image/search_by_image`` (snake_case names, the
image bytes as base64, as the proto3 JSON mapping writes them); the REST answer is parsed
back into ``ImageSearchByImageResponse``. A REST error is already a gRPC status
(``{code, message}``, yandex.py of the HTTP side) and is raised as that status: a missing
``url``/``data``/``id`` oneof is INVALID_ARGUMENT, a missing or wrong key UNAUTHENTICATED /
PERMISSION_DENIED, throttling RESOURCE_EXHAUSTED. Metadata: ``authorization: Api-Key <key>``
or ``Bearer <token>``.

``ApiEndpointService/List`` answers with this listener's address for ``searchapi`` (and
``endpoint``), so an SDK given the box as its ``endpoint`` finds the search service here.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from yandex.cloud.endpoint import api_endpoint_pb2
from yandex.cloud.endpoint import api_endpoint_service_pb2 as endpoint_pb2
from yandex.cloud.endpoint import api_endpoint_service_pb2_grpc as endpoint_grpc
from yandex.cloud.searchapi.v2 import img_search_service_pb2 as search_pb2
from yandex.cloud.searchapi.v2 import img_search_service_pb2_grpc as search_grpc

from lensbox.device.grpc.bridge import WsgiBridge, authorization, lensbox_trailers

REST_PATH = "/v2/image/search_by_image"
STATUS = {s.value[0]: s for s in grpc.StatusCode}
SERVICES = ("searchapi", "endpoint")


class ImageSearchService(search_grpc.ImageSearchServiceServicer):
    def __init__(self, bridge: WsgiBridge) -> None:
        self.bridge = bridge

    def SearchByImage(
        self, request: search_pb2.ImageSearchByImageRequest, context: grpc.ServicerContext
    ) -> search_pb2.ImageSearchByImageResponse:
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        answer = self.bridge.post(REST_PATH, body, authorization(context), context.peer())
        context.set_trailing_metadata(lensbox_trailers(answer))
        if answer.status != 200:
            error = answer.body if isinstance(answer.body, dict) else {}
            code = STATUS.get(int(error.get("code", 13)), grpc.StatusCode.INTERNAL)
            context.abort(code, str(error.get("message") or "request failed"))
        return json_format.ParseDict(
            answer.body, search_pb2.ImageSearchByImageResponse(), ignore_unknown_fields=True
        )

    def Search(
        self, request: search_pb2.ImageSearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.ImageSearchResponse:
        """Web search is not served: UNIMPLEMENTED, as the generated base class answers (its
        stub declares every RPC abstract, so the servicer spells it out)."""
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")


class ApiEndpointService(endpoint_grpc.ApiEndpointServiceServicer):
    """Endpoint discovery: every service the box serves is at this listener."""

    def __init__(self, address: str) -> None:
        self.endpoints = [api_endpoint_pb2.ApiEndpoint(id=s, address=address) for s in SERVICES]

    def List(
        self, request: endpoint_pb2.ListApiEndpointsRequest, context: grpc.ServicerContext
    ) -> endpoint_pb2.ListApiEndpointsResponse:
        return endpoint_pb2.ListApiEndpointsResponse(endpoints=self.endpoints)

    def Get(
        self, request: endpoint_pb2.GetApiEndpointRequest, context: grpc.ServicerContext
    ) -> api_endpoint_pb2.ApiEndpoint:
        for endpoint in self.endpoints:
            if endpoint.id == request.api_endpoint_id:
                return endpoint
        context.abort(grpc.StatusCode.NOT_FOUND, f"no endpoint {request.api_endpoint_id!r}")
        raise AssertionError  # abort raises


def add_yandex(server: Any, bridge: WsgiBridge, advertised: str) -> None:
    search_grpc.add_ImageSearchServiceServicer_to_server(ImageSearchService(bridge), server)
    endpoint_grpc.add_ApiEndpointServiceServicer_to_server(ApiEndpointService(advertised), server)
