from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from avatars.models import Checkpoint
from avatars.selectors import avatars_visible_to
from avatars.uploads import upload_too_large_message
from core.parsers import UPLOAD_PARSERS

from ..selectors import videos_visible_to
from ..services import video_create, video_delete
from .serializers import VideoCreateSerializer, VideoSerializer


class VideoViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """Your generated videos. Create one with a multipart post: avatar, and an audio file or a text."""

    serializer_class = VideoSerializer
    parser_classes = UPLOAD_PARSERS

    def get_queryset(self):
        return videos_visible_to(self.request.user)

    @extend_schema(request={"multipart/form-data": VideoCreateSerializer}, responses={201: VideoSerializer})
    def create(self, request, *args, **kwargs):
        body = VideoCreateSerializer(data=request.data)
        valid = body.is_valid()
        if getattr(request._request, "upload_too_large", False):
            raise ValidationError({"audio": [upload_too_large_message()]})
        if not valid:
            raise ValidationError(body.errors)
        data = body.validated_data
        # Another user's avatar or checkpoint does not exist for this user: 404, as for their videos.
        avatar = get_object_or_404(avatars_visible_to(request.user), pk=data["avatar"])
        checkpoint = None
        if data.get("checkpoint") is not None:
            mine = Checkpoint.objects.filter(avatar__owner=request.user).select_related("node")
            checkpoint = get_object_or_404(mine, pk=data["checkpoint"])
        video = video_create(
            owner=request.user, avatar=avatar, audio=data.get("audio"), text=data.get("text"),
            voice=data["voice"], checkpoint=checkpoint, batch_size=data.get("batch_size"),
        )  # fmt: skip
        video = self.get_queryset().get(pk=video.pk)
        return Response(VideoSerializer(video).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        video_delete(video=instance)
