"""One exception tree for Garrison.

Every error says whose fault it is and which HTTP status it maps to. The message in
``public_message`` is the only text a caller ever sees; ``detail`` is for the operator's log
and must never contain a secret. An error raised for a standing rule carries the rule's
code in ``rule`` (its message then starts ``rule <code>:``, which admins read).

    GarrisonError
    ├── ClientError                  the caller's fault (4xx)
    │   ├── BadRequest               400 malformed JSON, missing or wrong fields
    │   ├── Unauthenticated          401 missing or bad credential (one message for every cause)
    │   ├── Forbidden                403 refused by a rule the caller may know about
    │   ├── NotFound                 404 unknown model, or a model the caller may not use
    │   │   ├── WrongApi             404 a model the caller may use, on the other wire API
    │   │   └── UnsupportedRoute     404 a path the gateway does not serve
    │   ├── RequestTimeout           408 the body did not arrive in time (slow client)
    │   ├── Conflict                 409 a name already taken
    │   ├── PayloadTooLarge          413 body over the limit
    │   └── RateLimited              429 over a limit
    ├── UpstreamError                the model server's fault
    │   ├── UpstreamFailed           502 bad answer, refused connection, dropped stream
    │   └── UpstreamTimeout          504 no answer in time
    └── ServerError                  ours (5xx)
        ├── AuditUnavailable         503 the audit log cannot be written: fail closed
        ├── AuditRecordInvalid       500 one event cannot be encoded: only its call fails
        ├── Overloaded               503 too many calls in flight in this process
        ├── ShuttingDown             503 the process is draining (SIGTERM): retry elsewhere
        ├── ConfigError              500 the configuration or key files are unusable
        └── DetectionLeaseLost       500 this process is no longer the detection worker
"""

from __future__ import annotations

from typing import ClassVar


class GarrisonError(Exception):
    """Base of every error Garrison raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal error."

    def __init__(
        self, detail: str = "", *, public_message: str | None = None, rule: str | None = None
    ) -> None:
        if rule is not None:
            # The message names the rule broken (what admins read); ``rule`` is its code.
            detail = f"rule {rule}: {detail}"
        super().__init__(detail or self.default_message)
        self.detail = detail
        self.public_message = public_message or self.default_message
        # The code of the standing rule the request broke (``vendor-ceiling``,
        # ``two-person`` …), set where it is raised; ``None`` for any other error.
        self.rule = rule


class ClientError(GarrisonError):
    status = 400
    code = "invalid_request"
    default_message = "Invalid request."


class BadRequest(ClientError):
    status = 400
    code = "invalid_request"
    default_message = "Invalid request."


class Unauthenticated(ClientError):
    status = 401
    code = "invalid_api_key"
    default_message = "Invalid or missing API key."


class Forbidden(ClientError):
    status = 403
    code = "forbidden"
    default_message = "This request is not permitted."


class NotFound(ClientError):
    status = 404
    code = "model_not_found"
    default_message = "The model does not exist or you do not have access to it."


class WrongApi(NotFound):
    """Only ever told to a caller who may use the model (anyone else gets ``NotFound``)."""

    code = "model_wrong_api"


class UnsupportedRoute(NotFound):
    code = "unsupported_route"
    default_message = "This endpoint is not supported by the gateway."


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"
    default_message = "The request body was not received in time."


class Conflict(ClientError):
    status = 409
    code = "conflict"
    default_message = "Conflict."


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"
    default_message = "Request body is too large."


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"
    default_message = "Rate limit exceeded."


class UpstreamError(GarrisonError):
    status = 502
    code = "upstream_error"
    default_message = "The model server failed to answer."


class UpstreamFailed(UpstreamError):
    status = 502
    code = "upstream_error"
    default_message = "The model server failed to answer."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    default_message = "The model server did not answer in time."


class ServerError(GarrisonError):
    status = 500
    code = "internal_error"
    default_message = "Internal error."


class AuditUnavailable(ServerError):
    status = 503
    code = "audit_unavailable"
    default_message = "Service temporarily unavailable."


class AuditRecordInvalid(ServerError):
    """An event that cannot be encoded as a record. It fails only the call that made it (the
    writer encodes each event as it is appended, never in the shared batch)."""

    status = 500
    code = "internal_error"
    default_message = "Internal error."


class Overloaded(ServerError):
    status = 503
    code = "overloaded"
    default_message = "The gateway is overloaded; retry later."


class ShuttingDown(ServerError):
    status = 503
    code = "shutting_down"
    default_message = "The gateway is shutting down; retry on another instance."


class ConfigError(ServerError):
    status = 500
    code = "config_error"
    default_message = "Gateway misconfigured."


class DetectionLeaseLost(ServerError):
    """Another process holds the detection lease now (this one stalled past it): what this
    one judged since its last commit is discarded, never stored."""

    code = "detection_lease_lost"
