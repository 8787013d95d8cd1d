from django import forms

from gpu_nodes.models import Node

from .engines.registry import DEFAULT_ENGINE, engine_choices
from .services import CONSENT_STATEMENT


class AvatarCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    engine = forms.ChoiceField(choices=engine_choices, initial=DEFAULT_ENGINE)
    video = forms.FileField(help_text="3–5 minutes of one person talking to the camera, with sound.")
    au_csv = forms.FileField(
        required=False,
        label="au.csv (optional)",
        help_text="OpenFace's blink output for GaussianTalker. Without it the platform estimates blinks.",
    )
    preferred_node = forms.ModelChoiceField(
        queryset=Node.objects.filter(enabled=True), required=False, to_field_name="name",
        empty_label="any (the scheduler decides)",
        help_text="Where preprocessing goes first; later steps follow the data.",
    )  # fmt: skip
    trim_start = forms.FloatField(
        required=False, min_value=0, label="Keep from (s)",
        help_text="Optional: the part of the clip to train on (set it from the preview).",
    )  # fmt: skip
    trim_end = forms.FloatField(required=False, min_value=0, label="to (s)")
    consent = forms.BooleanField(label=CONSENT_STATEMENT)
