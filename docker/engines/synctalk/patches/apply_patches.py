#!/usr/bin/env python3
"""Apply an engine's fixes (``edits.py`` beside this script) to a checkout of its repository, or fail.

    python3 apply_patches.py CHECKOUT

Each edit replaces a block of whole lines, quoted exactly as upstream has them at the pinned commit (with
the ``file:line`` it was read at), by the fixed block. For every edit of every file:

- the fixed block is there once and the upstream block is not: already applied, nothing to do;
- else the upstream block is there exactly once: it is replaced;
- else the build stops: the script exits 1 naming the file, the upstream line and the anchor, and writes
  nothing at all (every file is patched in memory first). A different upstream revision fails loudly
  instead of being half patched.

So a second run changes nothing and exits 0. This file is the same for every engine image (a test keeps
the copies identical); only ``edits.py`` differs. Standard library only: it runs before anything else is
installed.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edit:
    """Replace the whole lines ``upstream`` (read at ``cites``, e.g. ``path.py:144``) by ``fixed``."""

    cites: str
    upstream: str
    fixed: str


@dataclass(frozen=True)
class Patch:
    name: str
    path: str  # relative to the checkout
    edits: tuple[Edit, ...]


class PatchError(Exception):
    pass


def _lines(block: str) -> str:
    return block if block.endswith("\n") else block + "\n"


def occurrences(text: str, block: str) -> int:
    """How many times ``block`` (whole lines) occurs in ``text`` starting at the beginning of a line."""
    block, count, start = _lines(block), 0, 0
    while (found := text.find(block, start)) != -1:
        if found == 0 or text[found - 1] == "\n":
            count += 1
        start = found + 1
    return count


def _replace_once(text: str, block: str, replacement: str) -> str:
    block, start = _lines(block), 0
    while (found := text.find(block, start)) != -1:
        if found == 0 or text[found - 1] == "\n":
            return text[:found] + _lines(replacement) + text[found + len(block) :]
        start = found + 1
    raise AssertionError("counted once, not found")  # pragma: no cover


def _block(lines: tuple[str, ...]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _anchor(edit: Edit) -> str:
    return " / ".join(line.strip() for line in edit.upstream.strip("\n").splitlines())


def patch_text(patch: Patch, text: str) -> tuple[str, list[str]]:
    """The patched text and, per edit, ``applied`` or ``already applied``; PatchError when an anchor is
    missing or ambiguous."""
    states = []
    for edit in patch.edits:
        fixed_count = occurrences(text, edit.fixed)
        upstream_count = occurrences(text, edit.upstream)
        # The fixed block may contain the upstream one (an insertion after it): count it out.
        upstream_in_fixed = occurrences(_lines(edit.fixed), edit.upstream)
        if fixed_count == 1 and upstream_count == upstream_in_fixed:
            states.append("already applied")
            continue
        if upstream_count != 1:
            raise PatchError(
                f"{patch.path}: the anchor of {edit.cites} [{_anchor(edit)}] occurs {upstream_count} times, "
                "expected exactly once. The checkout differs from the pinned upstream revision: check the "
                "commit the Dockerfile checks out, or update patches/edits.py against it."
            )
        text = _replace_once(text, edit.upstream, edit.fixed)
        states.append("applied")
    return text, states


def load_patches(folder: Path) -> tuple[Patch, ...]:
    """``PATCHES`` of ``edits.py`` in ``folder``: (name, path, ((cites, upstream lines, fixed lines), …)), …
    with each block given as a tuple of lines without their line ends."""
    spec = importlib.util.spec_from_file_location("engine_edits", folder / "edits.py")
    if spec is None or spec.loader is None:
        raise PatchError(f"{folder / 'edits.py'}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(
        Patch(
            name=name,
            path=path,
            edits=tuple(Edit(cites, _block(old), _block(new)) for cites, old, new in edits),
        )
        for name, path, edits in module.PATCHES
    )


def apply(root: Path, patches: tuple[Patch, ...]) -> list[str]:
    """Patch every file in memory first, then write the changed ones: a failure leaves the checkout as it
    was. Returns one report line per patch."""
    results, report = [], []
    for patch in patches:
        path = root / patch.path
        if not path.is_file():
            raise PatchError(f"{patch.path}: not found under {root}")
        original = path.read_bytes().decode("utf-8")
        # Anchors are written with "\n"; a file with Windows line ends (GaussianTalker's
        # deepspeech_features.py has them) is matched with "\n" and written back with "\r\n".
        crlf = original.count("\r\n") == original.count("\n") > 0
        text, states = patch_text(patch, original.replace("\r\n", "\n") if crlf else original)
        if crlf:
            text = text.replace("\n", "\r\n")
        if text != original:
            results.append((path, text))
        state = "already applied" if set(states) == {"already applied"} else "patched"
        report.append(f"{state}: {patch.name} ({patch.path}, {len(patch.edits)} edit(s))")
    for path, text in results:
        path.write_bytes(text.encode("utf-8"))
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: apply_patches.py CHECKOUT", file=sys.stderr)
        return 2
    try:
        report = apply(Path(argv[0]), load_patches(Path(__file__).resolve().parent))
    except PatchError as error:
        print(f"patch failed: {error}", file=sys.stderr)
        return 1
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
