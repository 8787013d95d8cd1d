"""The demo plug-in: GaussianTalker's contract (its parsers, folder layout and checkpoints), run by our
stand-in scripts in ``node/`` on any machine, without a GPU."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.params import DEMO_SECONDS

from ..base import Step, scripts_on_node
from ..gaussiantalker import parsers
from ..gaussiantalker.engine import GaussianTalker

ITERATIONS = 1000  # the stand-in's default length; any count from TRAIN_ITERATIONS works


class Demo(GaussianTalker):
    name = "demo"
    label = "Demo (CPU stand-in, not a real model)"
    stand_in = True
    training_note = "The demo stand-in writes placeholder checkpoints on the CPU: nothing is learnt."

    repo_root = None
    default_image = None
    needs_gpu = False
    train_gpu_mb = 0
    render_gpu_mb = 0
    session_gpu_mb = 0
    live_backend = "demo/node/live_backend.py"
    extensions = ()
    weights = ()
    node_scripts = (
        "demo/node/process.py", "demo/node/train.py", "demo/node/render.py", "demo/node/features.py",
        "node/blinks.py", "node/pose_view.py", "node/evaluate.py", "demo/node/live_backend.py",
        "node/live_session.py", "node/live_relay.py",
    )  # fmt: skip

    def live_config(self, *, checkpoint, dataset: PurePosixPath, model: PurePosixPath) -> dict:
        from django.conf import settings

        return {"source": str(dataset), "fps": settings.LIVE_DEMO_FPS}

    def env(self) -> dict[str, str]:
        return {}  # our scripts run with ``python -u`` and start no Python children

    def training_params(self, *, iterations: int | None, seconds: float | None = None) -> dict:
        params = {} if iterations is None else {"iterations": iterations}
        return {**params, "seconds": DEMO_SECONDS.clean(seconds)}

    def recipe(self, params: dict) -> dict:
        iterations = params.get("iterations") or ITERATIONS
        return {
            "coarse_iterations": max(10, iterations // 2),
            "iterations": iterations,
            "save_every": max(1, iterations // 4),
            "seconds": params.get("seconds", 20),
        }

    def preprocess_argv(self, job, *, data: PurePosixPath):
        python, (process,), scripts = scripts_on_node(job, "demo/node/process.py")
        return [python, "-u", process, str(data / f"{data.name}.mp4")], str(data), self.env(), scripts

    def train(self, job, *, data: PurePosixPath, run: int) -> Step:
        model = self.run_dir(data.name, job.node.workdir, run)
        settings = self.recipe(job.params)
        port = 6009 + (job.gpu.index + 1 if job.gpu else 0)
        python, (train,), scripts = scripts_on_node(job, "demo/node/train.py")
        argv = [python, "-u", train, "-s", str(data), "--model_path", str(model),
                "--iterations", str(settings["iterations"]),
                "--coarse_iterations", str(settings["coarse_iterations"]),
                "--seconds", str(settings["seconds"]), "--save_every", str(settings["save_every"]),
                "--port", str(port)]  # fmt: skip
        return Step(
            argv=argv, cwd=str(data), env=self.env(),
            parser=parsers.TrainParser(
                coarse_iterations=settings["coarse_iterations"], iterations=settings["iterations"]
            ),
            outputs={"model_path": str(model)},
            uploads=scripts,
            verify=lambda conn: self.verify_training(conn, model),
            finish=lambda conn: self.list_checkpoints(conn, model),
        )  # fmt: skip

    def validation_render_argv(self, job, *, data: PurePosixPath, run: int | None, iteration: int):
        model = self.run_dir(data.name, job.node.workdir, run)
        python, (render,), scripts = scripts_on_node(job, "demo/node/render.py")
        argv = [python, "-u", render, "-s", str(data), "--model_path", str(model),
                "--iteration", str(iteration), "--batch", "128", "--skip_train"]  # fmt: skip
        return argv, str(data), self.env(), scripts

    def _speech_commands(self, job, *, folder, wav, features, render):
        python, (views, extract, render_py), scripts = scripts_on_node(
            job, "node/pose_view.py", "demo/node/features.py", "demo/node/render.py"
        )
        extract_features = [python, "-u", extract, "--input", str(wav), "--output", str(features)]
        render = [python, "-u", render_py, *render[3:]]  # the same arguments as render.py's
        return python, views, extract_features, render, str(folder), self.env(), scripts
