"""Where an avatar's data and models live in a node's workdir: the layout the pipeline, the job kinds, data
transfer and deletion share."""

from __future__ import annotations

from pathlib import PurePosixPath

from .engines import base
from .models import Avatar


def dataset_dir(avatar: Avatar, workdir: str) -> PurePosixPath:
    return base.dataset_dir(avatar.slug, workdir)


def model_dir(avatar: Avatar, workdir: str) -> PurePosixPath:
    """The folder that holds every training run of the avatar on a node (``run-<id>`` inside)."""
    return avatar.engine_plugin.model_root(avatar.slug, workdir)
