"""Project middleware: request ids, HTTP metrics, the API's error shape at the edge, security headers.

Each class works in both sync (WSGI, tests) and async (ASGI) stacks without being adapted, so
the ASGI server does not pay a thread hop per middleware per request.
"""

from __future__ import annotations

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from kbportal import metrics
from kbportal.logging import request_id_from, request_id_var

logger = logging.getLogger("django.request")

API_PREFIX = "/api/"
UNMATCHED_ROUTE = "<unmatched>"


class HybridMiddleware:
    """`before` may answer early; `after` sees every response; `done` runs last, whatever happened."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        try:
            response = self.before(request)
            if response is None:
                response = self.get_response(request)
            return self.after(request, response)
        finally:
            self.done(request)

    async def _acall(self, request: HttpRequest):
        try:
            response = self.before(request)
            if response is None:
                response = await self.get_response(request)
            return self.after(request, response)
        finally:
            self.done(request)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def done(self, request: HttpRequest) -> None:
        pass


class RequestIdMiddleware(HybridMiddleware):
    """Keeps a sane incoming X-Request-ID or makes one; logs carry it, the response returns it."""

    def before(self, request):
        request.request_id = request_id_from(request.headers.get("X-Request-ID"))
        request._request_id_token = request_id_var.set(request.request_id)

    def after(self, request, response):
        response["X-Request-ID"] = request.request_id
        return response

    def done(self, request):
        token = getattr(request, "_request_id_token", None)
        if token is not None:
            request_id_var.reset(token)


class MetricsMiddleware(HybridMiddleware):
    """Latency of every request by route pattern (`api/v1/kbs/<slug:slug>/`), method and status."""

    def before(self, request):
        request._metrics_started = time.perf_counter()

    def after(self, request, response):
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else UNMATCHED_ROUTE
        metrics.HTTP_LATENCY.labels(route, request.method, str(response.status_code)).observe(
            time.perf_counter() - request._metrics_started
        )
        return response


def api_error(request: HttpRequest, status: int, code: str, detail: str) -> JsonResponse:
    """The API's one error shape (see kbportal.errors), for errors raised outside DRF's handler."""
    body = {"error": code, "detail": detail, "request_id": getattr(request, "request_id", None)}
    return JsonResponse(body, status=status)


def _has_form_body(request: HttpRequest) -> bool:
    return request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded")


class ApiErrorMiddleware(HybridMiddleware):
    """Under /api/: bodies over DATA_UPLOAD_MAX_MEMORY_SIZE get 413, and what escapes a view gets
    the JSON error shape (400, 403, 404, 413 or 500) instead of an HTML page.

    Multipart uploads are not capped here: their files have their own limit (KB_MAX_UPLOAD_BYTES,
    checked by the upload API) and Django caps their other fields.
    """

    def before(self, request):
        if not request.path.startswith(API_PREFIX) or _has_form_body(request):
            return None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return api_error(request, 400, "bad_request", "Invalid Content-Length header.")
        if limit is not None and length > limit:
            return too_large(request, length)
        return None

    def after(self, request, response):
        # An unknown URL under /api/ (Django's HTML 404, raised before any view) in the API's shape.
        if (response.status_code == 404 and request.path.startswith(API_PREFIX)
                and not response.get("Content-Type", "").startswith("application/json")):
            return api_error(request, 404, "not_found", "Not found.")
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        if isinstance(exception, RequestDataTooBig):
            return too_large(request, None)
        if isinstance(exception, Http404):
            return api_error(request, 404, "not_found", "Not found.")
        if isinstance(exception, PermissionDenied):
            return api_error(request, 403, "permission_denied", "You do not have permission to do this.")
        if isinstance(exception, (BadRequest, SuspiciousOperation)):
            return api_error(request, 400, "bad_request", str(exception)[:300] or "Bad request.")
        logger.error("Internal Server Error: %s", request.path, exc_info=exception, extra={"status_code": 500})
        return api_error(request, 500, "server_error", "Internal server error; quote the request_id when reporting it.")


def too_large(request: HttpRequest, length: int | None) -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    size = f"{length} bytes" if length is not None else "too large"
    return api_error(request, 413, "payload_too_large", f"The request body is {size}; the limit is {limit} bytes.")


#: Our pages (dashboard, login, API) load only their own files: no inline script or style.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
#: Third-party pages we serve as shipped (Django admin, django-rq, Swagger UI and ReDoc from
#: drf-spectacular-sidecar's static files) carry inline scripts and styles; they get these, and
#: still nothing from other origins (ReDoc runs its search in a worker made from a blob: URL).
THIRD_PARTY_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
THIRD_PARTY_PREFIXES = ("/admin/", "/api/docs/", "/api/redoc/")
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=(), browsing-topics=()"
)


class SecurityHeadersMiddleware(HybridMiddleware):
    """CSP, Permissions-Policy and nosniff on every response (Django's SecurityMiddleware adds
    Referrer-Policy, COOP and HSTS on TLS; XFrameOptionsMiddleware adds X-Frame-Options)."""

    def after(self, request, response):
        policy = THIRD_PARTY_CSP if request.path.startswith(THIRD_PARTY_PREFIXES) else STRICT_CSP
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
