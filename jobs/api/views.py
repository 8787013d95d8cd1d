from functools import partial

from django.core.paginator import EmptyPage, PageNotAnInteger
from django.core.paginator import Paginator as DjangoPaginator
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from core.query import query_params

from ..selectors import job_list_filtered, job_list_page, job_log_lines, jobs_visible_to
from ..services import job_cancel, job_submit_public
from .serializers import (
    JobFilterSerializer,
    JobLogQuerySerializer,
    JobLogSerializer,
    JobSerializer,
    JobSubmitSerializer,
    job_rows_data,
)


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode(self.charset) if isinstance(data, str) else str(data).encode(self.charset)


class CountedRows:
    """What the job list pages through: ``page(limit=, offset=)`` gives a slice's rows (a ``Table``), each
    carrying the whole list's count (``total``, counted in the page's own query), which the slice keeps in
    ``total``; the rows come out as ``make(names, rows)`` makes them (the answer's dicts). ``count`` counts
    the jobs alone, for a page with no rows (past the end, or no jobs at all), where no row carries it. The
    same number either way: the rows only join in the owner, who is never missing, and the optional node
    and GPU."""

    ordered = True  # newest first (Job.Meta.ordering): Django's paginator warns about unordered lists

    def __init__(self, page, *, count, make):
        self.page, self.count_jobs, self.make = page, count, make
        self.total: int | None = None

    def __getitem__(self, index: slice) -> list:
        names, rows = self.page(limit=index.stop - index.start, offset=index.start)
        self.total = rows[0][names.index("total")] if rows else None
        return self.make(names, rows)

    def count(self) -> int:  # a method, as Paginator.count looks for
        return self.count_jobs()


# PostgreSQL's OFFSET is a bigint: a page number past it is past the end of every list.
MAX_OFFSET = 2**63 - 1


class RowCountPaginator(DjangoPaginator):
    """Django's paginator, with the count taken from the page's rows: one query per page where
    ``Paginator.page`` takes two (the count to check the number, then the page). A page with no rows asks
    ``CountedRows.count`` and ends as Django's does (``EmptyPage`` past the end, an empty first page)."""

    def page(self, number):
        number = self._int(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page])
        if rows:
            self.__dict__["count"] = self.object_list.total  # Paginator.count is a cached_property
        number = self.validate_number(number)
        return self._get_page(rows, number, self)

    def _int(self, number) -> int:
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        if (number - 1) * self.per_page > MAX_OFFSET:  # past any list: the database cannot even skip so far
            raise EmptyPage(self.error_messages["no_results"])
        return number


class JobListPagination(PageNumberPagination):
    django_paginator_class = RowCountPaginator


class JobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Jobs: yours (staff: everyone's). Filter with ``?status=``, ``?kind=``, ``?node=``."""

    serializer_class = JobSerializer
    pagination_class = JobListPagination

    def get_queryset(self):
        return jobs_visible_to(self.request.user)

    @extend_schema(parameters=[JobFilterSerializer])
    def list(self, request, *args, **kwargs):
        """A page of ``JobSerializer``'s shape from plain rows, in one query (``RowCountPaginator``),
        compiled once per process (``selectors.JOB_LIST``)."""
        filters = query_params(request, JobFilterSerializer)
        rows = CountedRows(
            partial(job_list_page, request.user, filters),
            count=lambda: job_list_filtered(self.get_queryset(), filters).count(),
            make=job_rows_data,
        )
        return self.get_paginated_response(self.paginate_queryset(rows))

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
