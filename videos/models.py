from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Video(models.Model):
    """A talking-head video generated from a trained avatar and any audio (uploaded, or text spoken by a
    voice). Its status is its job's; the files live under MEDIA_ROOT: the driving audio in the video's own
    folder, the result and its poster where the job brought them back (``jobs/<job id>/``)."""

    class Source(models.TextChoices):
        AUDIO = "audio", "Uploaded audio"
        TEXT = "text", "Text spoken by a voice"

    class PoseMode(models.TextChoices):
        PING_PONG = "ping_pong", "Val poses played forward and back (GaussianTalker, demo)"
        ENGINE = "engine", "The engine's own (SyncTalk mirrors its poses)"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="videos")
    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.CASCADE, related_name="videos")
    checkpoint = models.ForeignKey(
        "avatars.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="videos"
    )
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    text = models.TextField(blank=True, help_text="What the voice spoke (source text).")
    voice = models.CharField(
        max_length=50, blank=True,
        help_text='The chosen voice: "offline" (espeak-ng) or a cloned voice "voice:<id>" (videos/tts.py).',
    )  # fmt: skip
    spoken_by = models.CharField(
        max_length=300,
        blank=True,
        help_text="Who spoke the text, in words (and why espeak-ng did, if it did).",
    )
    original_name = models.CharField(max_length=255, blank=True, help_text="The uploaded file's name.")
    folder = models.CharField(max_length=100, help_text="This video's folder, relative to MEDIA_ROOT.")
    audio = models.CharField(
        max_length=300, blank=True,
        help_text="The driving audio as mono 16 kHz 16-bit PCM WAV, relative to MEDIA_ROOT (a text's, once "
        "the job's worker has spoken it: empty before).",
    )  # fmt: skip
    audio_duration = models.FloatField(
        null=True, blank=True, help_text="Seconds (empty until a text has been spoken)."
    )
    batch_size = models.PositiveSmallIntegerField(
        default=128, validators=[MinValueValidator(1), MaxValueValidator(1024)]
    )
    pose_mode = models.CharField(max_length=20, choices=PoseMode.choices)
    result = models.CharField(max_length=300, blank=True, help_text="The MP4, relative to MEDIA_ROOT.")
    poster = models.CharField(max_length=300, blank=True, help_text="A JPEG of its start.")
    result_duration = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="video_owner_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(batch_size__gte=1, batch_size__lte=1024), name="video_batch_1_1024"
            )
        ]

    def __str__(self) -> str:
        return f"video #{self.pk} of {self.avatar_id}"

    @property
    def status(self) -> str:
        return self.job.status if self.job_id else "failed"

    @property
    def is_done(self) -> bool:
        return bool(self.result) and self.status == "succeeded"
