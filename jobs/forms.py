from django import forms

from core.params import DEMO_COARSE_ITERATIONS, DEMO_ITERATIONS, DEMO_SECONDS
from gpu_nodes.models import Node


class DemoTrainForm(forms.Form):
    """Start a demo training: the CPU stand-in engine, for trying the platform. Not a real model."""

    # The kind it submits, registered by avatars/demo_kind.py (``DEMO_TRAIN``), which jobs may not import.
    kind = "demo_train"

    seconds = DEMO_SECONDS.form_field()
    iterations = DEMO_ITERATIONS.form_field(label="Fine iterations")
    coarse_iterations = DEMO_COARSE_ITERATIONS.form_field()
    node = forms.ModelChoiceField(
        queryset=Node.objects.filter(enabled=True),
        required=False,
        to_field_name="name",
        empty_label="Any node with a free slot",
    )
