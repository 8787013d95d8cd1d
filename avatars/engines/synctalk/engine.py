"""The SyncTalk plug-in: what the platform runs for it and how it reads the results.

Upstream: ZiqiaoPeng/SyncTalk @ d2427a3. Its commands are in ``commands.py``, its console parsers in
``parsers.py``; the node-side scripts it uses are the shared ones in ``avatars/engines/node/``.

The training recipe is upstream's (README.md:161–162, scripts/train_may.sh): the head, then the lips
fine-tuned (``--finetune_lips --patch_size 64``) in the same workspace up to a higher cumulative
``--iters``. Both stages are two steps of **one** train job (``sh -c 'head && lips'``), not two jobs:
stage 2 must run on the same node, in the same workspace, right after stage 1 — as one job it keeps its
GPU slot between them (a second job could wait behind other work, or land after the node was drained),
and the person sees one training with one progress bar and one loss curve. A failed or canceled training
is retried in the same run folder, where main.py resumes from the run's latest checkpoint
(``--ckpt latest``, main.py:30; nerf_triplane/utils.py:1515–1522), so nothing trained is lost; stage 1
then only evaluates and tests again before stage 2 resumes.

Renders pass ``--portrait`` (main.py:91): the face pasted back into the original frames, the README's
headline figures (README.md:133–134: PSNR 37.644 with it, 32.201 without). The validation render is a
separate ``main.py --test --portrait`` run on the chosen checkpoint, whose video the evaluation scores.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from gpu_nodes.connections import NodeConnection

from ..base import Checkpoints, Engine, SpeechSteps, Step, TrainingPhase, Weight, scripts_on_node
from ..console import ChainParser, ChainStep, step_marker
from ..shell import run_name, shell_and
from . import commands, parsers

CHECKPOINT_FILE = re.compile(r"^ngp_ep(\d+)\.pth$")  # nerf_triplane/utils.py:1517, ngp_ep<EEEE>.pth


class SyncTalk(Engine):
    name = "synctalk"
    label = "SyncTalk"
    training_note = (
        "Each training is a run of its own: the head, then the lips fine-tuned in the same run (upstream's "
        "two stages); a retried training resumes from that run's latest checkpoint."
    )

    repo_root = "/SyncTalk"  # README.md:53–54 (git clone …, cd SyncTalk)
    default_image = "synctalk:latest"  # docker/engines/synctalk/, as gaussiantalker:latest
    needs_gpu = True
    # Upstream names no GPU ("Tested on Ubuntu 18.04, Pytorch 1.12.1 and CUDA 11.3", README.md:51); flow
    # extraction (preprocessing task 8) ran out of memory on a 24 GB card (SyncTalk#152). So GaussianTalker's
    # 24 GB for training (UNVERIFIED), and 10 GB for an inference-only render.
    train_gpu_mb = 24000
    render_gpu_mb = 10000
    # A live session keeps the model and the audio encoder resident between sentences: the render's
    # figure (a sentence's activations are freed after each one, the weights stay); LIVE_SESSION_GPU_MB
    # overrides it per engine once measured on the operator's GPUs.
    session_gpu_mb = 10000
    live_backend = "synctalk/node/live_backend.py"
    # The compiled backends each setup.py builds (ext_modules name=…), imported by the Python wrappers
    # with a JIT-build fallback that would hide a missing install: import these names directly.
    extensions = (
        "_raymarching_face",  # raymarching/setup.py:49, imported at raymarching/raymarching.py:10
        "_gridencoder",  # gridencoder/setup.py:36, gridencoder/grid.py:10
        "_shencoder",  # shencoder/setup.py:36, shencoder/sphere_harmonics.py:10
        "_freqencoder",  # freqencoder/setup.py:37, freqencoder/freq.py:10
        "pytorch3d._C",  # data_utils/face_tracking/render_3dmm.py:5 (README: the pytorch3d wheel)
    )
    weights = (
        Weight("data_utils/face_parsing/79999_iter.pth", "repo", "data_utils/face_parsing/test.py:146"),
        # Made by convert_BFM.py:27 from the licensed 01_MorphableModel.mat (README.md:100).
        Weight(
            "data_utils/face_tracking/3DMM/3DMM_info.npy", "repo", "data_utils/face_tracking/facemodel.py:15"
        ),
        Weight(
            "data_utils/face_tracking/3DMM/topology_info.npy",
            "repo",
            "data_utils/face_tracking/render_3dmm.py:98",
        ),
        Weight(
            "data_utils/face_tracking/3DMM/lands_info.txt",
            "repo",
            "data_utils/face_tracking/face_tracker.py:42",
        ),
        Weight(
            "data_utils/UNFaceFlow/pretrain_model/raft-small.pth",
            "repo",
            "data_utils/UNFaceFlow/test_flow.py:44",
        ),
        Weight(
            "data_utils/UNFaceFlow/sgd_NNRT_model_epoch19008_50000.pth",
            "repo",
            "data_utils/UNFaceFlow/test_flow.py:47",
        ),
        Weight(
            "data_utils/blendshape_capture/face_landmarker.task",
            "repo",
            "data_utils/blendshape_capture/main.py:27",
        ),
        Weight("nerf_triplane/checkpoints/audio_visual_encoder.pth", "repo", "nerf_triplane/provider.py:174"),
        # torch hub's cache (face parsing's backbone): named at resnet.py:11, loaded at :83.
        Weight(
            ".cache/torch/hub/checkpoints/resnet18-5c106cde.pth",
            "home",
            "data_utils/face_parsing/resnet.py:11",
        ),
    )
    # Not listed: the DeepSpeech graph (data_utils/deepspeech_features/extract_ds_features.py:98), read only
    # with --asr deepspeech; the platform runs SyncTalk with AVE (--asr ave, --asr_model ave).

    preprocess_tasks = parsers.SYNCTALK_TASKS
    model_folder = "model"  # README.md:161, --workspace model/<ws>
    renderable_stage = "epoch"  # checkpoints/ngp_ep<EEEE>.pth, one per epoch
    plays_own_poses = True  # --test_train poses mirror by themselves (nerf_triplane/provider.py:515, :538)
    node_scripts = (
        "node/pose_view.py", "node/evaluate.py", "synctalk/node/live_backend.py", "node/live_session.py",
        "node/live_relay.py",
    )  # fmt: skip

    def live_config(self, *, checkpoint, dataset: PurePosixPath, model: PurePosixPath) -> dict:
        """main.py's arguments for its test mode on the training poses with AVE and ``--portrait``, as the
        speech render runs it, the checkpoint file given with ``--ckpt`` (main.py:30; a path is loaded at
        nerf_triplane/utils.py:745–748) in its own workspace (``<ws>/checkpoints/<file>``)."""
        if problem := self.render_refusal(checkpoint):
            raise ValueError(problem)
        return {
            "argv": [
                str(dataset), "--workspace", str(model.parent.parent), "-O", "--test", "--test_train",
                "--asr_model", "ave", "--portrait", "--ckpt", str(model),
            ]
        }  # fmt: skip

    def env(self) -> dict[str, str]:
        """``rich`` wraps lines at the console width (80 without a terminal) and would split long lines
        (paths) in two; ``COLUMNS`` widens it (rich reads it; UNVERIFIED for SyncTalk's pin)."""
        return {**super().env(), "COLUMNS": "1000"}

    def recipe(self, params: dict) -> dict:
        return {**commands.recipe(params.get("iterations")), "portrait renders": "yes"}

    def training_phases(self, params: dict) -> list[TrainingPhase]:
        """Head up to ``head_iters``, then lips up to ``lips_iters`` (--iters is cumulative: main.py)."""
        recipe = commands.recipe(params.get("iterations"))
        return [
            TrainingPhase("head", recipe["head_iters"], "Head: the whole face and head are trained."),
            TrainingPhase(
                "lips", recipe["lips_iters"] - recipe["head_iters"],
                "Lips: training goes on with LPIPS and landmark losses on the mouth (--finetune_lips, "
                "main.py:73).",
            ),
        ]  # fmt: skip

    # --- preprocessing ----------------------------------------------------------------------------------

    def preprocess(self, job, *, data: PurePosixPath, estimate_blinks: bool) -> Step:
        """process.py's ten tasks. No blink estimate: SyncTalk reads its blendshapes (bs.npy, task 9)."""
        argv = commands.preprocess(name=data.name, data_root=str(data.parent))
        return Step(argv=argv, cwd=self.cwd(job), env=self.env(), parser=parsers.PreprocessParser())

    # --- training ---------------------------------------------------------------------------------------

    def train(self, job, *, data: PurePosixPath, run: int) -> Step:
        """Stage 1 (head) and stage 2 (lips) in one chain, in the run's workspace."""
        settings = commands.recipe(job.params.get("iterations"))
        workspace = self.run_dir(data.name, job.node.workdir, run)
        common = {"name": data.name, "workspace": run_name(run), "data_root": str(data.parent),
                  "model_root": str(workspace.parent)}  # fmt: skip
        head = commands.train(**common, iters=settings["head_iters"])
        lips = commands.train(**common, iters=settings["lips_iters"], finetune_lips=True)
        share = settings["head_iters"] / settings["lips_iters"]
        parser = ChainParser([
            ChainStep("head", parsers.TrainParser(iters=settings["head_iters"]), 0.0, share),
            # --iters is cumulative and the epochs go on: its own progress already counts from stage 1's end.
            ChainStep("lips", parsers.TrainParser(iters=settings["lips_iters"], expect_checkpoint=True)),
        ])  # fmt: skip
        return Step(
            argv=shell_and(step_marker(1, 2, "head"), head, step_marker(2, 2, "lips"), lips),
            cwd=self.cwd(job), env=self.env(), parser=parser,
            outputs={"model_path": str(workspace)},
            verify=lambda conn: self.trained_something(conn, workspace),
            finish=lambda conn: self.list_checkpoints(conn, workspace),
        )  # fmt: skip

    def list_checkpoints(self, conn: NodeConnection, model: PurePosixPath) -> dict:
        """checkpoints/ngp_ep<EEEE>.pth, one per epoch (nerf_triplane/utils.py:1452–1479; the newest 50)."""
        folder = shlex.quote(str(model / "checkpoints"))
        listing = conn.run(["sh", "-c", f"du -sb {folder}/ngp_ep*.pth"], timeout=120)
        checkpoints: Checkpoints = []
        for line in listing.output.splitlines():
            size, _, path = line.partition("\t")
            match = CHECKPOINT_FILE.match(PurePosixPath(path).name)
            if match and size.isdigit():
                checkpoints.append(("epoch", int(match.group(1)), path, int(size)))
        return {"checkpoints": checkpoints}

    # --- rendering --------------------------------------------------------------------------------------

    def validation_render(self, job, *, data: PurePosixPath, run: int | None, iteration: int) -> Step:
        """``main.py --test --portrait --ckpt <ws>/checkpoints/ngp_ep<E>.pth``: the val split rendered with
        that epoch's checkpoint, face pasted back, and scored by SyncTalk itself (PSNR, LPIPS, LMD in the
        job's figures); the video comes back for the page and the evaluation."""
        workspace = self.run_dir(data.name, job.node.workdir, run)
        checkpoint = workspace / "checkpoints" / parsers.checkpoint_name(iteration)
        argv = commands.test(
            name=data.name, workspace=workspace.name, portrait=True, ckpt=str(checkpoint),
            data_root=str(data.parent), model_root=str(workspace.parent),
        )  # fmt: skip
        video = self.validation_video(model=workspace, iteration=iteration)
        return Step(
            argv=argv, cwd=self.cwd(job), env=self.env(),
            parser=parsers.TestParser(evaluate=True),
            outputs={"video": video},
            verify=lambda conn: None if conn.exists(video) else f"main.py left no video at {video}.",
            collect=((video, "validation.mp4"),),
        )  # fmt: skip

    def validation_video(self, *, model: PurePosixPath, iteration: int) -> str:
        return parsers.result_video_path(str(model), iteration, with_audio=False)

    def speech_steps(
        self, job, *, checkpoint, dataset: PurePosixPath, folder: PurePosixPath, wav: PurePosixPath,
        frames: int, batch: int, pose_start: int,
    ) -> SpeechSteps:  # fmt: skip
        """A per-job workspace whose ``checkpoints/`` holds only the chosen checkpoint (main.py loads the
        latest there), then ``main.py --test --test_train --portrait --aud x.wav`` (README.md:140)."""
        if problem := self.render_refusal(checkpoint):
            raise ValueError(problem)
        slug = dataset.name
        python, (views,), scripts = scripts_on_node(job, "node/pose_view.py")
        checkpoint_file = PurePosixPath(checkpoint.path)
        workspace = folder / "model" / slug
        linked = workspace / "checkpoints" / checkpoint_file.name
        render = commands.custom_audio(
            name=slug, workspace=slug, wav=str(wav), portrait=True, data_root=str(dataset.parent),
            model_root=str(workspace.parent),
        )  # fmt: skip
        return SpeechSteps(
            chain=[("workspace", [python, "-u", views, "--link", str(checkpoint_file), str(linked)]),
                   ("render", render)],
            shares={"workspace": 0.02, "render": 0.88, "encode": 0.10},
            cwd=self.cwd(job), env=self.env(), scripts=scripts,
            parser=parsers.TestParser(evaluate=False),
            engine_video=parsers.result_video_path(str(workspace), checkpoint.iteration, with_audio=True),
        )  # fmt: skip
