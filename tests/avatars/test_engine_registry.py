"""One engine, one home: each engine is a plug-in package listed in avatars/engines/registry.py, and the
rest of the platform asks the plug-in instead of comparing an avatar's engine to a name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from avatars.engines.base import ENGINES_DIR, Engine, Weight
from avatars.engines.registry import DEFAULT_ENGINE, ENGINES, engine_choices, engine_for
from avatars.models import Avatar

ROOT = Path(__file__).resolve().parent.parent.parent
SKIPPED = {".venv", ".git", "node_modules", "var", "tests", "migrations", "__pycache__", ".ruff_cache"}

# What "comparing an avatar's engine to a name" looks like, in Python and in templates.
NAMES = "|".join(re.escape(name) for name in ENGINES)
ENGINE_COMPARISONS = [
    re.compile(r"\bEngine\.(?:" + "|".join(name.upper() for name in ENGINES) + r")\b"),  # Avatar.Engine.X
    re.compile(r"(?<![\w.])engine\s*(?:==|!=)"),  # a variable named engine compared to something
    re.compile(r"\bavatar\.engine\s*(?:==|!=|(?:not\s+)?in\b)"),  # avatar.engine == / in …
    re.compile(r"(?:==|!=)\s*[\"'](?:" + NAMES + r")[\"']"),  # … == "synctalk"
    re.compile(r"[\"'](?:" + NAMES + r")[\"']\s*(?:==|!=)"),  # "synctalk" == …
    re.compile(r"\bin\s*[(\[{]\s*[\"'](?:" + NAMES + r")[\"']"),  # … in ("demo", …)
]


def comparisons_in(text: str) -> list[str]:
    return [
        line.strip() for line in text.splitlines() if any(rule.search(line) for rule in ENGINE_COMPARISONS)
    ]


def platform_sources():
    """Every Python file and template of the platform outside the engine plug-ins and their registry."""
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if path.suffix not in (".py", ".html") or SKIPPED & set(relative.parts):
            continue
        if relative.parts[:2] == ("avatars", "engines"):
            continue
        yield relative, path.read_text(errors="replace")


def test_the_rules_catch_what_they_are_meant_to():
    caught = [
        "if avatar.engine == Avatar.Engine.SYNCTALK:",
        "needs_blinks = avatar.engine != Avatar.Engine.SYNCTALK",
        'if engine == "synctalk":',
        '{% if avatar.engine == "demo" %}',
        '{% elif video.avatar.engine == "gaussiantalker" %}',
        'stage = "epoch" if avatar.engine in ("synctalk",) else "fine"',
        'CONTAINER_ROOT = {Avatar.Engine.GAUSSIANTALKER: "/GaussianTalker"}',
        'if "demo" == job.avatar.engine:',
    ]
    for line in caught:
        assert comparisons_in(line), line
    passed = [
        "if speech.engine == tts.ENGINE_XTTS and reference is not None:",  # a TTS voice engine
        "engine = avatar.engine_plugin",
        'avatar_create(owner=alice, name="Anna", engine="demo", video=video, consent=True)',
        "{% if avatar.engine_plugin.stand_in %}",
    ]
    for line in passed:
        assert not comparisons_in(line), line


def test_nothing_outside_the_engine_plug_ins_compares_an_avatar_s_engine_to_a_name():
    found = {str(relative): lines for relative, text in platform_sources() if (lines := comparisons_in(text))}
    assert found == {}, (
        "Ask the avatar's engine plug-in (avatar.engine_plugin / engine_for(name)) instead of comparing its "
        f"engine to a name: {found}"
    )


def test_the_registry_lists_each_engine_under_its_name():
    assert list(ENGINES) == ["gaussiantalker", "synctalk", "demo"]
    assert DEFAULT_ENGINE == "gaussiantalker"
    for name, engine in ENGINES.items():
        assert isinstance(engine, Engine) and engine.name == name and engine_for(name) is engine
    assert engine_choices() == [(name, engine.label) for name, engine in ENGINES.items()]
    assert Avatar.Engine.DEMO == "demo" and Avatar.Engine.choices == engine_choices()
    assert Avatar._meta.get_field("engine").default == DEFAULT_ENGINE
    with pytest.raises(KeyError, match="Unknown engine 'wav2lip'"):
        engine_for("wav2lip")


def test_each_engine_package_is_one_folder():
    for name, engine in ENGINES.items():
        package = ENGINES_DIR / name
        assert (package / "__init__.py").is_file() and type(engine).__module__.startswith(
            f"avatars.engines.{name}."
        ), name


@pytest.mark.parametrize("name", list(ENGINES))
def test_each_engine_gives_its_runtime_facts_as_data(name):
    engine = engine_for(name)
    assert isinstance(engine.needs_gpu, bool)
    assert isinstance(engine.train_gpu_mb, int) and isinstance(engine.render_gpu_mb, int)
    assert all(isinstance(extension, str) and extension for extension in engine.extensions)
    assert all(isinstance(weight, Weight) for weight in engine.weights)
    for script in engine.node_scripts:
        assert (ENGINES_DIR / script).is_file() and "node" in Path(script).parts, script
    assert engine.stage_names() and len(set(engine.stage_names())) == len(engine.stage_names())
    if engine.needs_gpu:
        assert engine.train_gpu_mb >= engine.render_gpu_mb > 0
        assert engine.repo_root and engine.repo_root.startswith("/") and engine.default_image
        assert engine.extensions and engine.weights
        for weight in engine.weights:
            # Each weight names the upstream file:line that loads it.
            assert re.fullmatch(r"[\w./-]+\.\w+:\d+", weight.source), weight
            assert not weight.path.startswith("/") and ".." not in weight.path.split("/"), weight
    else:
        assert engine.gpu_mb("train") == engine.gpu_mb("generate_video") == 0


def test_gpu_need_by_job_kind():
    gaussiantalker = engine_for("gaussiantalker")
    assert (gaussiantalker.train_gpu_mb, gaussiantalker.render_gpu_mb) == (24000, 10000)
    assert gaussiantalker.gpu_mb("preprocess") == gaussiantalker.gpu_mb("train") == 24000
    assert gaussiantalker.gpu_mb("render_validation") == gaussiantalker.gpu_mb("chat_reply") == 10000
    assert gaussiantalker.gpu_mb("evaluate") == 0  # our numpy/OpenCV script
    assert engine_for("demo").needs_gpu is False


def test_compiled_extensions_are_the_names_upstream_imports():
    assert engine_for("gaussiantalker").extensions == (
        "diff_gaussian_rasterization",
        "simple_knn._C",
        "pytorch3d._C",
    )
    # SyncTalk's setup.py files build _raymarching_face, _gridencoder, _shencoder, _freqencoder.
    assert set(engine_for("synctalk").extensions) >= {
        "_raymarching_face", "_gridencoder", "_shencoder", "_freqencoder"
    }  # fmt: skip


def test_weights_cover_what_upstream_loads():
    def paths(name):
        return {weight.path for weight in engine_for(name).weights}

    assert {
        "data_utils/face_parsing/79999_iter.pth",
        "data_utils/face_tracking/3DMM/3DMM_info.npy",
        ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb",
    } <= paths("gaussiantalker")
    assert {
        "data_utils/face_parsing/79999_iter.pth",
        "data_utils/face_tracking/3DMM/3DMM_info.npy",
        "nerf_triplane/checkpoints/audio_visual_encoder.pth",
        "data_utils/UNFaceFlow/pretrain_model/raft-small.pth",
        "data_utils/UNFaceFlow/sgd_NNRT_model_epoch19008_50000.pth",
        "data_utils/blendshape_capture/face_landmarker.task",
    } <= paths("synctalk")
    homes = {weight.path for name in ENGINES for weight in engine_for(name).weights if weight.root == "home"}
    assert ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb" in homes
    with pytest.raises(ValueError):
        Weight("x.pth", "etc", "x.py:1")


UPSTREAM = {
    "gaussiantalker": Path("/work/.mirror/KU-CVLAB+GaussianTalker/repo"),
    "synctalk": Path("/work/.mirror/ZiqiaoPeng+SyncTalk/repo"),
}


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_each_weight_source_line_names_the_file_upstream_loads(name):
    """Against the upstream mirror where this machine has it: the cited line mentions the file."""
    import subprocess

    mirror = UPSTREAM[name]
    if not mirror.is_dir():
        pytest.skip("no upstream mirror on this machine")
    for weight in engine_for(name).weights:
        file, line = weight.source.rsplit(":", 1)
        shown = subprocess.run(
            ["git", "-C", str(mirror), "show", f"HEAD:{file}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        cited = shown[int(line) - 1]
        assert Path(weight.path).name in cited, (weight, cited)


def test_a_plug_in_that_leaves_out_a_step_cannot_be_made():
    # The steps every engine must have are abstract; the hooks with a default are not.
    assert Engine.__abstractmethods__ == {
        "recipe", "preprocess", "train", "list_checkpoints", "validation_render", "validation_video",
        "speech_steps",
    }  # fmt: skip

    synctalk = type(engine_for("synctalk"))
    # A plug-in whose speech_steps is the base's abstract one, as if it had not written its own.
    half = type("Half", (synctalk,), {"speech_steps": Engine.speech_steps})
    with pytest.raises(TypeError, match="speech_steps"):
        half()
    assert isinstance(synctalk(), Engine)  # every step is there


def test_code_shipped_to_nodes_lives_in_node_folders_and_says_so_first():
    shipped = sorted(ENGINES_DIR.glob("**/node/*.py"))
    assert shipped, "no node scripts found"
    for path in shipped:
        # They run in the engines' own Python environments, which can be older than the platform's:
        # nothing newer than Python 3.8's syntax (no parenthesised with-groups, no match statements).
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        docstring = ast.get_docstring(tree) or ""
        first = docstring.splitlines()[0] if docstring else ""
        assert re.match(r"(Scripts )?[Ss]hipped to and run (on|ON) the (GPU )?nodes?\b", first), (
            f"{path.relative_to(ROOT)}: its first docstring line must say it is shipped to the nodes"
        )
    for engine in ENGINES.values():
        for script in engine.node_scripts:
            assert "node" in Path(script).parts[:-1], (
                f"{engine.name} ships {script} from outside a node/ folder"
            )
            assert (ENGINES_DIR / script).is_file()
