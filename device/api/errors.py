"""One error type for the whole API; each contract renders it in its own shape.

Handlers raise :class:`ApiError` with a *common* code (below); a contract maps the code to
its provider's status, name and message, so one failure (say a PNG of 50x50 px) reads as
``UnsupportedPicPixels`` to an Alibaba client and ``IS.0002`` to a Huawei one.
"""

from __future__ import annotations

from lensbox.device.imaging.decode import ImageError

# common code -> HTTP status of the native API (contracts choose their own).
NATIVE_STATUS: dict[str, int] = {
    "bad_request": 400,
    "bad_json": 400,
    "bad_param": 400,
    "missing_image": 400,
    "ambiguous_image": 400,
    "bad_base64": 400,
    "empty_image": 400,
    "not_an_image": 400,
    "truncated_image": 400,
    "unsupported_format": 415,
    "too_small": 422,
    "too_large": 422,
    "too_many_pixels": 422,
    "too_many_bytes": 413,
    "request_too_large": 413,
    "incorrect_orientation": 400,
    "bad_region": 400,
    "bad_filter": 400,
    "bad_paging": 400,
    "overflow_return_num": 400,
    "overflow_result_num": 400,
    "bad_category": 400,
    "unknown_instance": 404,
    "not_found": 404,
    "route_not_found": 404,
    "method_not_allowed": 405,
    "unsupported_action": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "throttled": 429,
    "url_not_allowed": 403,
    "url_fetch_failed": 502,
    "url_timeout": 504,
    "not_ready": 503,
    # a catalog change on a box that takes none (state.read_only, a failed journal, or
    # no [state]): nothing was changed, nothing stored was lost
    "read_only": 503,
    "internal": 500,
    # cloud fallback (fallback.on_error = "error"): the provider failed / did not answer
    "cloud_unavailable": 502,
    "cloud_timeout": 504,
}

IMAGE_CODES = {
    "empty": "empty_image",
    "missing": "missing_image",
    "not_an_image": "not_an_image",
    "unsupported_format": "unsupported_format",
    "truncated": "truncated_image",
    "too_small": "too_small",
    "too_large": "too_large",
    "too_many_pixels": "too_many_pixels",
    "too_many_bytes": "too_many_bytes",
}

# Every image problem, so contracts can map them as one group where they have one name.
IMAGE_ERRORS = frozenset(IMAGE_CODES.values()) | {"bad_base64", "incorrect_orientation"}


class ApiError(Exception):
    """A request that cannot be answered; ``code`` is one of :data:`NATIVE_STATUS`."""

    # Seconds for a Retry-After header: set on ``throttled`` errors that know it, absent
    # otherwise (error_response then says 1).
    retry_after: int

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        if code not in NATIVE_STATUS:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    @property
    def status(self) -> int:
        return NATIVE_STATUS[self.code]

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        return cls(IMAGE_CODES.get(exc.code, "not_an_image"), str(exc))

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r})"


def internal_error() -> ApiError:
    """What a client sees for a bug: no traceback, no internals."""
    return ApiError("internal", "internal error; the server log has the details")
