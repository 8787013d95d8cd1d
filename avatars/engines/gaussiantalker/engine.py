"""The GaussianTalker plug-in: what the platform runs for it and how it reads the results.

Upstream: KU-CVLAB/GaussianTalker (now cvlab-kaist) @ 8ec613b. Its commands are in ``commands.py``, its
console parsers in ``parsers.py``; the node-side scripts it uses are the shared ones in
``avatars/engines/node/`` (blink estimate, pose view, evaluation).
"""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path, PurePosixPath

from gpu_nodes.connections import NodeConnection, NodeError
from gpu_nodes.models import Node
from gpu_nodes.node_engines import node_engine_image

from ..base import Checkpoints, Engine, SpeechSteps, Step, TrainingPhase, Weight, scripts_on_node
from ..shell import shell_and
from . import commands, parsers

# scene/__init__.py:88 and :91: point_cloud/coarse_iteration_N and point_cloud/iteration_N.
CHECKPOINT_DIR = re.compile(r"^(coarse_iteration|iteration)_(-?\d+)$")


class GaussianTalker(Engine):
    name = "gaussiantalker"
    label = "GaussianTalker"
    training_note = (
        "Each training is a run of its own, in its own folder: a coarse stage, then the fine stage, from "
        "scratch (GaussianTalker's resume is unreliable). Iterations: a multiple of 500, its save interval."
    )

    repo_root = "/GaussianTalker"  # README.md:27–28 (git clone …, cd GaussianTalker)
    default_image = "gaussiantalker:latest"  # docker/engines/gaussiantalker/Dockerfile:3
    needs_gpu = True
    # README.md:23: "tested with NVIDIA RTX 3090 and A6000" (24 and 48 GB): a 24 GB card for training.
    # Rendering loads only the trained Gaussians and the deformation network: 10 GB (no upstream figure).
    train_gpu_mb = 24000
    render_gpu_mb = 10000
    # A live session keeps the model and the audio encoder resident between sentences: the render's
    # figure (a sentence's activations are freed after each one, the weights stay); LIVE_SESSION_GPU_MB
    # overrides it per engine once measured on the operator's GPUs.
    session_gpu_mb = 10000
    live_backend = "gaussiantalker/node/live_backend.py"
    extensions = (
        "diff_gaussian_rasterization",  # gaussian_renderer/__init__.py:14 (submodules/custom-bg-depth-…)
        "simple_knn._C",  # scene/gaussian_model.py:22 (submodules/simple-knn)
        "pytorch3d._C",  # data_utils/face_tracking/render_3dmm.py:5–24 import pytorch3d, built from source
    )
    weights = (
        Weight("data_utils/face_parsing/79999_iter.pth", "repo", "data_utils/face_parsing/test.py:96"),
        # Made by convert_BFM.py:27 from the licensed 01_MorphableModel.mat (convert_BFM.py:4).
        Weight(
            "data_utils/face_tracking/3DMM/3DMM_info.npy", "repo", "data_utils/face_tracking/facemodel.py:16"
        ),
        Weight(
            "data_utils/face_tracking/3DMM/keys_info.npy", "repo", "data_utils/face_tracking/facemodel.py:42"
        ),
        Weight(
            "data_utils/face_tracking/3DMM/topology_info.npy",
            "repo",
            "data_utils/face_tracking/render_3dmm.py:98",
        ),
        Weight(
            ".tensorflow/models/deepspeech-0_1_0-b90017e8.pb",
            "home",
            "data_utils/deepspeech_features/extract_ds_features.py:98",
        ),
        # torch hub's cache (face parsing's backbone): named at resnet.py:11, loaded at :83.
        Weight(
            ".cache/torch/hub/checkpoints/resnet18-5c106cde.pth",
            "home",
            "data_utils/face_parsing/resnet.py:11",
        ),
    )

    preprocess_tasks = parsers.GAUSSIANTALKER_TASKS
    model_folder = "output"
    renderable_stage = "fine"  # render.py loads point_cloud/iteration_N only (scene/__init__.py:77)
    node_scripts = (
        "node/blinks.py", "node/pose_view.py", "node/evaluate.py", "gaussiantalker/node/live_backend.py",
        "node/live_session.py", "node/live_relay.py",
    )  # fmt: skip
    LIVE_BATCH = 8  # frames per render_from_batch call in a live session: small, so the first come soon

    def live_config(self, *, checkpoint, dataset: PurePosixPath, model: PurePosixPath) -> dict:
        """render.py's inputs (docs/engines.md): the dataset, the run's model folder (the checkpoint's
        ``point_cloud/iteration_N`` is two levels below it), its iteration, the shipped config."""
        return {
            "source": str(dataset), "model": str(model.parent.parent), "iteration": checkpoint.iteration,
            "batch": self.LIVE_BATCH, "configs": commands.CONFIG,
        }  # fmt: skip

    def render_refusal(self, checkpoint) -> str | None:
        if self.can_render(checkpoint):
            return None
        return (
            f"Checkpoint {checkpoint.stage} {checkpoint.iteration} is from the {checkpoint.stage} stage, "
            "which render.py cannot load (it reads point_cloud/iteration_N, scene/__init__.py:77): choose a "
            "fine-stage checkpoint (or leave the choice empty for the latest)."
        )

    # --- training settings --------------------------------------------------------------------------------

    def recipe(self, params: dict) -> dict:
        return commands.recipe(params.get("iterations"))

    def training_phases(self, params: dict) -> list[TrainingPhase]:
        """train.py runs the coarse stage, then the fine one (train.py:276–284); the parser counts both."""
        recipe = self.recipe(params)
        return [
            TrainingPhase(
                "coarse", recipe["coarse_iterations"],
                "Coarse: the 3D Gaussians of the head are fitted to your frames, its shape and colour.",
            ),
            TrainingPhase(
                "fine", recipe["iterations"],
                "Fine: from the coarse head on, the deformation network learns how the face moves with the "
                "audio (lips, expressions).",
            ),
        ]  # fmt: skip

    # --- preprocessing ----------------------------------------------------------------------------------

    def expected_artifacts(self, *, blinks: bool) -> list[str]:
        # GaussianTalker reads blinks from au.csv (scene/talking_dataset_readers.py:360).
        return [*super().expected_artifacts(blinks=blinks), "au.csv"]

    def preprocess_argv(self, job, *, data: PurePosixPath):
        argv = commands.preprocess(data_root=str(data.parent), name=data.name)
        return argv, self.cwd(job), self.env(), ()

    def preprocess(self, job, *, data: PurePosixPath, estimate_blinks: bool) -> Step:
        """process.py's tasks, then (without an uploaded au.csv) blinks estimated next to the data from the
        landmarks of task 7 (node/blinks.py)."""
        preprocess, cwd, env, scripts = self.preprocess_argv(job, data=data)
        python, (blinks,), more = scripts_on_node(job, "node/blinks.py")
        argv = shell_and(preprocess, [python, "-u", blinks, str(data)]) if estimate_blinks else preprocess
        return Step(argv=argv, cwd=cwd, env=env, parser=parsers.PreprocessParser(), uploads=(*scripts, *more))

    # --- training ---------------------------------------------------------------------------------------

    def train(self, job, *, data: PurePosixPath, run: int) -> Step:
        model = self.run_dir(data.name, job.node.workdir, run)
        settings = commands.recipe(job.params.get("iterations"))
        port = commands.PORT + (job.gpu.index + 1 if job.gpu else 0)  # parallel trainings: their own port
        config, prepare = commands.CONFIG, None
        if job.params.get("iterations"):
            # The config overrides --iterations (utils/params_utils.py:1–7): train with a copy that says the
            # new counts, in the run's own folder.
            config = str(model / "talkforge-config.py")
            prepare = self._derived_config(job, config, settings)
        argv = commands.train(
            data_root=str(data.parent), output_root=str(model.parent.parent), name=data.name, run=run,
            config=config, port=port,
        )  # fmt: skip
        return Step(
            argv=argv, cwd=self.cwd(job), env=self.env(),
            parser=parsers.TrainParser(
                coarse_iterations=settings["coarse_iterations"], iterations=settings["iterations"]
            ),
            outputs={"model_path": str(model)},
            prepare=prepare,
            verify=lambda conn: self.verify_training(conn, model),
            finish=lambda conn: self.list_checkpoints(conn, model),
        )  # fmt: skip

    def verify_training(self, conn: NodeConnection, model: PurePosixPath) -> str | None:
        # render.py cannot load a model without cfg_args (arguments/__init__.py reads it): no model without.
        if not conn.exists(str(model / "cfg_args")):
            return "Training left no cfg_args."
        return self.trained_something(conn, model)

    def _derived_config(self, job, target: str, settings: dict):
        engine_root = self.cwd(job)

        def prepare(conn: NodeConnection) -> None:
            base = f"{engine_root}/{commands.CONFIG}"
            if job.node.runtime == Node.Runtime.DOCKER:
                image = node_engine_image(job.node, self.name)
                read = ["docker", "run", "--rm", "--entrypoint", "cat", image, base]
            else:
                read = ["cat", base]
            result = conn.run(read, timeout=300)
            if result.returncode != 0:
                raise NodeError(
                    f"Could not read GaussianTalker's config {base}: {result.output.strip()[:300]}"
                )
            try:
                text = commands.derived_config_text(
                    result.output, settings["iterations"], coarse_iterations=settings["coarse_iterations"]
                )
            except ValueError as error:
                raise NodeError(str(error)) from None
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / "config.py"
                local.write_text(text)
                conn.put(local, target)

        return prepare

    def list_checkpoints(self, conn: NodeConnection, model: PurePosixPath) -> dict:
        """point_cloud/{coarse_,}iteration_N/ (scene/__init__.py:88, :91), each with its size on disk."""
        listing = conn.run(["sh", "-c", f"du -sb {shlex.quote(str(model / 'point_cloud'))}/*/"], timeout=120)
        checkpoints: Checkpoints = []
        for line in listing.output.splitlines():
            size, _, path = line.partition("\t")
            match = CHECKPOINT_DIR.match(PurePosixPath(path.rstrip("/")).name)
            if match and size.isdigit():
                stage = "coarse" if match.group(1) == "coarse_iteration" else "fine"
                checkpoints.append((stage, int(match.group(2)), path.rstrip("/"), int(size)))
        return {"checkpoints": checkpoints}

    # --- rendering --------------------------------------------------------------------------------------

    def validation_render_argv(self, job, *, data: PurePosixPath, run: int | None, iteration: int):
        root = self.model_root(data.name, job.node.workdir)
        argv = commands.validation_render(
            data_root=str(data.parent), output_root=str(root.parent), name=data.name, run=run,
            iteration=iteration,
        )  # fmt: skip
        return argv, self.cwd(job), self.env(), ()

    def validation_render(self, job, *, data: PurePosixPath, run: int | None, iteration: int) -> Step:
        """render.py's ``test`` set (the val split) with the fine checkpoint ``iteration``, always named:
        ``--iteration -1`` could load a coarse number (commands._render)."""
        model = self.run_dir(data.name, job.node.workdir, run)
        argv, cwd, env, scripts = self.validation_render_argv(job, data=data, run=run, iteration=iteration)
        video = self.validation_video(model=model, iteration=iteration)
        real = parsers.render_gt_path(str(model), "test", iteration)  # shown beside the render

        def verify(conn) -> str | None:
            for path, what in ((video, "validation video"), (real, "ground-truth video")):
                if not conn.exists(path):
                    return f"render.py left no {what} at {path}."
            return None

        return Step(
            argv=argv, cwd=cwd, env=env,
            parser=parsers.RenderParser(sets=("test",)),
            outputs={"video": video},
            uploads=scripts,
            verify=verify,
            collect=((video, "validation.mov"), (real, "validation_gt.mov")),
        )  # fmt: skip

    def validation_video(self, *, model: PurePosixPath, iteration: int) -> str:
        return parsers.render_output_path(str(model), "test", iteration)

    def speech_steps(
        self, job, *, checkpoint, dataset: PurePosixPath, folder: PurePosixPath, wav: PurePosixPath,
        frames: int, batch: int, pose_start: int,
    ) -> SpeechSteps:  # fmt: skip
        """Poses (a per-job dataset view whose val poses play ping-pong to cover the audio, and a per-job
        model folder: render.py writes into ``--model_path``), DeepSpeech features, render.py."""
        if problem := self.render_refusal(checkpoint):
            raise ValueError(problem)
        slug = dataset.name
        model = PurePosixPath(checkpoint.path).parent.parent  # <model>/point_cloud/iteration_N
        data_view, model_view = folder / "data" / slug, folder / "output" / slug
        features = wav.with_suffix(".npy")
        render = commands.render(
            data_root=str(data_view.parent), output_root=str(model_view.parent), name=slug,
            custom_aud=str(features), custom_wav=str(wav), iteration=checkpoint.iteration, batch=batch,
        )  # fmt: skip
        python, views, extract, render, cwd, env, scripts = self._speech_commands(
            job, folder=folder, wav=wav, features=features, render=render
        )
        prepare = [
            python, "-u", views, "--dataset", str(dataset), "--view", str(data_view),
            "--frames", str(frames), "--start", str(pose_start),
            "--link", str(model / "cfg_args"), str(model_view / "cfg_args"),
            "--link", str(model / "point_cloud"), str(model_view / "point_cloud"),
        ]  # fmt: skip
        engine_video = parsers.render_output_path(str(model_view), "custom", checkpoint.iteration)
        return SpeechSteps(
            chain=[("poses", prepare), ("audio features", extract), ("render", render)],
            shares={"poses": 0.02, "audio features": 0.08, "render": 0.80, "encode": 0.10},
            cwd=cwd, env=env, scripts=scripts, parser=parsers.RenderParser(sets=("custom",)),
            engine_video=engine_video,
            # render.py's own videos (the result and its attention views) are intermediate.
            intermediate=(str(PurePosixPath(engine_video).parent.parent),),
        )  # fmt: skip

    def _speech_commands(self, job, *, folder, wav, features, render):
        python, (views,), scripts = scripts_on_node(job, "node/pose_view.py")
        extract = commands.audio_features(wav=str(wav), output=str(features))
        return python, views, extract, render, self.cwd(job), self.env(), scripts
