"""The quality gate: checks a training video before any GPU time is spent on it.

Poor footage is the top cause of failed trainings in these engines' issue trackers (a frame without a face
crashes landmark extraction, GaussianTalker's data_utils/process.py:87–88). Sampled frames must show exactly
one face, large enough, and the audio must not be silent. The face detector is OpenCV's bundled Haar cascade:
nothing is downloaded. (opencv-python-headless 5 stopped bundling the cascades, so the dependency stays on
4.x.)
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
from django.conf import settings
from django.utils import timezone

from .media import ENGINE_FPS, VideoInfo, audio_levels, grab_gray_frame

SAMPLE_HEIGHT = 360


@functools.cache
def _face_detector() -> cv2.CascadeClassifier:
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if detector.empty():
        raise RuntimeError(
            "OpenCV's bundled face cascade could not be loaded: reinstall opencv-python-headless<5."
        )
    return detector


def sample_times(duration: float, count: int) -> list[float]:
    if duration <= 1:
        return [0.0]
    count = max(1, min(count, int(duration * ENGINE_FPS)))
    step = (duration - 1.0) / count
    return [round(0.5 + step * (i + 0.5), 3) for i in range(count)]


def _check(key: str, title: str, passed: bool, detail: str, failed: list[float] | None = None) -> dict:
    failed = failed or []
    return {
        "key": key,
        "title": title,
        "passed": passed,
        "detail": detail,
        "failed_frames": [{"seconds": t, "frame": int(round(t * ENGINE_FPS))} for t in failed],
    }


def quality_report(path: Path, info: VideoInfo) -> dict:
    """Run every check on the video at ``path``; the report lists each check with the frames that failed."""
    detector = _face_detector()
    times = sample_times(info.duration, settings.QUALITY_SAMPLE_FRAMES)
    scale = info.height / SAMPLE_HEIGHT if info.height else 1.0
    min_face = settings.QUALITY_MIN_FACE_PIXELS / scale
    not_one, small, unreadable = [], [], []
    sizes = []
    for at in times:
        frame = grab_gray_frame(path, at, SAMPLE_HEIGHT)
        if frame is None:
            unreadable.append(at)
            continue
        faces = detector.detectMultiScale(frame, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        if len(faces) != 1:
            not_one.append(at)
            continue
        height = int(faces[0][3])
        sizes.append(height * scale)
        if height < min_face:
            small.append(at)
    sampled = len(times)
    allowed = int(sampled * settings.QUALITY_MAX_FAILED_FRACTION)
    checks = [
        _check(
            "readable", "Every sampled frame can be decoded", not unreadable,
            f"{sampled - len(unreadable)} of {sampled} sampled frames decoded.", unreadable,
        ),
        _check(
            "one_face", "Exactly one face in (nearly) every frame", len(not_one) <= allowed,
            f"{sampled - len(not_one)} of {sampled} sampled frames show exactly one face "
            f"(at most {allowed} may not). Frames without a face crash the engines' landmark step; "
            "cut those parts out, or film the person alone and facing the camera.",
            not_one,
        ),
        _check(
            "face_size", "The face is large enough", len(small) <= allowed,
            f"Median face height {sorted(sizes)[len(sizes) // 2]:.0f} px; at least "
            f"{settings.QUALITY_MIN_FACE_PIXELS} px is needed. Film closer, or crop around the head."
            if sizes else "No face was measured.",
            small,
        ),
    ]  # fmt: skip
    levels = audio_levels(path) if info.has_audio else None
    if levels is None:
        checks.append(
            _check("audio", "The audio is not silent", False, "The video has no readable audio track.")
        )
    else:
        mean, peak = levels
        loud_enough = peak > settings.QUALITY_SILENCE_DB
        checks.append(
            _check(
                "audio", "The audio is not silent", loud_enough,
                f"Mean volume {mean:.1f} dB, peak {peak:.1f} dB"
                + ("." if loud_enough else f": it is silent (peak below {settings.QUALITY_SILENCE_DB} dB). "
                   "The model learns lip motion from the voice: upload the video with its sound."),
            )
        )  # fmt: skip
    return {
        "checked_at": timezone.now().isoformat(),
        "sampled_frames": sampled,
        "passed": all(check["passed"] for check in checks),
        "checks": checks,
    }
