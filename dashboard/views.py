"""Dashboard pages for staff: thin views over the ingestion and knowledge services.

Every action is a plain POST form (with CSRF) that redirects back, so the dashboard works without
JavaScript; `static/js/jobs.js` only adds live progress. A form a service refuses is shown again
with the service's messages and status 400.
"""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import forms
from dashboard.answers import answer_parts, citation_links
from dashboard.overview import job_counts, kb_live_jobs, kb_summaries, queue_stats, system_status
from dashboard.pickers import picked_kb, remember_kb
from dashboard.playground import compare_modes
from ingestion.models import IngestionJob
from ingestion.services import (
    ObjectStoreDown,
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
from knowledge.models import ApiKey, Document, KnowledgeBase, Source, SourceKind
from knowledge.selectors import document_list, source_list
from knowledge.services import api_key_create, api_key_revoke, knowledge_base_create
from knowledge.storage import ObjectNotFound, StorageError, get_object_store
from search.asking.answering import answer_state
from search.asking.services import answer_cancel, answer_get, answer_retry, answer_submit
from search.models import AnswerTask

DOCUMENTS_PER_PAGE = 25
JOBS_PER_PAGE = 50
SOURCE_FORMS = {
    SourceKind.TEXT: forms.TextSourceForm,
    SourceKind.FILE: forms.FileSourceForm,
    SourceKind.URL: forms.UrlSourceForm,
}


def staff_required(view):
    """Anonymous users go to the login page; signed-in users who are not staff get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_staff and request.user.is_active):
            raise PermissionDenied("The dashboard is for staff.")
        return view(request, *args, **kwargs)

    return wrapper


def with_states(jobs) -> list[tuple[IngestionJob, dict]]:
    return [(job, job_state(job)) for job in jobs]


# -- overview ----------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The site root: staff go to the dashboard, everyone else to the API docs."""
    if request.user.is_authenticated and request.user.is_staff and request.user.is_active:
        return redirect("dashboard:overview")
    return redirect("api-docs")


@staff_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    return render_overview(request, forms.KnowledgeBaseForm())


def render_overview(request: HttpRequest, kb_form: forms.KnowledgeBaseForm, status: int = 200) -> HttpResponse:
    context = {
        "kbs": kb_summaries(),
        "jobs": job_counts(),
        "queues": queue_stats(),
        "system": system_status(),
        "kb_form": kb_form,
    }
    return render(request, "dashboard/overview.html", context, status=status)


@staff_required
@require_POST
def kb_new(request: HttpRequest) -> HttpResponse:
    form = forms.KnowledgeBaseForm(request.POST)
    if form.is_valid():
        try:
            kb = knowledge_base_create(**form.cleaned_data)
        except ValidationError as exc:
            forms.add_service_errors(form, exc)
        else:
            messages.success(request, f"Knowledge base {kb.slug} created.")
            return redirect("dashboard:kb", slug=kb.slug)
    return render_overview(request, form, status=400)


# -- knowledge base ----------------------------------------------------------------------------


@staff_required
@require_GET
def kb_detail(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_object_or_404(KnowledgeBase, slug=slug)
    remember_kb(request, kb)
    return render_kb(request, kb)


#: Stored originals a browser may show inline; anything else (HTML, SVG, Office files) is a
#: download, so an uploaded page never runs in the dashboard's origin.
INLINE_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"}


@staff_required
@require_GET
def document_original(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The document's stored bytes, as uploaded or fetched (a PDF opens at `#page=N`)."""
    document = get_object_or_404(Document, pk=pk, source__kb__slug=slug)
    if not document.object_key:
        raise Http404("This document has no stored original.")
    try:
        data = get_object_store().get(document.object_key)
    except ObjectNotFound:
        raise Http404("The stored original is gone.")
    except StorageError as exc:
        return HttpResponse(f"The object store is unavailable: {exc}", status=503, content_type="text/plain")
    content_type = document.content_type if document.content_type in INLINE_TYPES else "application/octet-stream"
    response = HttpResponse(data, content_type=content_type)
    filename = document.key.rsplit("/", 1)[-1] or f"document-{document.pk}"
    disposition = "inline" if content_type in INLINE_TYPES else "attachment"
    response.headers["Content-Disposition"] = content_disposition_header(disposition == "attachment", filename)
    if content_type != "application/pdf":  # a sandboxed page cannot show a PDF in the browser's viewer
        response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def render_kb(
    request: HttpRequest, kb: KnowledgeBase, bound: forms.forms.Form | None = None, status: int = 200
) -> HttpResponse:
    source_forms = {kind: form_class(prefix=kind) for kind, form_class in SOURCE_FORMS.items()}
    if bound is not None:
        source_forms[bound.prefix] = bound
    filters = forms.DocumentFilterForm(request.GET)
    filters.is_valid()
    try:
        documents = document_list(kb=kb, filters=filters.cleaned_data)
    except ValidationError as exc:
        forms.add_service_errors(filters, exc)
        documents = document_list(kb=kb)
    page = Paginator(documents, DOCUMENTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "kb": kb,
        "sources": source_list(kb=kb),
        "source_forms": source_forms,
        "open_form": bound.prefix if bound is not None else "",
        "filters": filters,
        "documents": page,
        "filter_query": query.urlencode(),
        "jobs": with_states(kb_live_jobs(kb, recent=10)),
    }
    return render(request, "dashboard/kb_detail.html", context, status=status)


@staff_required
@require_POST
def source_new(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    kb = get_object_or_404(KnowledgeBase, slug=slug)
    if kind not in SOURCE_FORMS:
        return redirect("dashboard:kb", slug=kb.slug)
    form = SOURCE_FORMS[kind](request.POST, request.FILES, prefix=kind)
    status = 400
    if form.is_valid():
        try:
            source, job = add_source(kb, kind, form)
        except ValidationError as exc:
            forms.add_service_errors(form, exc)
        except ObjectStoreDown as exc:  # nothing was accepted: the operator tries again
            form.add_error(None, exc.detail)
            status = 503
        else:
            messages.success(request, f"Source “{source.name}” added; its sync is job {job.pk}.")
            return redirect(reverse("dashboard:kb", args=[kb.slug]) + "#jobs")
    return render_kb(request, kb, bound=form, status=status)


def add_source(kb: KnowledgeBase, kind: str, form) -> tuple[Source, IngestionJob]:
    data = form.cleaned_data
    if kind == SourceKind.FILE:
        return uploads_add(kb=kb, uploads=data["files"], name=data["name"])
    return source_add(kb=kb, kind=kind, name=data["name"], config=form.source_config())


@staff_required
@require_POST
def source_sync_view(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    source = get_object_or_404(Source, kb__slug=slug, pk=pk)
    job = source_sync(source=source)
    messages.success(request, f"Sync of “{source.name}” queued as job {job.pk}.")
    return redirect(reverse("dashboard:kb", args=[slug]) + "#jobs")


@staff_required
def kb_delete_view(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_object_or_404(KnowledgeBase, slug=slug)
    if request.method == "POST":
        job = knowledge_base_delete(kb=kb)
        messages.success(request, f"Knowledge base “{kb.name}” is deleted; job {job.pk} removes its search index "
                                  "entries and files.")
        return redirect("dashboard:job", pk=job.pk)
    counts = {"sources": kb.sources.count(), "documents": Document.objects.filter(source__kb=kb).count(),
              "keys": kb.api_keys.count()}
    return render(request, "dashboard/kb_confirm_delete.html", {"kb": kb, **counts})


@staff_required
def source_delete_view(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    source = get_object_or_404(Source.objects.select_related("kb"), kb__slug=slug, pk=pk)
    if request.method == "POST":
        job = source_delete(source=source)
        messages.success(request, f"Source “{source.name}” is being deleted (job {job.pk}).")
        return redirect("dashboard:kb", slug=slug)
    documents = source.documents.count()
    return render(request, "dashboard/source_confirm_delete.html", {"source": source, "documents": documents})


# -- jobs --------------------------------------------------------------------------------------


@staff_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = IngestionJob.objects.select_related("kb", "source").order_by("-created_at")
    status, kb = request.GET.get("status", ""), request.GET.get("kb", "")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    if kb:
        jobs = jobs.filter(kb__slug=kb)
    page = Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    live_kbs = sorted({job.kb_slug for job in page if job.kb_id} | ({kb} if kb else set()))
    context = {
        "page": page,
        "jobs": with_states(page),
        "status": status,
        "kb": kb,
        "statuses": JobStatus.values,
        "kbs": KnowledgeBase.objects.order_by("slug").values_list("slug", flat=True),
        "live_kbs": live_kbs,
        "filter_query": query.urlencode(),
    }
    return render(request, "dashboard/jobs.html", context)


@staff_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(IngestionJob.objects.select_related("kb", "source"), pk=pk)
    return render(request, "dashboard/job_detail.html", {"job": job, "state": job_state(job)})


@staff_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_cancel(job=get_object_or_404(IngestionJob, pk=pk))
    if job.status == JobStatus.CANCELED:
        messages.success(request, f"Job {job.pk} canceled.")
    elif job.is_finished:
        messages.warning(request, f"Job {job.pk} had already finished ({job.status}).")
    else:
        messages.info(request, f"Job {job.pk} will stop at its next batch boundary.")
    return redirect("dashboard:job", pk=job.pk)


@staff_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    old = get_object_or_404(IngestionJob, pk=pk)
    job = job_retry(job=old)
    if job.pk == old.pk:
        messages.info(request, f"Job {job.pk} is still active.")
    else:
        messages.success(request, f"Job {old.pk} retried as job {job.pk}.")
    return redirect("dashboard:job", pk=job.pk)


# -- search playground -------------------------------------------------------------------------


@staff_required
@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    if "q" in request.GET:
        form = forms.PlaygroundForm(request.GET)
    else:
        form = forms.PlaygroundForm(initial={"kb": picked_kb(request)})
    results = None
    if form.is_bound and form.is_valid():
        remember_kb(request, form.cleaned_data["kb"])
        results = compare_modes(form.cleaned_data["kb"], form.cleaned_data["q"], form.cleaned_data["size"])
    return render(request, "dashboard/playground.html", {"form": form, "results": results})


# -- ask ---------------------------------------------------------------------------------------

RECENT_ANSWERS = 10


@staff_required
@require_http_methods(["GET", "POST"])
def ask(request: HttpRequest) -> HttpResponse:
    """The Ask tab. Without JavaScript the form posts here and lands on the answer page;
    static/js/ask.js posts to /api/v1/ask instead and streams the answer into this page."""
    if request.method == "GET":
        return render_ask(request, forms.AskForm(initial={"kb": picked_kb(request)}))
    form = forms.AskForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        remember_kb(request, data["kb"])
        try:
            task, reused = answer_submit(
                kb_slug=data["kb"].slug, question=data["question"], mode=data["mode"], passages=data["passages"],
                user=request.user,
            )
        except ValidationError as exc:
            forms.add_service_errors(form, exc)
        else:
            if reused:
                messages.info(request, "Answered at once: the same question was answered on this content before.")
            return redirect("dashboard:answer", pk=task.pk)
    return render_ask(request, form, status=400)


def render_ask(request: HttpRequest, form: forms.AskForm, status: int = 200) -> HttpResponse:
    recent = AnswerTask.objects.select_related("kb").order_by("-created_at")[:RECENT_ANSWERS]
    return render(request, "dashboard/ask.html", {"form": form, "recent": recent}, status=status)


def answer_or_404(pk: int) -> AnswerTask:
    task = answer_get(pk)
    if task is None:
        raise Http404("No such answer (answers expire).")
    return task


@staff_required
@require_GET
def answer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    task = answer_or_404(pk)
    remember_kb(request, task.kb)
    cited = {citation["number"] for citation in task.citations}
    context = {
        "task": task,
        "state": answer_state(task),
        "parts": answer_parts(task.answer, cited),
        "citations": citation_links(task),
    }
    return render(request, "dashboard/answer.html", context)


@staff_required
@require_POST
def answer_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    task = answer_or_404(pk)
    task = answer_cancel(task)
    if task.status == JobStatus.CANCELED:
        messages.success(request, f"Answer {task.pk} canceled.")
    elif task.is_finished:
        messages.warning(request, f"Answer {task.pk} had already finished ({task.status}).")
    else:
        messages.info(request, f"Answer {task.pk} stops at its next flush.")
    return redirect("dashboard:answer", pk=task.pk)


@staff_required
@require_POST
def answer_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    task = answer_or_404(pk)
    try:
        new, reused = answer_retry(task=task, user=request.user)
    except ValidationError as exc:
        messages.warning(request, " ".join(exc.messages))
        return redirect("dashboard:answer", pk=task.pk)
    at_once = " (answered at once from a stored answer)" if reused else ""
    messages.success(request, f"Answer {task.pk} asked again as answer {new.pk}{at_once}.")
    return redirect("dashboard:answer", pk=new.pk)


# -- API keys ----------------------------------------------------------------------------------


@staff_required
def api_keys(request: HttpRequest) -> HttpResponse:
    new_key = None
    status = 200
    if request.method == "POST":
        form = forms.ApiKeyForm(request.POST)
        if form.is_valid():
            try:
                _, new_key = api_key_create(
                    name=form.cleaned_data["name"],
                    kb_slugs=form.cleaned_data["kb_slugs"],
                    scopes=form.cleaned_data["scopes"],
                    rate=form.cleaned_data["rate"] or None,
                )
            except ValidationError as exc:
                forms.add_service_errors(form, exc)
            else:
                form = forms.ApiKeyForm()
        if new_key is None:
            status = 400
    else:
        form = forms.ApiKeyForm()
    keys = ApiKey.objects.prefetch_related("knowledge_bases").order_by("revoked", "-created_at")
    context = {"form": form, "keys": keys, "new_key": new_key}
    response = render(request, "dashboard/api_keys.html", context, status=status)
    if new_key:
        # The secret is in this page only: no cache may keep a copy.
        response["Cache-Control"] = "no-store"
    return response


@staff_required
@require_http_methods(["GET", "POST"])
def api_key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation; the confirmation page's POST revokes."""
    key = get_object_or_404(ApiKey, pk=pk)
    if request.method == "POST":
        api_key_revoke(key=key)
        messages.success(request, f"Key {key.name} ({key.prefix}) revoked.")
        return redirect("dashboard:api-keys")
    return render(request, "dashboard/api_key_confirm_revoke.html", {"key": key})
