from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from ..selectors import job_log_lines, jobs_visible_to
from ..services import job_cancel, job_submit_public
from .serializers import JobLogSerializer, JobSerializer, JobSubmitSerializer

MAX_LOG_PAGE = 10_000


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode(self.charset) if isinstance(data, str) else str(data).encode(self.charset)


class JobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Jobs: yours (staff: everyone's). Filter with ``?status=``, ``?kind=``, ``?node=``."""

    serializer_class = JobSerializer

    def get_queryset(self):
        jobs = jobs_visible_to(self.request.user)
        for field in ("status", "kind"):
            if value := self.request.query_params.get(field):
                jobs = jobs.filter(**{field: value})
        if node := self.request.query_params.get("node"):
            jobs = jobs.filter(node__name=node)
        if (avatar := self.request.query_params.get("avatar", "")).isdigit():
            jobs = jobs.filter(avatar_id=int(avatar))
        return jobs

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description="queued, running, succeeded, failed or canceled"),
            OpenApiParameter("kind", str),
            OpenApiParameter("node", str, description="node name"),
            OpenApiParameter("avatar", int, description="avatar id: its pipeline's jobs"),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=JobSubmitSerializer, responses={201: JobSerializer})
    def create(self, request, *args, **kwargs):
        submit = JobSubmitSerializer(data=request.data)
        submit.is_valid(raise_exception=True)
        job = job_submit_public(
            owner=request.user,
            kind=submit.validated_data["kind"],
            params=submit.validated_data["params"],
            node=submit.validated_data.get("node"),
            timeout_seconds=submit.validated_data.get("timeout_seconds"),
        )
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = job_cancel(job=self.get_object())
        return Response(JobSerializer(job).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="return lines after this line number (default 0)"),
            OpenApiParameter(
                "limit", int, description=f"at most this many lines (default and max {MAX_LOG_PAGE})"
            ),
            OpenApiParameter("format", str, description="'txt' for the whole log as text/plain"),
        ],
        responses=JobLogSerializer,
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[*api_settings.DEFAULT_RENDERER_CLASSES, PlainTextRenderer],
    )
    def log(self, request, pk=None):
        job = self.get_object()
        if request.accepted_renderer.format == PlainTextRenderer.format:
            return Response("\n".join(job_log_lines(job)))
        try:
            after = max(0, int(request.query_params.get("after", 0)))
            limit = min(MAX_LOG_PAGE, max(1, int(request.query_params.get("limit", MAX_LOG_PAGE))))
        except ValueError:
            raise ValidationError({"detail": "after and limit must be whole numbers."}) from None
        lines = job_log_lines(job, after=after, limit=limit)
        return Response({"first": after + 1, "lines": lines, "total": job.log_line_count})
