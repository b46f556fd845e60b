"""`Authorization: Bearer kb_<prefix>_<secret>` authentication for the API."""

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions

from knowledge.models import ApiKey


class ApiKeyUser(AnonymousUser):
    """The request's user when it authenticated with an API key (not a Django user)."""

    def __init__(self, api_key: ApiKey):
        super().__init__()
        self.api_key = api_key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"apikey:{self.api_key.prefix}"


def parse_key(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "kb" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def authenticate_key(raw: str) -> ApiKey:
    """The live key for a raw `kb_...` string, or AuthenticationFailed. Used by HTTP and WebSockets."""
    parsed = parse_key(raw.strip())
    if parsed is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    prefix, secret = parsed
    key = ApiKey.objects.filter(prefix=prefix).first()
    # Compare even when the prefix is unknown, so timing does not tell which prefixes exist.
    if key is None:
        ApiKey(secret_hash="0" * 64).matches(secret)
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if not key.matches(secret) or key.revoked:
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    key.touch()
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        key = authenticate_key(raw)
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return self.keyword
