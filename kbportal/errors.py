"""One error shape for the whole API: {"error": code, "detail": message, "fields": {...}, "request_id": id}."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from kbportal.logging import current_request_id


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; try again shortly."
    default_code = "service_unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 5):
        super().__init__(detail)
        self.retry_after = retry_after


class RefusedWithFields(exceptions.APIException):
    """A refusal that names the fields (or files) at fault, as `fields` in the error body."""

    def __init__(self, detail: str | None = None, fields: dict[str, list[str]] | None = None):
        super().__init__(detail)
        self.fields = fields


class UnsupportedMediaType(RefusedWithFields):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_media_type"
    default_detail = "This content type cannot be extracted."


class PayloadTooLarge(RefusedWithFields):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The upload is larger than the configured limit."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # PostgreSQL unreachable (or the connection dropped): nothing was written; say so clearly.
        exc = ServiceUnavailable("The database is unavailable; try again shortly.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = {"error": "invalid", "detail": "The request has invalid fields.", "fields": response.data}
    else:
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else code
        body = {"error": code, "detail": str(detail)}
        if getattr(exc, "fields", None):
            body["fields"] = exc.fields
    body["request_id"] = current_request_id()
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(exc.retry_after)
    response.data = body
    return response
