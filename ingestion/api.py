"""REST API for knowledge bases, sources, documents, uploads and jobs.

It lives in `ingestion` (not `knowledge`) because creating or deleting a source creates
ingestion work, and dependencies point ingestion → search → knowledge.
Staff sessions may do everything; API keys need the `ingest` scope and the knowledge base.
"""

from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from ingestion.models import IngestionJob, JobKind
from ingestion.selectors import job_list
from ingestion.services import (
    documents_delete,
    job_cancel,
    job_retry,
    job_state,
    kb_create,
    knowledge_base_delete,
    source_add,
    source_delete,
    source_sync,
    store_upload,
    upload_add,
)
from ingestion.uploads import UploadRefused, check_uploads
from kbportal.claiming import JobStatus
from kbportal.errors import PayloadTooLarge, ServiceUnavailable, UnsupportedMediaType
from knowledge.models import Document, KnowledgeBase, Language, Source, SourceKind
from knowledge.permissions import HasScope, is_staff, may_use_kb, readable_kbs
from knowledge.selectors import document_list, source_list
from knowledge.services import KB_SLUG_HELP
from knowledge.storage import StorageError


class IngestAPIView(APIView):
    permission_classes = [HasScope]
    required_scope = "ingest"
    #: What `paginate` uses; declared so the schema documents list answers as pages, not arrays.
    pagination_class = PageNumberPagination

    def get_kb(self, slug: str) -> KnowledgeBase:
        kb = KnowledgeBase.objects.filter(slug=slug).first()
        if kb is None:
            raise NotFound(f"No knowledge base {slug!r}.")
        if not may_use_kb(self.request, kb):
            raise PermissionDenied("This API key may not use this knowledge base.")
        return kb

    def get_source(self, slug, pk) -> Source:
        return get_object_or_404(Source, kb=self.get_kb(slug), pk=pk)

    def get_job(self, pk) -> IngestionJob:
        job = get_object_or_404(IngestionJob.objects.select_related("kb"), pk=pk)
        if not may_use_kb(self.request, job.kb):
            raise NotFound("No such job.")
        return job

    def paginate(self, queryset, serializer_class):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


class KnowledgeBaseOutput(serializers.ModelSerializer):
    documents = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeBase
        fields = ["slug", "name", "description", "embedder", "dimensions", "language", "generation", "documents",
                  "created_at"]

    def get_documents(self, kb) -> int:
        return kb.sources.aggregate(n=Count("documents"))["n"] or 0


class KnowledgeBaseListApi(IngestAPIView):
    class KnowledgeBaseListInput(serializers.Serializer):
        slug = serializers.CharField(max_length=64, help_text=KB_SLUG_HELP)  # checked by the service
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        embedder = serializers.CharField(required=False, default=None, allow_null=True)
        language = serializers.ChoiceField(choices=Language.choices, required=False, default=Language.ENGLISH)

    @extend_schema(responses=KnowledgeBaseOutput(many=True))
    def get(self, request):
        return self.paginate(readable_kbs(request).order_by("slug"), KnowledgeBaseOutput)

    @extend_schema(request=KnowledgeBaseListInput, responses={201: KnowledgeBaseOutput})
    def post(self, request):
        if not is_staff(request):
            raise PermissionDenied("Only staff may create knowledge bases.")
        data = self.KnowledgeBaseListInput(data=request.data)
        data.is_valid(raise_exception=True)
        kb = kb_create(**data.validated_data)
        return Response(KnowledgeBaseOutput(kb).data, status=status.HTTP_201_CREATED)


class KnowledgeBaseDetailApi(IngestAPIView):
    @extend_schema(responses=KnowledgeBaseOutput)
    def get(self, request, slug):
        return Response(KnowledgeBaseOutput(self.get_kb(slug)).data)

    @extend_schema(responses={202: None})
    def delete(self, request, slug):
        """Staff only, like creating one: gone at once, its chunks and files removed by the job returned."""
        kb = self.get_kb(slug)
        if not is_staff(request):
            raise PermissionDenied("Only staff may delete a knowledge base.")
        return accepted(knowledge_base_delete(kb=kb), request)


class SourceOutput(serializers.ModelSerializer):
    class Meta:
        model = Source
        fields = ["id", "kind", "name", "config", "enabled", "last_synced_at", "last_sync_outcome", "created_at"]


class JobOutput(serializers.Serializer):
    def to_representation(self, job):
        state = job_state(job)
        request = self.context.get("request")
        state["url"] = reverse("job-detail", args=[job.pk], request=request)
        return state


def accepted(job: IngestionJob, request, **extra) -> Response:
    body = {**extra, "job": JobOutput(job, context={"request": request}).data}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["job"]["url"]})


class SourceListApi(IngestAPIView):
    class SourceListInput(serializers.Serializer):
        kind = serializers.ChoiceField(choices=[SourceKind.TEXT, SourceKind.URL])
        name = serializers.CharField(max_length=200)
        config = serializers.JSONField()

    @extend_schema(responses=SourceOutput(many=True))
    def get(self, request, slug):
        return self.paginate(source_list(kb=self.get_kb(slug)), SourceOutput)

    @extend_schema(request=SourceListInput, responses={202: SourceOutput})
    def post(self, request, slug):
        kb = self.get_kb(slug)
        data = self.SourceListInput(data=request.data)
        data.is_valid(raise_exception=True)
        source, job = source_add(kb=kb, **data.validated_data)
        return accepted(job, request, source=SourceOutput(source).data)


class SourceDetailApi(IngestAPIView):
    @extend_schema(responses=SourceOutput)
    def get(self, request, slug, pk):
        return Response(SourceOutput(self.get_source(slug, pk)).data)

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
        uploads = data.validated_data["file"]
        try:
            check_uploads(uploads)
        except UploadRefused as refused:
            error = PayloadTooLarge if refused.too_large else UnsupportedMediaType
            raise error(refused.summary, fields={"file": refused.reasons}) from refused
        try:
            files = [
                store_upload(data=upload, filename=safe_filename(upload.name), content_type=upload.content_type or "")
                for upload in uploads
            ]
        except StorageError as exc:
            # Nothing is accepted without its bytes stored: refuse now, the client retries.
            raise ServiceUnavailable(f"The object store is unavailable; try again shortly. ({exc})") from exc
        source, job = upload_add(kb=kb, files=files, name=data.validated_data["name"])
        return accepted(job, request, source=SourceOutput(source).data)


def safe_filename(name: str) -> str:
    """The last path component only: a file name never names a place on our disks."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return base[:255] or "upload"


class DocumentOutput(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = [
            "id",
            "source",
            "key",
            "title",
            "status",
            "chunk_count",
            "size",
            "content_type",
            "error",
            "updated_at",
        ]


class DocumentListApi(IngestAPIView):
    @extend_schema(responses=DocumentOutput(many=True))
    def get(self, request, slug):
        filters = {k: request.query_params[k] for k in ("status", "source", "q") if request.query_params.get(k)}
        return self.paginate(document_list(kb=self.get_kb(slug), filters=filters), DocumentOutput)


class DocumentDetailApi(IngestAPIView):
    def get_document(self, slug, pk) -> tuple[KnowledgeBase, Document]:
        kb = self.get_kb(slug)
        return kb, get_object_or_404(Document, source__kb=kb, pk=pk)

    @extend_schema(responses=DocumentOutput)
    def get(self, request, slug, pk):
        return Response(DocumentOutput(self.get_document(slug, pk)[1]).data)

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
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(JobOutput(page, many=True, context={"request": request}).data)


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
