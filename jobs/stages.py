"""What a person reads for a job's stage.

A job's ``stage`` is a short key written by the runner (``starting``), a service (``waiting for a slot``)
or the engine's console parser (``torso_gt``, ``coarse``: avatars/engines/*/parsers.py). The words shown
for a key are defined where the key is: the job machinery's own below, the engines' with their stage
tables, registered from ``AppConfig.ready()`` (avatars/apps.py) the way job kinds are (jobs/kinds.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The stages jobs/services.py and jobs/runner.py write themselves.
_LABELS: dict[str, str] = {
    "waiting for a slot": "Waiting for a free GPU",
    "starting": "Starting on the node",
    "running": "Running",
    "finishing": "Checking and collecting the results",
    "canceling": "Stopping",
    "canceled": "Canceled",
}

_KEY = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


def register_stage_labels(labels: Mapping[str, str]) -> None:
    """Add the words for stage keys; a key registered twice must keep its meaning."""
    for key, label in labels.items():
        if _LABELS.get(key, label) != label:
            raise ValueError(f"stage {key!r} is already labelled {_LABELS[key]!r}, not {label!r}")
        _LABELS[key] = label


def stage_label(stage: str) -> str:
    """The words for ``stage``: its registered label; an unregistered key (``face_tracking``) in words
    (``Face tracking``); anything else (already words, as ``waiting to retry: …``) as it is."""
    if not stage:
        return ""
    step, sep, inner = stage.partition(": ")  # a chain's "<step>: <stage>" (avatars/engines/console.py)
    if sep and step in _LABELS and (inner in _LABELS or _KEY.match(inner)):
        return f"{_LABELS[step]}: {stage_label(inner)[:1].lower()}{stage_label(inner)[1:]}"
    if stage in _LABELS:
        return _LABELS[stage]
    if _KEY.match(stage):
        return stage.replace("_", " ").capitalize()
    return stage[:1].upper() + stage[1:]
