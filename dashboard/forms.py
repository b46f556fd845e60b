"""Dashboard forms: they parse what a browser posts; the services decide what is valid.

Fields a service validates are optional here (with a `required` attribute for the browser only),
so the message the operator reads is the service's, the same one the API gives.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from ingestion.extraction import SUPPORTED_KINDS
from ingestion.uploads import UploadRefused, check_uploads
from knowledge.models import DocumentStatus, KnowledgeBase, Language, Scope
from knowledge.services import KB_SLUG_HELP
from knowledge.source_config import URL_DEFAULTS
from search.asking.services import MAX_PASSAGES
from search.query import MAX_QUERY_CHARS, MAX_SIZE, MODES


def lines(value: str) -> list[str]:
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def add_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form fields it names.

    Source config errors read "<config field>: message"; they go on that field when the form has it.
    """
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for name, messages in error.message_dict.items():
        for message in messages:
            field, _, rest = message.partition(": ")
            if name == "config" and field in form.fields:
                form.add_error(field, rest)
            elif name in form.fields:
                form.add_error(name, message)
            else:
                form.add_error(None, message)


class KnowledgeBaseForm(forms.Form):
    name = forms.CharField(max_length=200)
    # Checked by the service (knowledge_base_create); static/js/kb_form.js suggests it from the name.
    slug = forms.CharField(max_length=64, help_text=KB_SLUG_HELP)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    embedder = forms.ChoiceField(choices=())
    language = forms.ChoiceField(choices=Language.choices, initial=Language.ENGLISH, required=False,
                                 help_text="How keyword search splits and stems this knowledge base's text.")
    ocr_languages = forms.CharField(max_length=100, required=False, label="OCR languages",
                                    help_text='For scans and photos: Tesseract languages such as eng or eng+chi_sim; '
                                              "empty for the server's default.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["embedder"].choices = [(name, name) for name in sorted(settings.KB_EMBEDDERS)]
        self.fields["embedder"].initial = settings.KB_EMBEDDER

    def clean_language(self) -> str:
        return self.cleaned_data["language"] or Language.ENGLISH


class TextSourceForm(forms.Form):
    name = forms.CharField(max_length=200)
    text = forms.CharField(
        required=False, strip=False, widget=forms.Textarea(attrs={"rows": 6, "required": True})
    )

    def source_config(self) -> dict:
        return {"text": self.cleaned_data["text"]}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


class FileSourceForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    files = MultipleFileField(widget=MultipleFileInput(), help_text=f"One or more files: {SUPPORTED_KINDS}.")

    def clean_files(self):
        uploads = self.cleaned_data["files"]
        try:
            check_uploads(uploads)
        except UploadRefused as refused:
            raise ValidationError([refused.summary, *refused.reasons]) from refused
        return uploads


class UrlSourceForm(forms.Form):
    name = forms.CharField(max_length=200)
    start_urls = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "required": True}),
        help_text="One URL per line.",
    )
    allowed_domains = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line; default: the start URLs' hosts.",
    )
    include = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="URL patterns to follow, one per line."
    )
    exclude = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="URL patterns to skip, one per line."
    )
    max_depth = forms.IntegerField(initial=URL_DEFAULTS["max_depth"], widget=forms.NumberInput(attrs={"min": 0}))
    max_pages = forms.IntegerField(initial=URL_DEFAULTS["max_pages"], widget=forms.NumberInput(attrs={"min": 1}))
    concurrency = forms.IntegerField(initial=URL_DEFAULTS["concurrency"], widget=forms.NumberInput(attrs={"min": 1}))
    delay = forms.FloatField(
        initial=URL_DEFAULTS["delay"], help_text="Seconds between requests to a host.",
        widget=forms.NumberInput(attrs={"min": 0, "step": "0.1"}),
    )
    use_sitemap = forms.BooleanField(required=False, label="Read sitemap.xml")
    schedule_hours = forms.FloatField(
        required=False, help_text="Re-crawl every N hours; empty for never.", widget=forms.NumberInput(attrs={"min": 0})
    )

    def source_config(self) -> dict:
        data = self.cleaned_data
        config = {
            "start_urls": lines(data["start_urls"]),
            "allowed_domains": lines(data["allowed_domains"]),
            "include": lines(data["include"]),
            "exclude": lines(data["exclude"]),
            "use_sitemap": data["use_sitemap"],
            "schedule_hours": data["schedule_hours"],
        }
        for field in ("max_depth", "max_pages", "concurrency", "delay"):
            if data.get(field) is not None:
                config[field] = data[field]
        return config


class DocumentFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *DocumentStatus.choices])
    q = forms.CharField(required=False, label="Title or key contains")


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=200)
    kb_slugs = forms.MultipleChoiceField(
        required=False, label="Knowledge bases", widget=forms.CheckboxSelectMultiple, choices=()
    )
    scopes = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, choices=Scope.choices, initial=[Scope.SEARCH]
    )
    rate = forms.CharField(
        required=False, max_length=20, help_text=f"Such as 50/s or 600/m; default {settings.KB_DEFAULT_KEY_RATE}."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kb_slugs"].choices = [(kb.slug, f"{kb.name} ({kb.slug})") for kb in KnowledgeBase.objects.all()]


class PlaygroundForm(forms.Form):
    kb = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.order_by("slug"), to_field_name="slug", label="Knowledge base", empty_label=None
    )
    q = forms.CharField(max_length=500, label="Query")
    size = forms.IntegerField(
        required=False, initial=5, min_value=1, max_value=min(20, MAX_SIZE), label="Results per mode"
    )

    def clean_size(self) -> int:
        """A link with only `kb` and `q` searches with the default size."""
        size = self.cleaned_data["size"]
        return self.fields["size"].initial if size is None else size


class AskForm(forms.Form):
    """The Ask tab. The question and the passages are checked by `answer_submit`, like the API."""

    kb = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.order_by("slug"), to_field_name="slug", label="Knowledge base", empty_label=None
    )
    question = forms.CharField(
        required=False,
        label="Question",
        widget=forms.Textarea(attrs={"rows": 3, "required": True, "maxlength": MAX_QUERY_CHARS}),
    )
    mode = forms.ChoiceField(
        choices=[(mode, mode.capitalize()) for mode in MODES], initial="hybrid", label="Retrieval mode"
    )
    passages = forms.IntegerField(
        required=False,
        label="Passages",
        help_text=f"Chunks retrieved for the context, 1 to {MAX_PASSAGES}.",
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_PASSAGES}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["passages"].initial = settings.KB_ANSWER_PASSAGES
