from django import forms

from gpu_nodes.models import Node


class DemoTrainForm(forms.Form):
    """Start a demo training: the CPU stand-in engine, for trying the platform. Not a real model."""

    seconds = forms.FloatField(min_value=0, max_value=86400, initial=20, help_text="How long the demo runs.")
    iterations = forms.IntegerField(min_value=10, max_value=100_000, initial=1000, label="Fine iterations")
    coarse_iterations = forms.IntegerField(min_value=10, max_value=100_000, initial=500)
    node = forms.ModelChoiceField(
        queryset=Node.objects.filter(enabled=True),
        required=False,
        to_field_name="name",
        empty_label="Any node with a free slot",
    )
