from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from core.query import query_params

from ..selectors import job_list_rows, job_log_lines, jobs_visible_to
from ..services import job_cancel, job_submit_public
from .serializers import (
    JobFilterSerializer,
    JobLogQuerySerializer,
    JobLogSerializer,
    JobSerializer,
    JobSubmitSerializer,
    job_row_data,
)


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode(self.charset) if isinstance(data, str) else str(data).encode(self.charset)


class CountedRows:
    """What the job list pages through: the rows, counted on the jobs they come from. The same number (the
    rows only join in the owner, who is never missing, and the optional node and GPU), without the count
    joining three tables it does not need."""

    def __init__(self, rows, *, count):
        self.rows, self.count = rows, count
        self.ordered = rows.ordered

    def __getitem__(self, index):
        return self.rows[index]

    def __len__(self):
        return len(self.rows)


class JobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Jobs: yours (staff: everyone's). Filter with ``?status=``, ``?kind=``, ``?node=``."""

    serializer_class = JobSerializer

    def get_queryset(self):
        jobs = jobs_visible_to(self.request.user)
        if self.action != "list":
            return jobs
        filters = query_params(self.request, JobFilterSerializer)
        for field in ("status", "kind", "avatar"):
            if field in filters:
                jobs = jobs.filter(**{field: filters[field]})
        if "node" in filters:
            jobs = jobs.filter(node__name=filters["node"])
        return jobs

    @extend_schema(parameters=[JobFilterSerializer])
    def list(self, request, *args, **kwargs):
        """A page of ``JobSerializer``'s shape built from plain rows: a count and one query for the page."""
        jobs = self.get_queryset()
        page = self.paginate_queryset(CountedRows(job_list_rows(jobs), count=jobs.count))
        return self.get_paginated_response([job_row_data(row) for row in page])

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
            JobLogQuerySerializer,
            OpenApiParameter("format", str, enum=["json", "txt"], description="'txt': the whole log as text"),
        ],
        responses={
            (200, "application/json"): JobLogSerializer,
            (200, "text/plain"): OpenApiTypes.STR,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[*api_settings.DEFAULT_RENDERER_CLASSES, PlainTextRenderer],
    )
    def log(self, request, pk=None):
        job = self.get_object()
        if request.accepted_renderer.format == PlainTextRenderer.format:
            # A plain response: DRF drops the Content-Type of an empty body, and an empty log is a log.
            text = "\n".join(job_log_lines(job))
            return HttpResponse(text.encode(), content_type="text/plain; charset=utf-8")
        page = query_params(request, JobLogQuerySerializer)
        after, limit = page["after"], page["limit"]
        lines = job_log_lines(job, after=after, limit=limit)
        return Response({"first": after + 1, "lines": lines, "total": job.log_line_count})
