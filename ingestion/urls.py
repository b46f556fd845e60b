"""Routes of the ingestion API (mounted under /api/v1/): uploads, syncs, deletes and jobs.

A knowledge base, a source and a document are read and deleted at one URL each, so those routes
are here with views that extend knowledge.api's.
"""

from django.urls import path

from ingestion import api
from kbportal.slashes import with_slash_twins

# Every route also answers at its twin, with the final slash added or removed (kbportal.slashes).
urlpatterns = with_slash_twins([
    path("kbs/<slug:slug>/", api.KnowledgeBaseDetailApi.as_view(), name="kb-detail"),
    path("kbs/<slug:slug>/sources/", api.SourceListApi.as_view(), name="source-list"),
    path("kbs/<slug:slug>/sources/<int:pk>/", api.SourceDetailApi.as_view(), name="source-detail"),
    path("kbs/<slug:slug>/sources/<int:pk>/sync/", api.SourceSyncApi.as_view(), name="source-sync"),
    path("kbs/<slug:slug>/uploads/", api.UploadApi.as_view(), name="upload"),
    path("kbs/<slug:slug>/documents/<int:pk>/", api.DocumentDetailApi.as_view(), name="document-detail"),
    path("jobs/", api.JobListApi.as_view(), name="job-list"),
    path("jobs/<int:pk>/", api.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:pk>/cancel/", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:pk>/retry/", api.JobRetryApi.as_view(), name="job-retry"),
])
