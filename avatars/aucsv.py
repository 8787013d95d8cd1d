"""Eye blinks for GaussianTalker: ``au.csv``, OpenFace's output, of which only `` AU45_r`` is read.

Upstream reads the column named with a leading space, clips it to [0, 2], divides by 2 and indexes it by
frame number, so it needs one row per 25-fps frame (scene/talking_dataset_readers.py:291, :360 at
GaussianTalker 8ec613b). Without OpenFace, the blink estimate is computed from the 68 landmarks
preprocessing writes (``ori_imgs/<i>.lms``), as the original prototype's process_withoutopenface does
(docs/engines.md): eye aspect ratio below 0.18 → AU45 5.0, above 0.30 → 0, linear between.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np

from core.errors import ServiceError

from .engines.node.blinks import au45_from_ear, au_csv_lines, eye_aspect_ratio

COLUMN = " AU45_r"
__all__ = ["au45_from_ear", "au_csv_from_landmarks", "eye_aspect_ratio", "validate_au_csv"]


def validate_au_csv(text: str, *, frames: int) -> int:
    """Check an uploaded au.csv; returns its row count. ServiceError says what is wrong and how to fix it."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ServiceError(
            "au.csv is empty: upload the CSV that OpenFace's FeatureExtraction wrote."
        ) from None
    if COLUMN not in header:
        if any(name.strip() == COLUMN.strip() for name in header):
            raise ServiceError(
                "au.csv has an AU45_r column but without the leading space GaussianTalker looks for "
                "(' AU45_r'): upload OpenFace's file unchanged, or rename the column to ' AU45_r'."
            )
        raise ServiceError("au.csv has no ' AU45_r' column: it must be OpenFace FeatureExtraction's output.")
    column = header.index(COLUMN)
    rows = 0
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            float(row[column])
        except (IndexError, ValueError):
            raise ServiceError(
                f"au.csv line {number}: the AU45_r value is missing or not a number."
            ) from None
        rows += 1
    if rows < frames:
        raise ServiceError(
            f"au.csv has {rows} rows but the video has {frames} frames at 25 fps: GaussianTalker needs one "
            "row per frame. Run OpenFace on the 25-fps video, or leave au.csv out (the platform then "
            "estimates blinks)."
        )
    return rows


def au_csv_from_landmarks(frames: Iterable[np.ndarray], fps: int = 25) -> str:
    """au.csv text (OpenFace's column spelling) from one 68×2 landmark array per frame, in order."""
    return "".join(
        au_csv_lines(([tuple(p) for p in np.asarray(f, dtype=float).reshape(68, 2)] for f in frames), fps)
    )
