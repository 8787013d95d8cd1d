"""RQ entry points."""

from .runner import run_job

__all__ = ["run_job"]
