"""``{{ job.kind|kind_label }}``: a job kind's registered label (its raw name when no app registers it)."""

from django import template

from ..kinds import kind_label as label_of

register = template.Library()


@register.filter
def kind_label(kind: str) -> str:
    return label_of(kind)
