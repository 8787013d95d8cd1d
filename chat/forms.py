from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from avatars.selectors import avatars_visible_to

from .models import Language
from .selectors import voices_visible_to
from .services import VOICE_CONSENT_STATEMENT


class VoiceCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    language = forms.ChoiceField(choices=Language.choices, initial=Language.EN)
    recording = forms.FileField(widget=forms.ClearableFileInput(attrs={"accept": "audio/*,video/webm"}))
    consent = forms.BooleanField(label=VOICE_CONSENT_STATEMENT)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The limits, stated before the upload: the service checks the same settings (voice_create).
        low, high = settings.CHAT_VOICE_MIN_SECONDS, settings.CHAT_VOICE_MAX_SECONDS
        self.fields["recording"].help_text = (
            f"{low:g}–{high:g} s of the person speaking clearly, alone (10–30 s clone best); WAV, MP3, M4A, "
            f"OGG, FLAC or WebM, up to {filesizeformat(settings.MAX_UPLOAD_BYTES)}."
        )


class ConversationForm(forms.Form):
    """Avatars and voices offered are the user's own; the API key field is write-only."""

    avatar = forms.ModelChoiceField(queryset=None, empty_label=None)
    voice = forms.ModelChoiceField(queryset=None, required=False, empty_label="Standard voice (no cloning)")
    language = forms.ChoiceField(choices=[("", "Recognise from speech"), *Language.choices], required=False)
    title = forms.CharField(max_length=200, required=False)
    system_prompt = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        max_length=settings.CHAT_SYSTEM_PROMPT_MAX_CHARS,  # the browser's hint; the service decides
        help_text="Who the avatar is and how it answers.",
    )  # fmt: skip
    llm_base_url = forms.URLField(
        required=False, assume_scheme="https", label="LLM base URL",
        help_text="An OpenAI-compatible endpoint on a public host, if this platform allows your own; it "
        "needs its own API key. Empty: the platform's (Zhipu GLM by default).",
    )  # fmt: skip
    llm_model = forms.CharField(
        max_length=100, required=False, label="LLM model", help_text="Empty: the platform's."
    )
    llm_api_key = forms.CharField(
        required=False, label="LLM API key", widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Empty: keep the current one (or the platform's).",
    )  # fmt: skip
    remove_api_key = forms.BooleanField(required=False, label="Remove this conversation's own API key")

    def __init__(self, *args, user, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["avatar"].queryset = avatars_visible_to(user)
        self.fields["voice"].queryset = voices_visible_to(user)
        if editing:
            del self.fields["avatar"]  # a conversation keeps its avatar
        else:
            del self.fields["remove_api_key"]
