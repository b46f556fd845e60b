"""One error shape for the whole API: {"error": code, "detail": message, "fields": {...}, "request_id": id}.

The project's DRF exception handler gives it to DRF's own exceptions, to Django's ValidationError,
to a database outage (503) and to every `DomainError`: the errors the apps' services raise, each
subclass naming its HTTP status, code and default message, so services never raise DRF exceptions.
"""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from kbportal.logging import current_request_id


class DomainError(Exception):
    """An error a service raises for its callers (API, command, dashboard, worker alike).

    A subclass sets the API's answer to it: `status_code`, `code` (the body's "error") and
    `default_detail`. `fields` names the fields at fault; `retry_after` (seconds) is sent as Retry-After.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    code = "error"
    default_detail = "The request cannot be served."

    def __init__(self, detail: str | None = None, *, fields: dict[str, list[str]] | None = None,
                 retry_after: int | None = None):
        self.detail = detail or self.default_detail
        self.fields = fields
        self.retry_after = retry_after
        super().__init__(self.detail)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; try again shortly."
    default_code = "service_unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 5):
        super().__init__(detail)
        self.retry_after = retry_after


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        set_rollback()
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response(_body(exc.code, exc.detail, exc.fields), status=exc.status_code, headers=headers)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # PostgreSQL unreachable (or the connection dropped): nothing was written; say so clearly.
        exc = ServiceUnavailable("The database is unavailable; try again shortly.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = _body("invalid", "The request has invalid fields.", response.data)
    else:
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else code
        body = _body(code, str(detail), None)
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(exc.retry_after)
    response.data = body
    return response


def _body(code: str, detail: str, fields: dict | None) -> dict:
    body = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    body["request_id"] = current_request_id()
    return body
