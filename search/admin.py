"""Django admin for answer tasks: read-only, to find a question's answer or why it failed."""

from django.contrib import admin
from django.utils.text import Truncator

from kbportal.job_admin import ReadOnlyJobAdmin
from search.models import AnswerTask


@admin.register(AnswerTask)
class AnswerTaskAdmin(ReadOnlyJobAdmin):
    list_display = ("id", "status_coloured", "reason_line", "question_start", "when", "kb", "generator", "attempts")
    list_filter = ("status", "generator", "kb")
    search_fields = ("question",)
    list_select_related = ("kb",)
    date_hierarchy = "created_at"

    @admin.display(description="question")
    def question_start(self, task) -> str:
        return Truncator(task.question).chars(80)
