from rest_framework import serializers

from core.params import RENDER_BATCH

from .. import tts
from ..models import Video


class VideoSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)
    stage = serializers.CharField(source="job.stage", read_only=True, default="")
    progress = serializers.FloatField(source="job.progress", read_only=True, default=0.0)
    error = serializers.SerializerMethodField()
    checkpoint = serializers.SerializerMethodField()
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Video
        fields = [
            "id", "avatar", "checkpoint", "job", "status", "stage", "progress", "error", "source", "text",
            "voice", "spoken_by", "original_name", "audio_duration", "batch_size", "pose_mode",
            "result_duration", "created_at", "urls",
        ]  # fmt: skip
        read_only_fields = fields

    def get_error(self, video) -> str:
        return video.error or (video.job.error if video.job_id else "")

    def get_checkpoint(self, video) -> dict | None:
        c = video.checkpoint
        return {"id": c.pk, "stage": c.stage, "iteration": c.iteration} if c else None

    def get_urls(self, video) -> dict:
        base = f"/videos/{video.pk}"
        urls = {"page": f"{base}/"}
        if video.audio:  # a text has audio once the job's worker has spoken it
            urls["audio"] = f"{base}/media/audio/"
        if video.job_id is not None:
            urls["job"] = f"/api/jobs/{video.job_id}/"
        if video.is_done:
            urls |= {"video": f"{base}/media/video/", "poster": f"{base}/media/poster/",
                     "download": f"{base}/media/video/?download=1"}  # fmt: skip
        return urls


class VideoCreateSerializer(serializers.Serializer):
    avatar = serializers.IntegerField(help_text="One of your trained avatars.")
    audio = serializers.FileField(
        required=False, allow_null=True, help_text="WAV, MP3, M4A, OGG, FLAC or WebM; or give text instead."
    )
    text = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
        help_text="Spoken by the voice; or upload audio instead.",
    )  # fmt: skip
    voice = serializers.CharField(
        default=tts.OFFLINE, max_length=50,
        help_text=f'"{tts.OFFLINE}" (the standard synthetic voice, espeak-ng) or one of your cloned '
        'voices as "voice:<id>" (the ids of GET /api/voices/).',
    )  # fmt: skip
    checkpoint = serializers.IntegerField(
        required=False, allow_null=True, help_text="Default: the avatar's latest renderable checkpoint."
    )
    batch_size = RENDER_BATCH.serializer_field(required=False, allow_null=True)
