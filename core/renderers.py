"""The API's JSON renderer: DRF's output, written by orjson.

DRF's ``JSONRenderer`` runs ``json.dumps`` with its ``JSONEncoder``; a job list page (50 jobs, each with
three JSON columns and six times) spent about a tenth of its time there. orjson writes the same document
(compact, UTF-8, keys in order, ``\\u2028``/``\\u2029`` escaped as DRF escapes them; a number in exponent
form spelled ``1.5e-7`` where json writes ``1.5e-07``, the same number; NaN and infinities, which DRF's
strict JSON refuses with an error, written as null) from C, and takes
``RawJSON``: JSON the database already wrote, put in as it is (jobs/api/serializers.py ``job_rows_data``)
instead of decoded and encoded again. Whatever orjson does not write itself goes through
DRF's encoder (times with DRF's ``Z``, decimals, lazy strings, querysets), and where orjson refuses a value
(an integer beyond 64 bits) or an indented answer is asked for (``Accept: application/json; indent=4``),
DRF's own renderer writes it.
"""

import json

import orjson
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer
from rest_framework.utils.encoders import JSONEncoder

OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS
_encoder = JSONEncoder()


# JSON text to put into an answer as it is: text a database wrote from a JSON column (valid JSON by
# construction; never text from a request). orjson's own type, which orjson writes without calling back
# into Python (a job list page holds 150 of them).
RawJSON = orjson.Fragment


class JSONRenderer(DRFJSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is None:
            try:
                text = orjson.dumps(data, default=_encoder.default, option=OPTIONS)
            except orjson.JSONEncodeError:
                pass
            else:
                # As DRF does: JSON allows these two raw, JavaScript source did not (ECMAScript before 2019).
                return text.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return super().render(_plain(data), accepted_media_type, renderer_context)


def _plain(data):
    """``data`` with its raw JSON decoded, for DRF's renderer."""
    if isinstance(data, RawJSON):
        return json.loads(orjson.dumps(data))  # a Fragment's text is only to be had by writing it
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(value) for value in data]
    return data
