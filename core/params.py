"""One validator per user-supplied number, shared by the services, the page forms and the API serializers.

A number reaches the platform as JSON (where ``1e400`` parses to infinity and ``true`` is an int), as a
form string (``"abc"``, ``"nan"``, ``"-50"``) or from Python. :meth:`Number.clean` turns any of them into
a finite value inside its bounds or raises :class:`ServiceError` naming the parameter and its range, so
no overflow, NaN or infinity ever reaches an engine's command line or a database column. Forms and
serializers get their field from the same object (:meth:`Number.form_field`,
:meth:`Number.serializer_field`), so the bounds a page shows, the schema documents and the service
enforces cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import ServiceError


@dataclass(frozen=True)
class Number:
    """A bounded number parameter. ``whole`` numbers are ints (``12``, ``12.0``, ``"12"``; not ``12.5``)."""

    name: str
    minimum: float
    maximum: float
    default: float | None = None
    whole: bool = True
    unit: str = ""
    help_text: str = ""

    @property
    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {self.minimum:g} to {self.maximum:g}{unit}"

    def error(self, got) -> ServiceError:
        if isinstance(got, int) and got.bit_length() > 128:
            shown = "a number too large to show"  # str() of a 5,000-digit int raises ValueError
        else:
            shown = repr(got[:40]) if isinstance(got, str) else str(got)[:40]
        return ServiceError(f"{self.name} must be {self.range_text}; got {shown}.")

    def clean(self, value, *, default: float | None = None) -> int | float:
        """``value`` as a finite int (``whole``) or float within bounds; None or "" gives the default."""
        if value is None or value == "":
            fallback = default if default is not None else self.default
            if fallback is None:
                raise ServiceError(f"{self.name} is required: {self.range_text}.")
            value = fallback
        given = value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(given)
        if isinstance(value, str):
            text = value.strip()
            if len(text) > 40:
                raise self.error(given)
            try:
                value = int(text) if self.whole and text.lstrip("+-").isdigit() else float(text)
            except ValueError:
                raise self.error(given) from None
        if isinstance(value, float):
            if not math.isfinite(value) or (self.whole and not value.is_integer()):
                raise self.error(given)
            if self.whole:
                value = int(value)
        if not self.minimum <= value <= self.maximum:
            raise self.error(given)
        return int(value) if self.whole else float(value)

    # --- the same rule for pages and the API --------------------------------------------------------

    def form_field(self, **kwargs):
        from django import forms

        field = forms.IntegerField if self.whole else forms.FloatField
        options = {
            "min_value": self.minimum if not self.whole else int(self.minimum),
            "max_value": self.maximum if not self.whole else int(self.maximum),
            "initial": self.default,
            "help_text": self.help_text,
        }
        return field(**(options | kwargs))

    def serializer_field(self, **kwargs):
        from rest_framework import serializers

        field = serializers.IntegerField if self.whole else serializers.FloatField
        options = {
            "min_value": int(self.minimum) if self.whole else self.minimum,
            "max_value": int(self.maximum) if self.whole else self.maximum,
            "help_text": self.help_text or self.range_text,
        }
        return field(**(options | kwargs))


def reject_unknown(params: dict, allowed: set[str], what: str) -> None:
    """A ServiceError naming parameters a kind of job does not take (typos must not pass silently)."""
    unknown = set(params) - allowed
    if unknown:
        names = ", ".join(sorted(str(name)[:40] for name in unknown)[:10])
        raise ServiceError(f"Unknown parameter(s) for {what}: {names}.")


def object_id(value, *, name: str) -> int:
    """A database id given by a user: a positive whole number (not a bool, float or numeric string)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**63 - 1:
        raise ServiceError(f"{name} must be the id (a positive whole number) of one of your objects.")
    return value


def owned_id(value, *, name: str, among, refusal: str) -> int:
    """A job parameter naming one of the owner's objects: ``value`` is an id (``object_id``) of a row in
    ``among`` (a QuerySet already limited to what the owner may use), else ServiceError(``refusal``, its
    ``{id}`` filled in). Another user's id reads exactly like one that does not exist."""
    pk = object_id(value, name=name)
    if not among.filter(pk=pk).exists():
        raise ServiceError(refusal.format(id=pk))
    return pk


# --- the platform's parameters ------------------------------------------------------------------------

DEMO_SECONDS = Number(
    "seconds", 0, 86400, default=20, whole=False, unit="s", help_text="How long the demo engine runs."
)
DEMO_ITERATIONS = Number("iterations", 10, 100_000, default=1000)
DEMO_COARSE_ITERATIONS = Number("coarse_iterations", 10, 100_000, default=500)
DEMO_SAVE_EVERY = Number("save_every", 1, 100_000, default=500)
DEMO_FAIL_AT = Number("fail_at", 1, 100_000)
TRAIN_ITERATIONS = Number(
    "iterations", 10, 500_000, help_text="Training iterations (empty: the engine's default)."
)
RENDER_BATCH = Number("batch_size", 1, 1024, default=128, help_text="Frames rendered per batch.")
JOB_TIMEOUT = Number(
    "timeout_seconds", 1, 30 * 86400, unit="s", help_text="Stop the job after this many seconds of running."
)
