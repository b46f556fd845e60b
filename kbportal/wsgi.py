"""WSGI entry point (the ASGI one in kbportal/asgi.py is what daphne serves)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbportal.settings")
application = get_wsgi_application()
