"""Upstream engine code at the pinned commits, for tests that hold our images to it.

The tests read upstream from a local mirror (a bare git directory per repository under
``$TALKFORGE_UPSTREAM_MIRROR``, default ``/work/.mirror``) when there is one: whole files, through
``git show <commit>:<path>``. Where the mirror is missing they fall back to the excerpts in
``tests/fixtures/upstream/``: the exact lines the tests need, each file headed with its repository, commit,
path and line ranges. This module writes them:

    python tests/upstream.py            # from the mirror; never edit the excerpts by hand
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
MIRROR = Path(os.environ.get("TALKFORGE_UPSTREAM_MIRROR", "/work/.mirror"))
RANGE_MARK = "# @@ lines "


@dataclass(frozen=True)
class Repository:
    name: str  # owner/name on GitHub
    commit: str  # the pinned commit, in full
    mirror: str  # the bare git directory under MIRROR


REPOSITORIES = {
    "gaussiantalker": Repository(
        "KU-CVLAB/GaussianTalker", "8ec613b012572e40246e57cb8477e9620c9b7791", "KU-CVLAB+GaussianTalker/repo"
    ),
    "synctalk": Repository(
        "ZiqiaoPeng/SyncTalk", "d2427a3d7301234ca417ef7660aaf5a24e5d89b0", "ZiqiaoPeng+SyncTalk/repo"
    ),
}

# engine → path → the (first, last) line ranges the tests read.
EXCERPTS: dict[str, dict[str, tuple[tuple[int, int], ...]]] = {
    "gaussiantalker": {
        # the resampy call with np.float (:144) and the 16 kHz branch that already reads np.float32 (:148)
        "data_utils/deepspeech_features/deepspeech_features.py": ((141, 153),),
        # the custom-audio branch the frame clamp goes into, the loop it shortens, and the other
        # `if custom_aud:` (which must not match the anchor)
        "scene/talking_dataset_readers.py": ((223, 223), (237, 243), (374, 383)),
        # where each pretrained file is read
        "data_utils/face_parsing/test.py": ((96, 96),),
        "data_utils/face_parsing/resnet.py": ((11, 11), (83, 83)),
        "data_utils/face_tracking/convert_BFM.py": ((4, 4),),
        "data_utils/deepspeech_features/extract_ds_features.py": ((98, 98),),
        "data_utils/deepspeech_features/deepspeech_store.py": ((32, 33),),
        "utils/loss_utils.py": ((74, 77),),
        "data_utils/process.py": ((80, 82),),
        # run whole by tests/fixtures/make_engine_fixtures.py for render.py's printed Namespace
        "arguments/__init__.py": ((1, 185),),
        "arguments/64_dim_1_transformer.py": ((1, 46),),
        "utils/params_utils.py": ((1, 9),),
    },
    "synctalk": {
        "data_utils/deepspeech_features/deepspeech_features.py": ((141, 153),),
        "data_utils/deepspeech_features/extract_ds_features.py": ((98, 98),),
        "data_utils/deepspeech_features/deepspeech_store.py": ((32, 33),),
        # the CUDA extensions' compiler flags (C++14, which PyTorch 2's headers refuse)
        "freqencoder/setup.py": ((7, 16),),
        "shencoder/setup.py": ((7, 15),),
        "gridencoder/setup.py": ((7, 15),),
        "raymarching/setup.py": ((7, 16),),
        # where each pretrained file is read
        "data_utils/process.py": ((27, 30), (46, 46), (55, 57), (282, 282), (358, 358)),
        "data_utils/face_parsing/test.py": ((146, 146),),
        "data_utils/face_parsing/resnet.py": ((11, 11),),
        "data_utils/face_tracking/convert_BFM.py": ((4, 5), (25, 27)),
        "data_utils/face_tracking/facemodel.py": ((14, 15),),
        "data_utils/face_tracking/render_3dmm.py": ((97, 98),),
        "data_utils/UNFaceFlow/test_flow.py": ((43, 50),),
        "data_utils/blendshape_capture/main.py": ((27, 27),),
        "nerf_triplane/provider.py": ((174, 174), (197, 197)),
        # main.py's parser and what follows it (the live backend parses its options with it)
        "main.py": ((15, 131),),
        "nerf_triplane/utils.py": ((489, 489), (539, 541), (695, 698)),
        # the install steps the image follows, and the pretrained files it asks for
        "README.md": ((51, 51), (59, 69), (83, 83), (89, 92), (98, 101)),
        "requirements.txt": ((1, 31),),
    },
}


def mirror_dir(engine: str) -> Path | None:
    """The mirror's git directory for ``engine`` if it holds the pinned commit, else None."""
    repository = REPOSITORIES[engine]
    folder = MIRROR / repository.mirror
    if not folder.is_dir():
        return None
    found = subprocess.run(
        ["git", "-C", str(folder), "cat-file", "-e", f"{repository.commit}^{{commit}}"], capture_output=True
    )
    return folder if found.returncode == 0 else None


def mirror_file(engine: str, path: str) -> str | None:
    """The whole upstream file at the pinned commit, from the mirror; None without a mirror."""
    folder = mirror_dir(engine)
    if folder is None:
        return None
    shown = subprocess.run(
        ["git", "-C", str(folder), "show", f"{REPOSITORIES[engine].commit}:{path}"],
        capture_output=True,
        check=True,
    )
    return shown.stdout.decode("utf-8")


def fixture_path(engine: str, path: str) -> Path:
    return FIXTURES / engine / (path.replace("/", "__") + ".txt")


def excerpt_text(engine: str, path: str, text: str) -> str:
    """The fixture file for ``path``: a header naming where the lines come from, then each range."""
    repository = REPOSITORIES[engine]
    lines = text.splitlines(keepends=True)
    out = [
        f"# {repository.name} @ {repository.commit}\n",
        f"# {path}, lines as listed below; written by tests/upstream.py from `git show <commit>:<path>`.\n",
        "# Never edit by hand: run `python tests/upstream.py` again.\n",
    ]
    for first, last in EXCERPTS[engine][path]:
        out.append(f"{RANGE_MARK}{first}-{last}\n")
        for line in lines[first - 1 : last]:
            assert not line.startswith(RANGE_MARK), f"{path}: a line looks like a range mark"
            out.append(line if line.endswith("\n") else line + "\n")  # the last line may have no end
    return "".join(out)


def _fixture_lines(engine: str, path: str) -> dict[int, str]:
    """Line number → line with its own line end (a file with Windows line ends keeps them)."""
    raw = fixture_path(engine, path).read_bytes().decode("utf-8")
    lines: dict[int, str] = {}
    number = None
    for line in raw.splitlines(keepends=True):
        if line.startswith(RANGE_MARK):
            number = int(line[len(RANGE_MARK) :].split("-")[0])
        elif number is not None:
            lines[number] = line
            number += 1
    return lines


def upstream_lines(engine: str, path: str) -> dict[int, str]:
    """Line number → line (without its line end) of the upstream file: every line from the mirror, or the
    excerpted ones from the fixture."""
    text = mirror_file(engine, path)
    if text is not None:
        return dict(enumerate(text.splitlines(), start=1))
    return {number: line.rstrip("\r\n") for number, line in _fixture_lines(engine, path).items()}


def upstream_text(engine: str, path: str) -> str:
    """The whole file from the mirror; else the excerpted lines at their own line numbers, the lines in
    between left empty (enough for an anchor inside the excerpts, for showing that another excerpt does
    not match it, and for reading a patched line by its upstream number). Line ends are kept."""
    text = mirror_file(engine, path)
    if text is not None:
        return text
    lines = _fixture_lines(engine, path)
    end = "\r\n" if next(iter(lines.values())).endswith("\r\n") else "\n"
    return "".join(lines.get(number, end) for number in range(1, max(lines) + 1))


def main() -> int:
    for engine, paths in EXCERPTS.items():
        if mirror_dir(engine) is None:
            print(f"no mirror of {REPOSITORIES[engine].name} at {MIRROR}", file=sys.stderr)
            return 1
        for path in paths:
            target = fixture_path(engine, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(excerpt_text(engine, path, mirror_file(engine, path)).encode("utf-8"))
            print(f"wrote {target.relative_to(FIXTURES.parent.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
