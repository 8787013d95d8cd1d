from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from core.parsers import UPLOAD_PARSERS
from jobs.api.serializers import JobSerializer

from ..pipeline import avatar_cancel, avatar_evaluate, avatar_retry, avatar_train
from ..selectors import avatars_visible_to
from ..services import avatar_create, avatar_delete, avatar_proceed_anyway
from ..uploads import upload_too_large_message
from .serializers import (
    AvatarCreateSerializer,
    AvatarEvaluateSerializer,
    AvatarSerializer,
    AvatarTrainSerializer,
    CheckpointSerializer,
    EvaluationSerializer,
)


class AvatarViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """Your avatars. Create one with a multipart upload: name, engine, video, optional au_csv, consent."""

    serializer_class = AvatarSerializer
    parser_classes = UPLOAD_PARSERS

    def get_queryset(self):
        return avatars_visible_to(self.request.user)

    @extend_schema(request={"multipart/form-data": AvatarCreateSerializer}, responses={201: AvatarSerializer})
    def create(self, request, *args, **kwargs):
        body = AvatarCreateSerializer(data=request.data)
        valid = body.is_valid()
        if getattr(request._request, "upload_too_large", False):
            raise ValidationError({"video": [upload_too_large_message()]})
        if not valid:
            raise ValidationError(body.errors)
        data = body.validated_data
        avatar = avatar_create(
            owner=request.user, name=data["name"], engine=data["engine"], video=data["video"],
            au_csv=data.get("au_csv"), consent=data["consent"], preferred_node=data.get("preferred_node"),
            trim_start=data.get("trim_start"), trim_end=data.get("trim_end"),
        )  # fmt: skip
        return Response(AvatarSerializer(avatar).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        avatar_delete(avatar=instance)

    @extend_schema(request=None, responses=AvatarSerializer)
    @action(detail=True, methods=["post"])
    def proceed(self, request, pk=None):
        """Train although the video failed quality checks (the owner has read the report)."""
        return Response(AvatarSerializer(avatar_proceed_anyway(avatar=self.get_object())).data)

    @extend_schema(request=AvatarTrainSerializer, responses={201: JobSerializer})
    @action(detail=True, methods=["post"])
    def train(self, request, pk=None):
        """Start the training pipeline (preprocessing is skipped on a node that already holds the data).
        Returns the first job; follow it and its children under /api/jobs/."""
        body = AvatarTrainSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = avatar_train(avatar=self.get_object(), owner=request.user, **body.validated_data)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=CheckpointSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)  # a plain list, as documented
    def checkpoints(self, request, pk=None):
        """The saved model states on their nodes, newest first."""
        checkpoints = self.get_object().checkpoints.select_related("node")
        return Response(CheckpointSerializer(checkpoints, many=True).data)

    @extend_schema(request=None, responses=EvaluationSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def evaluations(self, request, pk=None):
        """Quality figures per checkpoint (PSNR, SSIM, frames compared, notes) with per-frame series."""
        return Response(EvaluationSerializer(self.get_object().evaluations.all(), many=True).data)

    @extend_schema(request=AvatarEvaluateSerializer, responses={201: JobSerializer})
    @action(detail=True, methods=["post"])
    def evaluate(self, request, pk=None):
        """Quality figures for one checkpoint: renders the validation split with it, then scores the render
        against the ground truth. Returns the render job; the evaluation follows as its child."""
        avatar = self.get_object()  # another user's avatar is a 404 before anything about the body
        body = AvatarEvaluateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        checkpoint = avatar.checkpoints.filter(pk=body.validated_data["checkpoint"]).first()
        if checkpoint is None:
            raise NotFound("No such checkpoint for this avatar.")
        job = avatar_evaluate(avatar=avatar, owner=request.user, checkpoint=checkpoint)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: JobSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Run the pipeline's failed (or canceled) step again; the pipeline goes on from there."""
        job = avatar_retry(avatar=self.get_object(), owner=request.user)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JobSerializer(many=True))
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel every queued or running step of this avatar (running engines are killed)."""
        return Response(JobSerializer(avatar_cancel(avatar=self.get_object()), many=True).data)
