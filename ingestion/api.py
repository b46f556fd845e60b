"""REST API of ingestion work: uploads, syncs and deletes of knowledge bases, sources and documents; jobs.

The views of URLs that also read (a knowledge base, its sources, a document) extend those of
`knowledge.api` and answer the same URLs. Staff sessions may do everything; API keys need the
`ingest` scope and the knowledge base.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from ingestion.models import IngestionJob, JobKind
from ingestion.selectors import job_list
from ingestion.services import (
    documents_delete,
    job_cancel,
    job_retry,
    job_state,
    knowledge_base_delete,
    source_add,
    source_delete,
    source_sync,
    uploads_add,
)
from kbportal.claiming import JobStatus
from knowledge import api as knowledge_api
from knowledge.models import SourceKind
from knowledge.permissions import is_staff, may_use_kb, readable_kbs
from knowledge.serializers import SourceOutput


class IngestAPIView(knowledge_api.KnowledgeAPIView):
    def get_job(self, pk) -> IngestionJob:
        job = get_object_or_404(IngestionJob.objects.select_related("kb"), pk=pk)
        if not may_use_kb(self.request, job.kb):
            raise NotFound("No such job.")
        return job


class JobOutput(serializers.Serializer):
    def to_representation(self, job):
        state = job_state(job)
        request = self.context.get("request")
        state["url"] = reverse("job-detail", args=[job.pk], request=request)
        return state


def accepted(job: IngestionJob, request, **extra) -> Response:
    body = {**extra, "job": JobOutput(job, context={"request": request}).data}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["job"]["url"]})


class KnowledgeBaseDetailApi(knowledge_api.KnowledgeBaseDetailApi):
    @extend_schema(responses={202: None})
    def delete(self, request, slug):
        """Staff only, like creating one: gone at once, its chunks and files removed by the job returned."""
        kb = self.get_kb(slug)
        if not is_staff(request):
            raise PermissionDenied("Only staff may delete a knowledge base.")
        return accepted(knowledge_base_delete(kb=kb), request)


class SourceListApi(knowledge_api.SourceListApi):
    class SourceListInput(serializers.Serializer):
        kind = serializers.ChoiceField(choices=[SourceKind.TEXT, SourceKind.URL])
        name = serializers.CharField(max_length=200)
        config = serializers.JSONField()

    @extend_schema(request=SourceListInput, responses={202: SourceOutput})
    def post(self, request, slug):
        kb = self.get_kb(slug)
        data = self.SourceListInput(data=request.data)
        data.is_valid(raise_exception=True)
        source, job = source_add(kb=kb, **data.validated_data)
        return accepted(job, request, source=SourceOutput(source).data)


class SourceDetailApi(knowledge_api.SourceDetailApi):
    @extend_schema(responses={202: None})
    def delete(self, request, slug, pk):
        return accepted(source_delete(source=self.get_source(slug, pk)), request)


class SourceSyncApi(IngestAPIView):
    @extend_schema(request=None, responses={202: None})
    def post(self, request, slug, pk):
        return accepted(source_sync(source=self.get_source(slug, pk)), request)


class UploadApi(IngestAPIView):
    """Multipart upload of one or more files (field `file`); answers 202 with the job.

    All or nothing: when a file is refused (413 too large, else 415 a kind we cannot read), nothing
    is stored and `fields.file` lists each refused file with its reason.
    """

    parser_classes = [MultiPartParser, FormParser]

    class UploadInput(serializers.Serializer):
        file = serializers.ListField(child=serializers.FileField(allow_empty_file=True), min_length=1)
        name = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(request=UploadInput, responses={202: SourceOutput})
    def post(self, request, slug):
        kb = self.get_kb(slug)
        data = self.UploadInput(data={"file": request.FILES.getlist("file"), "name": request.data.get("name", "")})
        data.is_valid(raise_exception=True)
        source, job = uploads_add(kb=kb, uploads=data.validated_data["file"], name=data.validated_data["name"])
        return accepted(job, request, source=SourceOutput(source).data)


class DocumentDetailApi(knowledge_api.DocumentDetailApi):
    @extend_schema(responses={202: None})
    def delete(self, request, slug, pk):
        kb, document = self.get_document(slug, pk)
        return accepted(documents_delete(kb=kb, documents=[document]), request)


class JobListApi(IngestAPIView):
    @extend_schema(
        responses=JobOutput(many=True),
        parameters=[
            OpenApiParameter("kb", str, description="A knowledge base slug."),
            OpenApiParameter("status", str, enum=JobStatus.values),
            OpenApiParameter("kind", str, enum=JobKind.values),
        ],
    )
    def get(self, request):
        filters = {name: request.query_params.get(name) for name in ("kb", "status", "kind")}
        jobs = job_list(kbs=None if is_staff(request) else readable_kbs(request), filters=filters)
        return self.paginate(jobs, JobOutput)


class JobDetailApi(IngestAPIView):
    @extend_schema(responses=JobOutput)
    def get(self, request, pk):
        return Response(JobOutput(self.get_job(pk), context={"request": request}).data)


class JobCancelApi(IngestAPIView):
    @extend_schema(request=None, responses=JobOutput)
    def post(self, request, pk):
        return Response(JobOutput(job_cancel(job=self.get_job(pk)), context={"request": request}).data)


class JobRetryApi(IngestAPIView):
    @extend_schema(request=None, responses={202: None})
    def post(self, request, pk):
        return accepted(job_retry(job=self.get_job(pk)), request)
