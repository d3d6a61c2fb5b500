"""One error tree for the whole service.

Every error knows its HTTP status and a stable snake_case ``code``; the HTTP layer renders them
in one middleware (``typeahead.http.app``) and the CLI prints them as one line. Third-party
exceptions are mapped to these at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class TypeaheadError(Exception):
    """Base of every error this package raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


# --- caller's fault (4xx) -------------------------------------------------------------------


class ClientError(TypeaheadError):
    status = 400
    code = "bad_request"


class InvalidParameter(ClientError):
    code = "invalid_parameter"


class MissingParameter(ClientError):
    code = "missing_parameter"


class QueryTooLong(ClientError):
    code = "query_too_long"


class InvalidEncoding(ClientError):
    code = "invalid_encoding"


class InvalidBody(ClientError):
    code = "invalid_body"


class UndecodableBody(InvalidBody):
    """A body whose Content-Encoding does not decode: the connection closes after the answer,
    because the parser cannot find where the next request starts."""

    code = "invalid_content_encoding"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(ClientError):
    """A request body that did not arrive within the time allowed (a trickling client)."""

    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class MalformedRequest(ClientError):
    """aiohttp's HTTP parser refused the request head or framing (rendered by
    ``typeahead.http.connection``; the message never quotes what the client sent)."""

    code = "malformed_request"


class VersionNotSupported(ClientError):
    """A request line naming an HTTP version other than 1.0 or 1.1."""

    status = 505
    code = "http_version_not_supported"


# --- our fault (5xx) ------------------------------------------------------------------------


class ServerError(TypeaheadError):
    status = 500
    code = "internal_error"


class ServiceUnavailable(ServerError):
    """Overloaded, or a dependency (Redis, the LLM) is down: the caller may retry later."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class UpstreamError(ServerError):
    """The LLM server answered with an error or broke the stream."""

    status = 502
    code = "upstream_error"


# --- artefacts and configuration (CLI exit 1 or 2) ------------------------------------------


class ConfigError(TypeaheadError):
    """A setting or flag has a bad value (the CLI exits 2)."""

    code = "config_error"


class DataError(TypeaheadError):
    """An input file is missing, unreadable or malformed (the CLI exits 1)."""

    code = "data_error"


class MissingExtraError(TypeaheadError):
    """An optional dependency (e.g. the ``train`` extra) is not installed (the CLI exits 1)."""

    code = "missing_extra"


class ArtifactError(TypeaheadError):
    """A built artefact (index, model) is missing, corrupt or incompatible (the CLI exits 1)."""

    code = "artifact_error"
