"""The API's JSON parser, with limits: body size, nesting depth, finite numbers only.

DRF's own parser reads the whole body however large (Django's DATA_UPLOAD_MAX_MEMORY_SIZE guards only
``request.body``, which DRF bypasses), lets ``json.loads`` recurse until a 5,000-deep array raises
RecursionError (a 500), and turns ``1e400`` into infinity, which then overflows ``int()`` in whatever
reads it. Here each of those is a 400 (413 for size) whose message says what to change.
"""

from __future__ import annotations

import codecs
import json
import math

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def depth_of(value) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_JSON_BYTES
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"The JSON body is over {limit} bytes: send less, or upload files as such.")
        try:
            text = codecs.decode(body, encoding)
            data = json.loads(text, parse_float=_finite, parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError("The JSON nests too deeply.") from None
        except ValueError as error:
            raise ParseError(f"The body is not valid JSON: {error}") from None
        if depth_of(data) > settings.API_MAX_JSON_DEPTH:
            raise ParseError(f"The JSON nests deeper than {settings.API_MAX_JSON_DEPTH} levels.")
        return data


# Endpoints that take file uploads as well as JSON.
UPLOAD_PARSERS = [MultiPartParser, FormParser, LimitedJSONParser]
