#!/usr/bin/env python3
"""Apply the engine fixes to a GaussianTalker checkout, or fail the build.

    python3 apply_patches.py /GaussianTalker

Each fix is an exact replacement checked against the text it expects (spec/engines.md describes the
upstream code at the pinned commit 8ec613b). If an anchor is missing or found more than once, nothing
is written and the script exits 1 naming the file and the anchor: a different upstream revision fails
the build loudly instead of being half patched. After patching, each file is checked for the result.

1. np.float → np.float32 in the DeepSpeech feature extraction. ``np.float`` was removed in numpy 1.24;
   upstream casts the samples with it (spec §1.4, GaussianTalker PR #80, SyncTalk #117).
2. Custom-audio rendering renders no more frames than the driving audio has. Upstream renders the whole
   val pose sequence whatever the audio length (spec §1.6); the seed, like the open PR #80, cuts the
   frame list to the audio's frame count and says so:
   ``[INFO] Custom audio mode: limiting render frames to N (audio length: M)``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER = "Talkforge patch"


@dataclass(frozen=True)
class Replacement:
    """Replace ``pattern`` (a regular expression, MULTILINE) by ``replacement``, exactly ``count`` times."""

    pattern: str
    replacement: str
    count: int
    describes: str


@dataclass(frozen=True)
class Patch:
    name: str
    path: str  # relative to the checkout
    replacements: tuple[Replacement, ...]
    forbidden_after: str  # a regular expression that must not match the patched file
    required_after: str  # one that must


PATCHES = (
    Patch(
        name="deepspeech-np-float",
        path="data_utils/deepspeech_features/deepspeech_features.py",
        replacements=(
            Replacement(
                pattern=r"x=audio\.astype\(np\.float\),",
                replacement="x=audio.astype(np.float32),",
                count=1,
                describes="resampy input cast: x=audio.astype(np.float),",
            ),
            Replacement(
                pattern=r"resampled_audio = audio\.astype\(np\.float\)$",
                replacement="resampled_audio = audio.astype(np.float32)",
                count=1,
                describes="16 kHz branch: resampled_audio = audio.astype(np.float)",
            ),
        ),
        forbidden_after=r"\bnp\.float\b(?!\d)",
        required_after=r"audio\.astype\(np\.float32\)",
    ),
    Patch(
        name="custom-audio-frame-clamp",
        path="scene/talking_dataset_readers.py",
        replacements=(
            Replacement(
                pattern=(
                    r"^(?P<outer>[ \t]*)if custom_aud:[ \t]*\n"
                    r"(?P<inner>[ \t]+)auds = aud_features[ \t]*\n"
                ),
                replacement=(
                    r"\g<outer>if custom_aud:\n"
                    r"\g<inner>auds = aud_features\n"
                    rf"\g<inner># {MARKER} (GaussianTalker PR #80): no more frames than the audio has.\n"
                    r"\g<inner>frames = frames[:min(len(frames), aud_features.shape[0])]\n"
                    r"\g<inner>print(f'[INFO] Custom audio mode: limiting render frames to {len(frames)} "
                    r"(audio length: {aud_features.shape[0]})')\n"
                ),
                count=1,
                describes="readCamerasFromTracksTransforms: `if custom_aud:` then `auds = aud_features`",
            ),
        ),
        forbidden_after=r"(?!)",  # nothing to forbid
        required_after=r"Custom audio mode: limiting render frames to",
    ),
)


class PatchError(Exception):
    pass


def patched_text(patch: Patch, text: str) -> str:
    for replacement in patch.replacements:
        found = len(re.findall(replacement.pattern, text, flags=re.MULTILINE))
        if found != replacement.count:
            raise PatchError(
                f"{patch.path}: expected {replacement.count} match(es) of the anchor "
                f"[{replacement.describes}], found {found}. The upstream code differs from the pinned "
                "revision: check GAUSSIANTALKER_COMMIT or update docker/engines/gaussiantalker/patches."
            )
        text = re.sub(replacement.pattern, replacement.replacement, text, flags=re.MULTILINE)
    if re.search(patch.forbidden_after, text, flags=re.MULTILINE):
        raise PatchError(f"{patch.path}: after patching, the file still matches {patch.forbidden_after!r}")
    if not re.search(patch.required_after, text, flags=re.MULTILINE):
        raise PatchError(f"{patch.path}: after patching, {patch.required_after!r} is absent")
    return text


def apply(root: Path) -> list[str]:
    """Patch every file in memory first, then write them all: a failure leaves the checkout untouched."""
    results = []
    for patch in PATCHES:
        path = root / patch.path
        if not path.is_file():
            raise PatchError(f"{patch.path}: not found under {root}")
        original = path.read_text(encoding="utf-8")
        if MARKER in original or "limiting render frames to" in original:
            raise PatchError(f"{patch.path}: already patched (or upstream changed): refusing to patch twice")
        results.append((path, patched_text(patch, original)))
    for path, text in results:
        path.write_text(text, encoding="utf-8")
    return [patch.name for patch in PATCHES]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: apply_patches.py GAUSSIANTALKER_CHECKOUT", file=sys.stderr)
        return 2
    try:
        names = apply(Path(argv[0]))
    except PatchError as error:
        print(f"patch failed: {error}", file=sys.stderr)
        return 1
    for name in names:
        print(f"patched: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
