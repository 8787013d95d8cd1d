from django import forms

from avatars.models import Avatar, Checkpoint
from avatars.runs import renderable
from core.params import RENDER_BATCH

from . import tts


class CheckpointSelect(forms.Select):
    """Each checkpoint option says whose it is (``data-avatar``), so the page offers only the chosen
    avatar's checkpoints (static/js/video_form.js); the server checks the pair again (video_create)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-avatar"] = str(instance.avatar_id)
        return option


class VideoCreateForm(forms.Form):
    """Choices limited to the user's own trained avatars and their renderable checkpoints. What the avatar
    says is one of two sources: an audio file, or a text spoken by a voice."""

    SOURCES = [("audio", "An audio file"), ("text", "A text, spoken by a voice")]

    avatar = forms.ModelChoiceField(queryset=Avatar.objects.none(), empty_label=None)
    checkpoint = forms.ModelChoiceField(
        queryset=Checkpoint.objects.none(),
        required=False,
        empty_label="the latest (recommended)",
        widget=CheckpointSelect,
    )
    source = forms.ChoiceField(
        choices=SOURCES, required=False, widget=forms.RadioSelect, label="What it says",
        help_text="Left unchosen: whichever of the two you filled in.",
    )  # fmt: skip
    audio = forms.FileField(
        required=False, help_text="WAV, MP3, M4A, OGG, FLAC or WebM. Converted to 16 kHz mono for the engine."
    )
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text="Or a text for the voice to say."
    )
    voice = forms.ChoiceField(
        choices=[(tts.OFFLINE, tts.OFFLINE_LABEL)], initial=tts.OFFLINE,
        help_text="For a text: the standard synthetic voice, or one of your cloned voices (Voices page).",
    )  # fmt: skip
    batch_size = RENDER_BATCH.form_field()

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["avatar"].queryset = Avatar.objects.filter(owner=user, status=Avatar.Status.TRAINED)
        self.fields["checkpoint"].queryset = renderable(
            Checkpoint.objects.filter(avatar__owner=user)
        ).select_related("avatar", "node")
        self.fields["checkpoint"].label_from_instance = _checkpoint_label
        self.fields["voice"].choices = tts.voice_choices(user)  # only the person's own voices

    def clean(self):
        """The chosen source wins: the other one's field is ignored, so a text typed before switching to an
        audio file (or the reverse) is not sent along; the chosen one must be filled in."""
        data = super().clean()
        source = data.get("source")
        if source == "audio":
            data["text"] = ""
            if not data.get("audio"):
                self.add_error("audio", "Choose the audio file the avatar should say.")
        elif source == "text":
            data["audio"] = None
            if not (data.get("text") or "").strip():
                self.add_error("text", "Type the text the avatar should say.")
        return data


def _checkpoint_label(checkpoint) -> str:
    run = f" (run #{checkpoint.run_id})" if checkpoint.run_id else ""
    return (
        f"{checkpoint.avatar.name}: {checkpoint.stage} {checkpoint.iteration}{run} on {checkpoint.node.name}"
    )
