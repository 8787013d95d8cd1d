from django import forms

from avatars.models import Avatar, Checkpoint
from avatars.runs import renderable
from core.params import RENDER_BATCH

from . import tts


class VideoCreateForm(forms.Form):
    """Choices limited to the user's own trained avatars and their renderable checkpoints."""

    avatar = forms.ModelChoiceField(queryset=Avatar.objects.none(), empty_label=None)
    checkpoint = forms.ModelChoiceField(
        queryset=Checkpoint.objects.none(), required=False, empty_label="the latest (recommended)"
    )
    audio = forms.FileField(
        required=False, help_text="WAV, MP3, M4A, OGG, FLAC or WebM. Converted to 16 kHz mono for the engine."
    )
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text="Or a text for the voice to say."
    )
    voice = forms.ChoiceField(choices=list(tts.VOICES.items()), initial=tts.OFFLINE)
    batch_size = RENDER_BATCH.form_field()

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["avatar"].queryset = Avatar.objects.filter(owner=user, status=Avatar.Status.TRAINED)
        self.fields["checkpoint"].queryset = renderable(
            Checkpoint.objects.filter(avatar__owner=user)
        ).select_related("avatar", "node")
        self.fields["checkpoint"].label_from_instance = _checkpoint_label


def _checkpoint_label(checkpoint) -> str:
    run = f" (run #{checkpoint.run_id})" if checkpoint.run_id else ""
    return (
        f"{checkpoint.avatar.name}: {checkpoint.stage} {checkpoint.iteration}{run} on {checkpoint.node.name}"
    )
