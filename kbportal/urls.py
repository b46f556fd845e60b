"""The project's root URL map: API, dashboard, admin, health and metrics."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from dashboard.views import home
from kbportal import health, metrics_view
from kbportal.login_throttle import throttle_login

urlpatterns = [
    path("", home, name="home"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", metrics_view.metrics_view, name="metrics"),
    path("admin/django-rq/", include("django_rq.urls")),
    path(
        "accounts/login/",
        throttle_login(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("dashboard.urls")),
    path("admin/login/", throttle_login(admin.site.login)),  # before admin/: the same view, throttled
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
        name="api-redoc",
    ),
    path("api/v1/", include("search.urls")),
    path("api/v1/", include("knowledge.urls")),
    path("api/v1/", include("ingestion.urls")),
]
