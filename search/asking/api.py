"""The asking API and queue statistics.

- `POST /api/v1/ask`: 202 with the task's id, status URL and WebSocket URL; 200 with the stored
  answer when the same question was answered on the same generation of the knowledge base.
- `GET /api/v1/ask/<id>` (`?wait=N`, at most 30 s: long-poll until the answer is final).
- `POST /api/v1/ask/<id>/cancel`.
- `GET /api/v1/queues`: staff or an `ops` key.

Asking needs the `ask` scope (or a staff session) and is rate limited like search, on its own
counters. A key reads only the tasks it asked; another's task is a 404.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from kbportal.queues import queue_stats
from kbportal.validation import validated
from knowledge.permissions import HasScope, is_staff, request_api_key
from search.api import enforce_rate_limit
from search.asking.answering import answer_state
from search.asking.services import (
    MAX_PASSAGES,
    MAX_WAIT_SECONDS,
    answer_cancel,
    answer_get,
    answer_submit,
    answer_visible_to,
    answer_wait,
)
from search.models import AnswerTask
from search.query import MAX_QUERY_CHARS, MODES


class AskInput(serializers.Serializer):
    kb = serializers.SlugField(max_length=64, help_text="The knowledge base to ask.")
    question = serializers.CharField(max_length=MAX_QUERY_CHARS)
    mode = serializers.ChoiceField(choices=MODES, default="hybrid", help_text="Retrieval mode.")
    passages = serializers.IntegerField(min_value=1, max_value=MAX_PASSAGES, required=False,
                                        help_text="Passages retrieved for the context (default KB_ANSWER_PASSAGES).")


class CitationOutput(serializers.Serializer):
    number = serializers.IntegerField(help_text="The [n] the answer uses.")
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    position = serializers.IntegerField(help_text="Position of the chunk within its document.")
    location = serializers.DictField(required=False, help_text='Where the chunk is: {"page": 3}, {"slide": 5}, ...')
    where = serializers.CharField(required=False, help_text='The location in words ("page 3"); "" for none.')
    chunk_id = serializers.CharField()
    source_id = serializers.IntegerField()
    url = serializers.CharField()
    snippet = serializers.CharField(help_text="HTML-escaped text of the chunk (the quoted sentences when extractive).")
    quote = serializers.CharField(help_text="The sentences quoted verbatim (extractive answers).")


class AnswerOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kb = serializers.CharField()
    question = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed", "canceled"])
    answer = serializers.CharField(help_text="The answer (partial while running).")
    citations = CitationOutput(many=True)
    generator = serializers.CharField()
    extractive = serializers.BooleanField(help_text="True when the answer quotes the sources verbatim.")
    model = serializers.CharField()
    error = serializers.CharField()
    reason = serializers.CharField(help_text="Why it failed or was canceled, on one line; empty otherwise.")
    retry_reason = serializers.CharField(help_text="The previous attempt's error while it is being retried.")
    reused = serializers.BooleanField(help_text="Answered from a stored identical question.")
    status_url = serializers.CharField(required=False)
    websocket_url = serializers.CharField(required=False)


def with_urls(request, task: AnswerTask) -> dict:
    scheme = "wss" if request.is_secure() else "ws"
    return {
        **answer_state(task),
        "status_url": request.build_absolute_uri(f"/api/v1/ask/{task.pk}"),
        "websocket_url": f"{scheme}://{request.get_host()}/ws/answers/{task.pk}/",
    }


class AskApi(APIView):
    """Ask a question. `Authorization: Bearer <key>` with scope `ask`, or a staff session."""

    permission_classes = [HasScope]
    required_scope = "ask"

    def initial(self, request, *args, **kwargs):
        enforce_rate_limit(request, counter="ask")
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="ask",
        summary="Ask a knowledge base a question",
        request=AskInput,
        responses={
            202: OpenApiResponse(AnswerOutput, description="Accepted: follow status_url or websocket_url."),
            200: OpenApiResponse(AnswerOutput, description="Answered at once from a stored identical question."),
            400: OpenApiResponse(description="Invalid fields."),
            403: OpenApiResponse(description="The key lacks the ask scope or the knowledge base."),
            404: OpenApiResponse(description="Unknown knowledge base."),
            429: OpenApiResponse(description="Rate limit reached; see Retry-After."),
        },
    )
    def post(self, request):
        values = validated(AskInput, request.data, changing="question")
        api_key = None if is_staff(request) else request_api_key(request)
        task, reused = answer_submit(
            kb_slug=values["kb"], question=values["question"], mode=values["mode"],
            passages=values.get("passages"), api_key=api_key, user=request.user if api_key is None else None,
        )
        return Response(with_urls(request, task), status=status.HTTP_200_OK if reused else status.HTTP_202_ACCEPTED)


class AnswerTaskMixin:
    permission_classes = [HasScope]
    required_scope = "ask"

    def visible_task(self, request, task_id: int) -> AnswerTask:
        task = answer_get(task_id)
        api_key = request_api_key(request)
        if task is None or not answer_visible_to(task, api_key=api_key, user=request.user):
            raise NotFound("No such answer task.")
        return task


class AnswerApi(AnswerTaskMixin, APIView):
    @extend_schema(
        operation_id="ask_status",
        summary="An answer task's status and result",
        parameters=[OpenApiParameter("wait", OpenApiTypes.FLOAT, description=(
            f"Seconds (at most {MAX_WAIT_SECONDS:g}) to wait for the final answer before answering."))],
        responses={200: AnswerOutput, 404: OpenApiResponse(description="No such task (or not yours).")},
    )
    def get(self, request, task_id: int):
        task = self.visible_task(request, task_id)
        try:
            wait = float(request.query_params.get("wait", 0) or 0)
        except ValueError:
            raise serializers.ValidationError({"wait": "A number of seconds."})
        if wait > 0 and not task.is_finished:
            task = answer_wait(task, min(wait, MAX_WAIT_SECONDS))
        return Response(with_urls(request, task))


class AnswerCancelApi(AnswerTaskMixin, APIView):
    @extend_schema(operation_id="ask_cancel", summary="Cancel an answer task", request=None,
                   responses={202: AnswerOutput, 404: OpenApiResponse(description="No such task.")})
    def post(self, request, task_id: int):
        task = answer_cancel(self.visible_task(request, task_id))
        return Response(with_urls(request, task), status=status.HTTP_202_ACCEPTED)


class QueuesApi(APIView):
    """rq queue statistics, for operators: staff or an `ops` key."""

    permission_classes = [HasScope]
    required_scope = "ops"

    @extend_schema(operation_id="queues", summary="Queue statistics and workers",
                   responses={200: OpenApiResponse(description="Per queue: counts and workers.")})
    def get(self, request):
        return Response({"queues": queue_stats()})
