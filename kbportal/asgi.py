"""ASGI entry point: HTTP through Django, WebSockets through Channels with session auth."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbportal.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does, with our handler

from kbportal.asgi_handler import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

if settings.KB_SERVE_STATIC:
    # No separate static server on a single machine; behind a proxy set KB_SERVE_STATIC=0.
    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from kbportal.body_limit import BodyLimit  # noqa: E402
from kbportal.metrics import WebSocketGauge  # noqa: E402
from kbportal.routing import websocket_urlpatterns  # noqa: E402
from kbportal.worker import run_preload_hooks  # noqa: E402

# Load models now, not in the first request (a cold MiniLM load takes seconds).
run_preload_hooks()

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(django_asgi_app),
        "websocket": WebSocketGauge(AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
