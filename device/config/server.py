"""[server]: the LAN HTTP daemon (`lensbox serve`): address, concurrency, limits, security."""

# pydantic evaluates field annotations at runtime: `X | None` breaks on Python 3.9.
# ruff: noqa: UP045

from __future__ import annotations

import ipaddress
import socket
from typing import Optional

from pydantic import Field, field_validator, model_validator

from lensbox.device.config.base import Section

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

MiB = 1024 * 1024


def is_loopback_address(address: str | None) -> bool:
    """True for an IP address (v4, v6, v4-mapped v6) of this machine's loopback."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def is_loopback(host: str) -> bool:
    """True when only this machine can connect (so API keys may be left off): the bind
    address, or every address the name resolves to, is loopback. A name is resolved, not
    read: ``127.attacker.example`` is whatever its DNS says."""
    if is_loopback_address(host):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return False  # an address, and not a loopback one
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(is_loopback_address(str(info[4][0])) for info in infos)


class ServerConfig(Section):
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 serves the LAN")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port)")
    threads: int = Field(4, ge=1, le=64, description="waitress worker threads (requests at once)")
    interpreters: int = Field(
        2,
        ge=1,
        le=16,
        description="TFLite interpreters shared by all bundles; an interpreter is not "
        "thread-safe, so this many embeddings run at once",
    )
    interpreter_threads: Optional[int] = Field(
        2,
        ge=1,
        le=16,
        description="XNNPACK threads per interpreter (None: [search].threads); with 2, a lone "
        "request embeds on two cores, and 2 interpreters fill a 4-core board",
    )
    require_auth: Optional[bool] = Field(
        None, description="API keys required (None: required unless bound to loopback)"
    )
    api_keys: tuple[str, ...] = Field(
        (),
        description="keys accepted in each contract's own header style "
        "(Yandex Api-Key/Bearer, Alibaba AccessKeyId, Huawei X-Auth-Token, Clarifai Key, "
        "native Bearer/X-API-Key)",
    )
    access_keys: dict[str, str] = Field(
        default_factory=dict,
        description="AccessKeyId -> secret pairs whose request signatures are verified "
        "(Alibaba ACS3-HMAC-SHA256 and RPC HMAC-SHA1, Huawei SDK-HMAC-SHA256 AK/SK)",
    )
    signature_max_skew_s: float = Field(
        900.0, gt=0, le=86400, description="how far a signed request's timestamp may be off"
    )
    grpc_port: Optional[int] = Field(
        None,
        ge=0,
        le=65535,
        description="port of the gRPC listener (Yandex ImageSearchService, Clarifai V2) on "
        "server.host; None: no gRPC listener (needs the 'grpc' extra)",
    )
    grpc_advertise: Optional[str] = Field(
        None,
        description="host:port the gRPC endpoint discovery (Yandex ApiEndpointService) "
        "hands out (None: server.host:grpc_port, or this machine's name on 0.0.0.0)",
    )
    grpc_tls_cert: Optional[str] = Field(None, description="PEM certificate chain: gRPC over TLS")
    grpc_tls_key: Optional[str] = Field(None, description="PEM private key for grpc_tls_cert")
    https_port: Optional[int] = Field(
        None,
        ge=0,
        le=65535,
        description="port of an HTTPS listener serving the same API (None: off); Alibaba's "
        "*Advance calls need it (the SDK uploads the file over HTTPS)",
    )
    https_cert: Optional[str] = Field(None, description="PEM certificate chain for https_port")
    https_key: Optional[str] = Field(None, description="PEM private key for https_cert")
    rate_limit: float = Field(
        10.0, ge=0, description="sustained requests per second per client (0: no limit)"
    )
    rate_burst: int = Field(20, ge=1, description="requests a client may send at once")
    rate_limit_exempt_loopback: bool = Field(
        False,
        description="no rate limit for clients on this machine (127.0.0.0/8, ::1): they all "
        "share one address, hence one budget (a local benchmark or kiosk process)",
    )
    max_request_bytes: int = Field(
        28 * MiB,
        ge=64 * 1024,
        description="largest request body (a 20 MB Clarifai image is ~27 MB as base64)",
    )
    max_pixels: int = Field(
        40_000_000, ge=10_000, description="decompression-bomb guard, checked before decoding"
    )
    query_cache_size: int = Field(
        256, ge=0, description="query embeddings kept for search-by-id (LRU)"
    )
    url_allow_hosts: tuple[str, ...] = Field(
        (),
        description="hosts url queries may fetch from ('*.example.com' allowed); "
        "empty: url queries are refused",
    )
    url_timeout_s: float = Field(
        5.0, gt=0, le=60, description="deadline for a whole url fetch (connect, headers, body)"
    )
    url_concurrency: Optional[int] = Field(
        None,
        ge=1,
        le=64,
        description="url fetches at once (None: threads - 1, so a slow image host can "
        "never occupy every worker); more are refused as throttled",
    )
    connection_limit: int = Field(
        1000, ge=10, le=10_000, description="open client connections at once"
    )
    request_timeout_s: float = Field(
        15.0,
        gt=0,
        le=600,
        description="a request's headers and body must arrive within this many seconds "
        "(slow or half-sent requests are dropped)",
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="an idle keep-alive connection is closed after this"
    )
    url_max_redirects: int = Field(3, ge=0, le=10)
    yandex_page_size: int = Field(10, ge=1, le=100, description="images per Yandex page")
    warmup: bool = Field(True, description="run each interpreter once before serving")

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in value):
            raise ValueError("API keys must not be empty")
        return tuple(k.strip() for k in value)

    @field_validator("access_keys")
    @classmethod
    def _access_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k.strip() or not v for k, v in value.items()):
            raise ValueError("access keys need a non-empty id and secret")
        return {k.strip(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _grpc_tls(self) -> ServerConfig:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError("grpc_tls_cert and grpc_tls_key go together")
        if self.https_port is not None and not (self.https_cert and self.https_key):
            raise ValueError("https_port needs https_cert and https_key")
        return self

    @model_validator(mode="after")
    def _auth_possible(self) -> ServerConfig:
        if self.auth_required and not self.api_keys and not self.access_keys:
            why = (
                "require_auth = true"
                if self.require_auth
                else f"host {self.host} is reachable from the network"
            )
            raise ValueError(
                f'{why} but no api_keys are set: add server.api_keys = ["..."] '
                "(or set require_auth = false to serve without authentication)"
            )
        return self

    @property
    def auth_required(self) -> bool:
        if self.require_auth is not None:
            return self.require_auth
        return not is_loopback(self.host)
