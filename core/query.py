"""Query parameters read through a serializer: typed, bounded, and each given at most once.

Django's ``QueryDict.get`` silently takes the last of ``?status=a&status=b``; a filter documented as one
value must refuse two (the OpenAPI schema says one value, and integrations should learn of their mistake).
"""

from __future__ import annotations

from functools import cache

from rest_framework.exceptions import ValidationError
from rest_framework.fields import empty


def query_params(request, serializer_class) -> dict:
    """The request's query parameters that ``serializer_class`` declares, validated; a 400 that names the
    parameter for a repeated one or a bad value. Parameters it does not declare (``page``, ``format``) are
    left to their readers, but may not be repeated either."""
    if not request.query_params and _nothing_to_fill(serializer_class):
        return {}  # what the serializer would give, without making one (its fields are deep-copied each time)
    repeated = sorted(key for key in request.query_params if len(request.query_params.getlist(key)) > 1)
    if repeated:
        raise ValidationError({key: ["Give this parameter once."] for key in repeated})
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@cache
def _nothing_to_fill(serializer_class) -> bool:
    """Whether the serializer gives ``{}`` for no parameters: none is required or has a default."""
    return all(not field.required and field.default is empty for field in serializer_class().fields.values())
