"""Local HTTP servers that play the four cloud providers (see base.py for the modes).

:func:`provider_setup` starts one fake and returns the matching config section, with
credentials read from environment variables in ``environ`` (``wrong=True`` puts a wrong
secret there), so tests exercise the same config -> credential -> request path as the box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.fakes.alibaba import FakeAlibaba
from tests.fakes.base import FakeProvider, default_catalog
from tests.fakes.clarifai import FakeClarifai
from tests.fakes.huawei import FakeHuawei
from tests.fakes.yandex import FakeYandex

# Distinctive values so a leak is easy to grep for.
SECRETS = {
    "yandex_key": "AQVN-yandex-SECRET-key-7f3a91",
    "yandex_iam": "t1.yandex-SECRET-iam-token-55c2",
    "alibaba_secret": "alibaba-SECRET-3b8e0d2c41",
    "huawei_sk": "huawei-SECRET-sk-9d1e77a0",
    "huawei_token": "MIIhuawei-SECRET-token-00aa",
    "clarifai_pat": "clarifai-SECRET-pat-4e6f20",
}
WRONG = "definitely-not-the-right-secret-1234"
PROVIDERS = ("yandex", "alibaba", "huawei", "clarifai")


@dataclass
class Setup:
    fake: FakeProvider
    section: Any  # the provider's config section
    environ: dict[str, str]
    secrets: list[str]


def provider_setup(name: str, *, wrong: bool = False, auth: str | None = None, **kw: Any) -> Setup:
    """Start the fake for ``name``; the caller stops it (``setup.fake.stop()``)."""
    from lensbox.device.config.fallback import (
        AlibabaConfig,
        ClarifaiConfig,
        CredentialSource,
        HuaweiConfig,
        YandexConfig,
    )

    def env(var: str, secret: str) -> CredentialSource:
        environ[var] = WRONG if wrong else secret
        return CredentialSource(env=var)

    environ: dict[str, str] = {}
    if name == "yandex":
        fake: FakeProvider = FakeYandex(
            api_key=SECRETS["yandex_key"],
            iam_token=SECRETS["yandex_iam"],
            folder_id="b1gfolder",
            **kw,
        ).start()
        auth = auth or "api_key"
        cred = (
            {"api_key": env("T_YANDEX_KEY", SECRETS["yandex_key"])}
            if auth == "api_key"
            else {"iam_token": env("T_YANDEX_IAM", SECRETS["yandex_iam"])}
        )
        section: Any = YandexConfig(
            base_url=fake.base_url, folder_id="b1gfolder", auth=auth, **cred
        )
    elif name == "alibaba":
        fake = FakeAlibaba(
            key_id="LTAI5tFakeKeyId",
            secret=SECRETS["alibaba_secret"],
            instance="demoinstance",
            **kw,
        ).start()
        environ["T_ALI_ID"] = "LTAI5tFakeKeyId"
        section = AlibabaConfig(
            base_url=fake.base_url,
            instance_name="demoinstance",
            access_key_id=CredentialSource(env="T_ALI_ID"),
            access_key_secret=env("T_ALI_SECRET", SECRETS["alibaba_secret"]),
        )
    elif name == "huawei":
        fake = FakeHuawei(
            project="0a1b2c3d4e",
            instance="shoes",
            ak="HPUAFAKEAK",
            sk=SECRETS["huawei_sk"],
            token=SECRETS["huawei_token"],
            **kw,
        ).start()
        auth = auth or "aksk"
        environ["T_HW_AK"] = "HPUAFAKEAK"
        creds: dict[str, Any] = (
            {
                "access_key": CredentialSource(env="T_HW_AK"),
                "secret_key": env("T_HW_SK", SECRETS["huawei_sk"]),
            }
            if auth == "aksk"
            else {"token": env("T_HW_TOKEN", SECRETS["huawei_token"])}
        )
        section = HuaweiConfig(
            base_url=fake.base_url,
            project_id="0a1b2c3d4e",
            instance_name="shoes",
            auth=auth,
            **creds,
        )
    elif name == "clarifai":
        fake = FakeClarifai(pat=SECRETS["clarifai_pat"], user_id="me", app_id="lens", **kw).start()
        section = ClarifaiConfig(
            base_url=fake.base_url,
            user_id="me",
            app_id="lens",
            pat=env("T_CLARIFAI_PAT", SECRETS["clarifai_pat"]),
        )
    else:
        raise KeyError(name)
    return Setup(fake, section, environ, list(SECRETS.values()))


__all__ = [
    "PROVIDERS",
    "SECRETS",
    "WRONG",
    "FakeAlibaba",
    "FakeClarifai",
    "FakeHuawei",
    "FakeProvider",
    "FakeYandex",
    "Setup",
    "default_catalog",
    "provider_setup",
]
