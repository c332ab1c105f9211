"""[fallback]: whether, when and how lensbox asks a cloud provider.

Nothing leaves the box unless ``fallback.enabled = true`` *and* the provider is named in
``fallback.order`` *and* its own ``enabled`` switch is on.  Credentials are named, not
written here: each is a ``{env = "VAR"}`` or ``{file = "/path"}`` table (an inline
``{value = "..."}`` is accepted for quick trials but is the weakest option: the config file
then holds the secret).

Example::

    [fallback]
    enabled = true
    order = ["yandex"]
    threshold = 0.5

    [fallback.yandex]
    folder_id = "b1gt6g8ht345abcdefgh"
    api_key = { env = "YANDEX_SEARCH_API_KEY" }
"""

# pydantic evaluates field annotations at runtime: `X | None` breaks on Python 3.9.
# ruff: noqa: UP045

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator

from lensbox.device.config.base import Section

PROVIDER_NAMES = ("yandex", "alibaba", "huawei", "clarifai")


class CredentialSource(Section):
    """Where one secret comes from; the first source that yields a value wins (env, file,
    then inline value), so an env var can override a file during a rotation."""

    env: Optional[str] = Field(None, description="name of the environment variable holding it")
    file: Optional[str] = Field(None, description="path of a file holding it (whitespace trimmed)")
    value: Optional[SecretStr] = Field(None, description="the secret itself (discouraged)")

    def configured(self) -> bool:
        return bool(self.env or self.file or self.value)

    def describe(self) -> str:
        """Where the secret is looked up, for error messages: never the secret itself."""
        parts = []
        if self.env:
            parts.append(f"env {self.env}")
        if self.file:
            parts.append(f"file {self.file}")
        if self.value:
            parts.append("inline value")
        return " or ".join(parts) or "nothing configured"


class ProviderSection(Section):
    enabled: bool = Field(True, description="per-provider switch (fallback.enabled must be on too)")
    base_url: str = ""

    def missing(self) -> list[str]:
        """Keys that must be set before this provider can be asked; checked when enabled."""
        return [] if self.base_url else ["base_url"]

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// (or http:// for a local test)")
        return value.rstrip("/")


class YandexConfig(ProviderSection):
    base_url: str = "https://searchapi.api.cloud.yandex.net"
    folder_id: str = ""
    auth: Literal["api_key", "iam_token"] = "api_key"
    api_key: CredentialSource = CredentialSource()
    iam_token: CredentialSource = CredentialSource()
    family_mode: Literal["", "FAMILY_MODE_NONE", "FAMILY_MODE_MODERATE", "FAMILY_MODE_STRICT"] = ""
    site: str = Field("", description="restrict results to one site (host)")

    def missing(self) -> list[str]:
        out = super().missing()
        if not self.folder_id:
            out.append("folder_id")
        cred = self.api_key if self.auth == "api_key" else self.iam_token
        if not cred.configured():
            out.append(self.auth)
        return out


class AlibabaConfig(ProviderSection):
    base_url: str = "https://imagesearch.cn-shanghai.aliyuncs.com"
    region_id: str = "cn-shanghai"
    instance_name: str = ""
    api_version: str = Field("2020-12-14", description="RPC Version parameter")
    access_key_id: CredentialSource = CredentialSource()
    access_key_secret: CredentialSource = CredentialSource()
    category_id: Optional[int] = None
    crop: Optional[bool] = None

    def missing(self) -> list[str]:
        out = super().missing()
        if not self.instance_name:
            out.append("instance_name")
        for name in ("access_key_id", "access_key_secret"):
            if not getattr(self, name).configured():
                out.append(name)
        return out


class HuaweiConfig(ProviderSection):
    base_url: str = "https://imagesearch.cn-north-4.myhuaweicloud.com"
    project_id: str = ""
    instance_name: str = ""
    auth: Literal["aksk", "token"] = "aksk"
    access_key: CredentialSource = CredentialSource()
    secret_key: CredentialSource = CredentialSource()
    token: CredentialSource = CredentialSource()

    def missing(self) -> list[str]:
        out = super().missing()
        out += [k for k in ("project_id", "instance_name") if not getattr(self, k)]
        creds = ("access_key", "secret_key") if self.auth == "aksk" else ("token",)
        out += [k for k in creds if not getattr(self, k).configured()]
        return out


class ClarifaiConfig(ProviderSection):
    base_url: str = "https://api.clarifai.com"
    user_id: str = ""
    app_id: str = ""
    pat: CredentialSource = CredentialSource()

    def missing(self) -> list[str]:
        out = super().missing()
        out += [k for k in ("user_id", "app_id") if not getattr(self, k)]
        if not self.pat.configured():
            out.append("pat")
        return out


class FallbackConfig(Section):
    enabled: bool = Field(False, description="master switch: nothing is sent while false")
    order: tuple[str, ...] = Field((), description="providers to ask, first that answers wins")
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="ask when the best local score is below this; unset: when no local hit "
        "has the verdict 'match' (the bundle's calibrated threshold)",
    )
    policy: Literal["cloud_only_when_weak", "local_then_cloud"] = "cloud_only_when_weak"
    on_error: Literal["local_only", "error"] = "local_only"
    timeout_s: float = Field(3.0, gt=0, le=60, description="budget of one fallback call")
    attempt_timeout_s: Optional[float] = Field(
        None, gt=0, description="cap per HTTP attempt so a retry can fit (default: all left)"
    )
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_base_s: float = Field(0.2, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open it")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="open -> half-open after this")
    cache_size: int = Field(256, ge=0, description="cloud answers kept (0: no cache)")
    cache_ttl_s: float = Field(3600.0, ge=0)
    max_response_bytes: int = Field(8 << 20, ge=1024)
    yandex: YandexConfig = YandexConfig()
    alibaba: AlibabaConfig = AlibabaConfig()
    huawei: HuaweiConfig = HuaweiConfig()
    clarifai: ClarifaiConfig = ClarifaiConfig()

    @field_validator("order")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in PROVIDER_NAMES]
        if bad:
            raise ValueError(f"unknown providers {bad}; choose from {list(PROVIDER_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError("a provider is named twice")
        return value

    @model_validator(mode="after")
    def _complete(self) -> FallbackConfig:
        """Fail at load time, not on the first weak query, when an enabled provider lacks a
        required key (secrets themselves are only read when a query is sent)."""
        if not self.enabled:
            return self
        if not self.order:
            raise ValueError("fallback.enabled is true but fallback.order names no provider")
        problems = []
        for name in self.order:
            section = self.provider(name)
            if section.enabled and section.missing():
                problems.append(f"{name}: set {', '.join(section.missing())}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def provider(self, name: str) -> ProviderSection:
        if name not in PROVIDER_NAMES:
            raise KeyError(name)
        return getattr(self, name)
