"""``{{ seconds|seconds_text }}``: a span of time in words, as the job pages show it (jobs/models.py)."""

from django import template

from jobs.models import seconds_text as _seconds_text

register = template.Library()


@register.filter
def seconds_text(seconds) -> str:
    if seconds in (None, ""):
        return ""
    return _seconds_text(float(seconds))
