"""Query parameters read through a serializer: typed, bounded, and each given at most once.

Django's ``QueryDict.get`` silently takes the last of ``?status=a&status=b``; a filter documented as one
value must refuse two (the OpenAPI schema says one value, and integrations should learn of their mistake).
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError


def query_params(request, serializer_class) -> dict:
    """The request's query parameters that ``serializer_class`` declares, validated; a 400 that names the
    parameter for a repeated one or a bad value. Parameters it does not declare (``page``, ``format``) are
    left to their readers, but may not be repeated either."""
    repeated = sorted(key for key in request.query_params if len(request.query_params.getlist(key)) > 1)
    if repeated:
        raise ValidationError({key: ["Give this parameter once."] for key in repeated})
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
