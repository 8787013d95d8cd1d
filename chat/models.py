from django.conf import settings
from django.db import models

from gpu_nodes.models import slug_validator  # one rule for every name that reaches paths


class Language(models.TextChoices):
    """What Whisper recognises and XTTS v2 speaks (espeak-ng speaks them all too)."""

    EN = "en", "English"
    ZH = "zh", "Chinese"
    DE = "de", "German"
    FR = "fr", "French"
    ES = "es", "Spanish"
    IT = "it", "Italian"
    PT = "pt", "Portuguese"
    PL = "pl", "Polish"
    TR = "tr", "Turkish"
    RU = "ru", "Russian"
    NL = "nl", "Dutch"
    CS = "cs", "Czech"
    AR = "ar", "Arabic"
    JA = "ja", "Japanese"
    HU = "hu", "Hungarian"
    KO = "ko", "Korean"
    HI = "hi", "Hindi"


class Voice(models.Model):
    """A person's voice to clone: their reference recording (3–60 s, stored as 22.05 kHz mono WAV, the
    rate XTTS computes latents at), with their consent recorded, reusable across conversations."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="voices")
    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator], editable=False)
    language = models.CharField(
        max_length=8, choices=Language.choices, default=Language.EN, help_text="What the recording speaks."
    )
    reference = models.CharField(
        max_length=300, editable=False, help_text="The reference WAV, relative to MEDIA_ROOT."
    )
    reference_info = models.JSONField(default=dict, blank=True, editable=False)
    latents = models.CharField(
        max_length=300, blank=True, editable=False,
        help_text="XTTS speaker latents computed from the reference, relative to MEDIA_ROOT (a cache).",
    )  # fmt: skip

    consent_given_at = models.DateTimeField()
    consent_given_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    consent_statement = models.TextField(help_text="The statement the uploader confirmed, word for word.")

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="voice_unique_name_per_owner")]

    def __str__(self) -> str:
        return self.name

    @property
    def folder(self) -> str:
        return f"voices/{self.slug}"


class Conversation(models.Model):
    """Talking with one avatar in one voice. LLM settings left blank use the platform's (CHAT_LLM_*)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.CASCADE, related_name="conversations")
    voice = models.ForeignKey(
        Voice, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations",
        help_text="Empty: the offline espeak-ng voice.",
    )  # fmt: skip
    language = models.CharField(
        max_length=8, choices=Language.choices, blank=True,
        help_text="Empty: recognised from each spoken turn (text turns are answered in English).",
    )  # fmt: skip
    system_prompt = models.TextField(blank=True)
    llm_base_url = models.URLField(max_length=300, blank=True, help_text="Empty: CHAT_LLM_BASE_URL.")
    llm_model = models.CharField(max_length=100, blank=True, help_text="Empty: CHAT_LLM_MODEL.")
    # Encrypted at rest (gpu_nodes.secrets); write-only: never sent out by the API or shown again.
    llm_api_key_encrypted = models.TextField(blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    @property
    def has_own_api_key(self) -> bool:
        return bool(self.llm_api_key_encrypted)

    @property
    def folder(self) -> str:
        return f"conversations/{self.pk}"


class Message(models.Model):
    """One turn: the person's (spoken or typed) or the avatar's reply, with how long each stage took."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    # Keys of ``timings``, in seconds from the start of the turn. ``first_frame_rendered``: the live
    # session's first fMP4 piece of the reply; ``first_frame_played``: reported by the owner's browser, from
    # the end of the person's speech to the reply's first frame on screen.
    TIMING_KEYS = (
        "asr", "llm_first_token", "first_sentence", "tts_first_audio", "first_frame_rendered",
        "first_video_chunk", "first_frame_played", "whole_reply",
    )  # fmt: skip
    TIMING_LABELS = {
        "asr": "speech recognised",
        "llm_first_token": "first word thought",
        "first_sentence": "first sentence",
        "tts_first_audio": "first audio",
        "first_frame_rendered": "first frame rendered",
        "first_video_chunk": "first clip",
        "first_frame_played": "first frame played",
        "whole_reply": "whole reply",
    }

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    audio = models.CharField(max_length=300, blank=True, help_text="Recording of a spoken turn (MEDIA_ROOT).")
    language = models.CharField(max_length=8, blank=True, help_text="Given, or recognised by Whisper.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE)
    error = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Stage → seconds (see TIMING_KEYS).")
    voice_engine = models.CharField(max_length=20, blank=True, help_text="xtts or espeak-ng.")
    voice_note = models.CharField(max_length=300, blank=True, help_text="Why espeak-ng spoke, when it did.")
    video_note = models.TextField(
        blank=True, help_text="Why the reply (or its rest) is spoken only, not shown as video, when it is."
    )
    video_frames = models.PositiveIntegerField(
        default=0, help_text="Video frames (25 per s) rendered so far: the next sentence's poses start here."
    )
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    withdrawn = models.BooleanField(
        default=False,
        help_text="A hands-free turn sent at the first pause, after which the person went on speaking (and "
        "its reply): kept for the record, out of the conversation and the LLM's history.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"

    def timing_rows(self) -> list[tuple[str, float]]:
        """The stored stage timings in the order the stages happen."""
        return [(key, self.timings[key]) for key in self.TIMING_KEYS if key in self.timings]

    def all_clips(self) -> bool:
        """Whether every sentence has its rendered clip (then the reply is shown as one video player)."""
        chunks = self.chunks.all()
        return bool(chunks) and all(chunk.video for chunk in chunks)

    def any_audio(self) -> bool:
        return any(chunk.audio for chunk in self.chunks.all())

    def timing_labels(self) -> list[tuple[str, str, float]]:
        """(key, words a person reads, seconds) for the page, in the order the stages happen."""
        return [(key, self.TIMING_LABELS.get(key, key), seconds) for key, seconds in self.timing_rows()]


class Chunk(models.Model):
    """One sentence of a reply: its text, its speech, and its rendered video, played in ``index`` order."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    text = models.TextField()
    audio = models.CharField(max_length=300, blank=True, help_text="Relative to MEDIA_ROOT.")
    audio_seconds = models.FloatField(null=True, blank=True)
    video = models.CharField(max_length=300, blank=True, help_text="Relative to MEDIA_ROOT.")
    pose_start = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The frame of the avatar's ping-pong pose sequence its video starts at.",
    )
    video_frames = models.PositiveIntegerField(null=True, blank=True, help_text="Frames its video renders.")
    timings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Seconds: tts, ready, render, video_ready (from the turn's start).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["message", "index"]
        constraints = [models.UniqueConstraint(fields=["message", "index"], name="chunk_unique_index")]

    def __str__(self) -> str:
        return f"{self.message_id}#{self.index}: {self.text[:60]}"


class LiveSession(models.Model):
    """A live render session: a process on ``node`` that holds ``checkpoint``'s model loaded on ``gpu`` (or
    the node's CPU slot) and renders sentences as they come (chat/live.py; the node side is
    avatars/engines/node/live_session.py). Shared by every conversation of that checkpoint on that GPU."""

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        ENDED = "ended", "Ended"
        FAILED = "failed", "Failed"

    LIVE_STATES = (State.STARTING, State.READY)

    node = models.ForeignKey("gpu_nodes.Node", on_delete=models.CASCADE, related_name="live_sessions")
    gpu = models.ForeignKey("gpu_nodes.Gpu", on_delete=models.CASCADE, related_name="live_sessions")
    checkpoint = models.ForeignKey(
        "avatars.Checkpoint", null=True, on_delete=models.SET_NULL, related_name="live_sessions"
    )
    engine = models.CharField(max_length=32)
    memory_mb = models.PositiveIntegerField(default=0, help_text="GPU memory it holds (the engine's figure).")
    socket = models.CharField(max_length=500, blank=True, help_text="Its Unix socket on the node.")
    pid = models.IntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.STARTING)
    started_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    turns = models.PositiveIntegerField(default=0)
    last_latency = models.FloatField(
        null=True, blank=True, help_text="Seconds from a sentence's render request to its first fMP4 piece."
    )
    load_seconds = models.FloatField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            # One live session per checkpoint and GPU: conversations share it.
            models.UniqueConstraint(
                fields=["checkpoint", "gpu"], condition=models.Q(state__in=["starting", "ready"]),
                name="live_session_one_per_checkpoint_gpu",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"live session {self.pk} ({self.engine}, {self.state})"

    @property
    def marker(self) -> str:
        """The TALKFORGE_JOB marker its process carries: what stops it, and only it."""
        return f"live-{self.pk}"

    @property
    def name(self) -> str:
        return f"session-{self.pk}"
