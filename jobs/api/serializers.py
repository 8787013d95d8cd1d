import functools
import operator

from rest_framework import serializers

from core.params import JOB_TIMEOUT
from core.renderers import RawJSON
from gpu_nodes.models import Node

from ..kinds import public_kinds
from ..models import Job
from ..selectors import JOB_LIST_JSON_FIELDS, JOB_LIST_WRITTEN, gpu_label, text_column


class JobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, default=None, allow_null=True)
    gpu = serializers.CharField(source="gpu.label", read_only=True, default=None, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "owner", "status", "stage", "progress", "eta_seconds", "metrics", "params",
            "result", "error", "node", "gpu", "attempts", "max_attempts", "timeout_seconds", "parent",
            "avatar",
            "log_line_count",
            "created_at", "placed_at", "started_at", "finished_at", "heartbeat_at", "cancel_requested_at",
        ]  # fmt: skip
        read_only_fields = fields


# Where each key of the answer comes from in a row of ``selectors.job_list_rows``.
_ROW_KEYS = {
    "owner": "owner_name",
    "node": "node_name",
    "gpu": "gpu_index",
    **{name: text_column(name) for name in JOB_LIST_WRITTEN},
}
_KEYS = tuple(JobSerializer.Meta.fields)
_SOURCES = tuple(_ROW_KEYS.get(name, name) for name in _KEYS)
_JSON_POSITIONS = tuple(_KEYS.index(name) for name in JOB_LIST_JSON_FIELDS)
_GPU_POSITION = _KEYS.index("gpu")


@functools.cache
def _pick(names: tuple[str, ...]) -> operator.itemgetter:
    """The row's values in the answer's order, for rows with these columns."""
    return operator.itemgetter(*(names.index(source) for source in _SOURCES))


def job_rows_data(names: tuple[str, ...], rows: list[tuple]) -> list[dict]:
    """Rows of ``selectors.job_list_rows`` (tuples with the columns ``names``) as ``JobSerializer`` writes
    jobs (the API's documented shape, same keys in the same order), without a serializer field per column
    and row: the job list builds 50 of these per page, and DRF's field machinery was most of the time the
    list took. The JSON columns go in as the database wrote them (``RawJSON``, core/renderers.py), the times
    as the database wrote them (``selectors.ApiTime``). tests/jobs/test_api_job_list.py holds the two to
    the same output."""
    pick = _pick(names)
    data = []
    for row in rows:
        values = list(pick(row))
        for position in _JSON_POSITIONS:
            if values[position] is not None:
                values[position] = RawJSON(values[position])
        values[_GPU_POSITION] = gpu_label(values[_GPU_POSITION])
        data.append(dict(zip(_KEYS, values, strict=True)))
    return data


class JobSubmitSerializer(serializers.Serializer):
    """A raw job: only the public kinds (the demo training). Avatars, videos and chat replies start from
    their own endpoints, which check that what the job touches is yours."""

    kind = serializers.ChoiceField(choices=[])
    params = serializers.DictField(required=False, default=dict)
    timeout_seconds = JOB_TIMEOUT.serializer_field(required=False, allow_null=True)
    node = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Node.objects.all(),
        required=False,
        allow_null=True,
        help_text="Run on this node only (default: any node with a free slot).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = public_kinds()  # registered by the apps' ready()


class JobFilterSerializer(serializers.Serializer):
    """The job list's filters, each one value."""

    status = serializers.ChoiceField(choices=Job.Status.choices, required=False)
    kind = serializers.CharField(required=False, max_length=32)
    node = serializers.CharField(required=False, max_length=100, help_text="A node's name.")
    avatar = serializers.IntegerField(
        required=False, min_value=1, help_text="An avatar's id: its pipeline's jobs."
    )


MAX_LOG_PAGE = 10_000


class JobLogQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="Lines after this one."
    )
    limit = serializers.IntegerField(
        required=False,
        default=MAX_LOG_PAGE,
        min_value=1,
        max_value=MAX_LOG_PAGE,
        help_text="At most this many.",
    )


class JobLogSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    lines = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False))
    total = serializers.IntegerField()
