"""REST API reads and creates of knowledge bases, sources and documents.

Staff sessions may do everything; API keys need the `ingest` scope and the knowledge base. What
starts or deletes through an ingestion job (adding, syncing or deleting a source, uploading,
deleting a knowledge base or a document) is added by the views of `ingestion.api`, which extend
these and answer the same URLs.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from knowledge.models import Document, KnowledgeBase, Language, Source
from knowledge.permissions import HasScope, is_staff, may_use_kb, readable_kbs
from knowledge.selectors import document_list, source_list
from knowledge.serializers import DocumentOutput, KnowledgeBaseOutput, SourceOutput
from knowledge.services import KB_SLUG_HELP, knowledge_base_create


# Base of the knowledge and ingestion API views: the scope, and the objects a URL names. (A comment,
# not a docstring: drf-spectacular would show a docstring as every operation's description.)
class KnowledgeAPIView(APIView):
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

    def get_document(self, slug, pk) -> tuple[KnowledgeBase, Document]:
        kb = self.get_kb(slug)
        return kb, get_object_or_404(Document, source__kb=kb, pk=pk)

    def paginate(self, queryset, serializer_class):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        serializer = serializer_class(page, many=True, context={"request": self.request})
        return paginator.get_paginated_response(serializer.data)


class KnowledgeBaseListApi(KnowledgeAPIView):
    class KnowledgeBaseListInput(serializers.Serializer):
        slug = serializers.CharField(max_length=64, help_text=KB_SLUG_HELP)  # checked by the service
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        embedder = serializers.CharField(required=False, default=None, allow_null=True)
        language = serializers.ChoiceField(choices=Language.choices, required=False, default=Language.ENGLISH)
        ocr_languages = serializers.CharField(max_length=100, required=False, allow_blank=True, default="",
                                              help_text='Tesseract languages, e.g. "eng+chi_sim"; "" for KB_OCR_LANGS.')

    @extend_schema(responses=KnowledgeBaseOutput(many=True))
    def get(self, request):
        return self.paginate(readable_kbs(request).order_by("slug"), KnowledgeBaseOutput)

    @extend_schema(request=KnowledgeBaseListInput, responses={201: KnowledgeBaseOutput})
    def post(self, request):
        if not is_staff(request):
            raise PermissionDenied("Only staff may create knowledge bases.")
        data = self.KnowledgeBaseListInput(data=request.data)
        data.is_valid(raise_exception=True)
        kb = knowledge_base_create(**data.validated_data)
        return Response(KnowledgeBaseOutput(kb).data, status=status.HTTP_201_CREATED)


class KnowledgeBaseDetailApi(KnowledgeAPIView):
    @extend_schema(responses=KnowledgeBaseOutput)
    def get(self, request, slug):
        return Response(KnowledgeBaseOutput(self.get_kb(slug)).data)


class SourceListApi(KnowledgeAPIView):
    @extend_schema(responses=SourceOutput(many=True))
    def get(self, request, slug):
        return self.paginate(source_list(kb=self.get_kb(slug)), SourceOutput)


class SourceDetailApi(KnowledgeAPIView):
    @extend_schema(responses=SourceOutput)
    def get(self, request, slug, pk):
        return Response(SourceOutput(self.get_source(slug, pk)).data)


class DocumentListApi(KnowledgeAPIView):
    @extend_schema(responses=DocumentOutput(many=True))
    def get(self, request, slug):
        filters = {k: request.query_params[k] for k in ("status", "source", "q") if request.query_params.get(k)}
        return self.paginate(document_list(kb=self.get_kb(slug), filters=filters), DocumentOutput)


class DocumentDetailApi(KnowledgeAPIView):
    @extend_schema(responses=DocumentOutput)
    def get(self, request, slug, pk):
        return Response(DocumentOutput(self.get_document(slug, pk)[1]).data)
