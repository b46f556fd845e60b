"""URLs of the staff dashboard under /dashboard/."""

from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("kbs/new/", views.kb_new, name="kb-new"),
    path("kbs/<slug:slug>/", views.kb_detail, name="kb"),
    path("kbs/<slug:slug>/delete/", views.kb_delete_view, name="kb-delete"),
    path("kbs/<slug:slug>/documents/<int:pk>/original/", views.document_original, name="document-original"),
    path("kbs/<slug:slug>/sources/new/<str:kind>/", views.source_new, name="source-new"),
    path("kbs/<slug:slug>/sources/<int:pk>/sync/", views.source_sync_view, name="source-sync"),
    path("kbs/<slug:slug>/sources/<int:pk>/delete/", views.source_delete_view, name="source-delete"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/<int:pk>/", views.job_detail, name="job"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job-retry"),
    path("search/", views.playground, name="playground"),
    path("search/ask/", views.ask, name="ask"),
    path("search/ask/<int:pk>/", views.answer_detail, name="answer"),
    path("search/ask/<int:pk>/cancel/", views.answer_cancel_view, name="answer-cancel"),
    path("search/ask/<int:pk>/retry/", views.answer_retry_view, name="answer-retry"),
    path("keys/", views.api_keys, name="api-keys"),
    path("keys/<int:pk>/revoke/", views.api_key_revoke_view, name="api-key-revoke"),
]
